"""Run each notebook top to bottom, as a learner would, and record its wall time (the syllabus table).

    .venv/bin/python scripts/time_notebooks.py --out docs/notebook_times.json            # full mode
    .venv/bin/python scripts/time_notebooks.py --smoke notebooks/00_data_and_text.ipynb  # smoke mode

Each notebook runs from a temporary copy (no outputs reach git) with a fresh scratch directory, so its
time includes every JIT compile a new learner waits for. The pipeline it shows is ``runs/demo`` when
trained, else the shipped one (which one is recorded). Writes the times, the machine and the mode to
``--out`` and prints a Markdown table; exits 1 when a notebook fails or runs past ``--budget`` minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    """CPU model and core count, as the figures in docs/ name their machine."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def time_notebook(path: Path, *, smoke: bool, timeout: int, executed: Path | None = None) -> dict:
    """Execute one notebook in a temporary directory; its wall time in seconds, or the error it stopped with."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copy(path, work / path.name)
        # No MPLBACKEND: the kernel draws its figures inline, as for a learner (Agg would skip them).
        env = {"MUSE_MINI_SCRATCH": str(work / "scratch"), "MUSE_MINI_SMOKE": "1" if smoke else "0"}
        saved = {k: os.environ.get(k) for k in (*env, "MPLBACKEND")}
        os.environ.pop("MPLBACKEND", None)
        os.environ.update(env)
        nb = nbformat.read(work / path.name, as_version=4)
        start = time.perf_counter()
        try:
            NotebookClient(nb, timeout=timeout, kernel_name="python3",
                           resources={"metadata": {"path": str(work)}}).execute()
            error = None
        except Exception as e:  # a failing cell: record which, go on with the next notebook
            error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
        finally:
            if executed is not None:
                executed.mkdir(parents=True, exist_ok=True)
                nbformat.write(nb, executed / path.name)
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        return {"seconds": round(time.perf_counter() - start, 1), "error": error}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run (default: all of notebooks/)")
    parser.add_argument("--smoke", action="store_true", help="smoke mode (MUSE_MINI_SMOKE=1): a few steps each")
    parser.add_argument("--budget", type=float, default=5.0, help="minutes a notebook may take (default 5)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds a cell may run before it fails")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the times")
    parser.add_argument("--executed", type=Path, default=None, help="folder for the executed notebooks (outputs kept)")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        parser.error(f"notebooks: no such file {', '.join(missing)}")
    from muse_mini.notebook import pipeline_source

    report = {"mode": "smoke" if args.smoke else "full", "machine": machine(), "python": platform.python_version(),
              "pipeline": str(pipeline_source()), "budget_minutes": args.budget, "notebooks": {}}
    print(f"| notebook | minutes | |\n|---|---|---|")
    for path in paths:
        result = time_notebook(path, smoke=args.smoke, timeout=args.timeout, executed=args.executed)
        report["notebooks"][path.name] = result
        verdict = result["error"] or ("over budget" if result["seconds"] > 60 * args.budget else "ok")
        print(f"| {path.name} | {result['seconds'] / 60:.1f} | {verdict} |", flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    bad = [n for n, r in report["notebooks"].items() if r["error"] or r["seconds"] > 60 * args.budget]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
