"""Peak resident memory of ``train-base`` over pre-tokenised shards: flat in the dataset's size?

The acceptance check: peak RSS of ``muse-mini train-base`` streaming token
shards grows by less than 10% between a 2,000-example and a 20,000-example
dataset, with the same steps and batch. The script

1. takes the smoke tokenizers of a pipeline directory (``--pipeline DIR``;
   without it, trains one with ``run_demo('quick', ..., overrides=SMOKE_OVERRIDES)``
   into the work directory, about a minute);
2. writes Shapes token shards of each size with
   ``muse-mini tokenize --source shapes --run PIPELINE --out SHARDS data.num_examples=N
   data.text_cache_max=0 <smoke overrides>``. ``data.text_cache_max=0`` stores
   each shard's text embeddings in the shard (text mode ``shards``), as every
   dataset above the cache size does, so no array spans the dataset;
3. runs ``muse-mini train-base --run RUN --tokenizer-run PIPELINE/tokenizer-base
   data.tokens=SHARDS base_train.steps=S base_train.batch_size=B <smoke overrides>``
   for each, each in a fresh process, and measures that process's peak RSS
   after the CLI returns, as the child itself reports it: ``VmHWM`` from
   ``/proc/self/status``, the high-water mark of that process's own address
   space (``ru_maxrss`` where there is no ``/proc``). ``ru_maxrss`` is printed
   beside it, from the child's ``getrusage(RUSAGE_SELF)`` and from the
   parent's ``os.wait4`` for that child, but on Linux it is no measure of
   one child: the parent's high-water mark is carried over ``fork`` and
   ``exec``, so every child of a large parent reports at least the parent's
   peak (the smoke pipeline is trained in a subprocess for that reason);
4. prints both peaks, their ratio, and PASS/FAIL against ``--threshold`` (10%).
   Identical runs differ by a few percent in peak RSS (allocator arenas,
   threads, compilation), so each size trains ``--repeats`` times (5),
   interleaved, and the medians are compared; every run's peak is printed.

The config is ``--preset toy`` plus the smoke recipe's overrides
(``muse_mini.config.SMOKE_OVERRIDES``), which is what ``run_demo`` trained
the pipeline with; the script checks that the pipeline's tokenizer and text
encoder match it before running anything.

    python benchmarks/bench_memory.py                                # trains a smoke pipeline first
    python benchmarks/bench_memory.py --pipeline runs/smoke --json runs/bench_memory.json
    python benchmarks/bench_memory.py --quick                        # 200 vs 2,000 examples, smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from muse_mini.config import SMOKE_OVERRIDES, get_preset  # noqa: E402

# Runs the CLI in this (fresh) process and reports this process's own peak RSS. On Linux the
# figure is VmHWM of /proc/self/status: the high-water mark of this process's address space,
# which exec starts afresh. ru_maxrss is printed too, but it is NOT this process's alone: Linux
# carries the parent's high-water mark over fork and exec (into signal->maxrss), so a child of
# a 1.5 GiB parent reports ru_maxrss >= 1.5 GiB however little it uses; so does the rusage that
# os.wait4 / RUSAGE_CHILDREN return for it.
CHILD = (
    "import json, resource, sys\n"
    "from muse_mini.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "hwm = None\n"
    "try:\n"
    "    hwm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
    "except (OSError, StopIteration):\n"
    "    pass\n"
    "own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print('BENCH_MEMORY ' + json.dumps({'rc': rc, 'vmhwm_kib': hwm, 'self_maxrss': own, "
    "'children_maxrss': kids}), flush=True)\n"
    "sys.exit(rc)\n"
)
RSS_UNIT = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux


def machine() -> dict:
    import jax

    cpu = platform.processor() or "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = None
    try:
        mem = 1024 * next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                          if line.startswith("MemTotal:"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "memory_bytes": mem, "python": platform.python_version(),
            "jax": jax.__version__, "platform": platform.platform()}


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_cli(argv: list[str], log: Path) -> dict:
    """``muse-mini ARGV`` in a fresh Python process; its exit code, wall time and peak RSS (bytes)."""
    env = _env()
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, *argv], stdout=out, stderr=subprocess.STDOUT,
                                cwd=REPO, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's rusage (and its own waited-for children)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    text = log.read_text()
    line = next((x for x in reversed(text.splitlines()) if x.startswith("BENCH_MEMORY ")), None)
    own = json.loads(line.split(" ", 1)[1]) if line else {}
    if proc.returncode != 0 or not own:
        tail = "\n".join(text.splitlines()[-30:])
        raise RuntimeError(f"muse-mini {' '.join(argv)} failed (exit {proc.returncode}); log {log}:\n{tail}")
    parent = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * RSS_UNIT
    maxrss = own["self_maxrss"] * RSS_UNIT
    hwm = own["vmhwm_kib"] * 1024 if own.get("vmhwm_kib") else None
    return {"argv": argv, "wall_s": wall, "rc": proc.returncode,
            # the process's own peak: VmHWM where there is /proc, else ru_maxrss (see CHILD)
            "peak_rss_bytes": hwm if hwm is not None else maxrss,
            "peak_source": "VmHWM" if hwm is not None else "ru_maxrss",
            "vmhwm_bytes": hwm,
            "ru_maxrss_bytes": maxrss,  # the child's getrusage(RUSAGE_SELF): floored at the parent's peak
            "wait4_maxrss_bytes": usage.ru_maxrss * RSS_UNIT,  # the parent's os.wait4 for that child: same floor
            "parent_maxrss_bytes": parent,
            "ru_maxrss_floored_by_parent": maxrss <= parent,
            "grandchildren_maxrss_bytes": own["children_maxrss"] * RSS_UNIT}


def check_pipeline(pipeline: Path, cfg) -> None:
    """The pipeline's base tokenizer and text encoder must be the config's (else tokens mean nothing)."""
    tok_cfg = json.loads((pipeline / "tokenizer-base" / "config.json").read_text())["metadata"]["tokenizer"]
    want = json.loads(json.dumps(dataclasses.asdict(cfg.tokenizer)))
    diff = sorted(k for k in set(tok_cfg) | set(want) if tok_cfg.get(k) != want.get(k))
    if diff:
        raise SystemExit(f"--pipeline: {pipeline}/tokenizer-base was trained with another tokenizer config "
                         f"(differs in {diff}) than --preset toy + the smoke overrides")
    top = pipeline / "config.json"
    if top.is_file():
        text = json.loads(top.read_text()).get("text")
        if text is not None and text != json.loads(json.dumps(dataclasses.asdict(cfg.text))):
            raise SystemExit(f"--pipeline: {top} has text {text}, not the smoke config's {cfg.text}")


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pipeline", type=Path, default=None,
                   help="smoke pipeline directory with tokenizer-base/ (default: train one into the work dir)")
    p.add_argument("--sizes", type=int, nargs=2, default=None, metavar=("SMALL", "LARGE"),
                   help="examples in the two datasets (default 2000 20000; quick 200 2000)")
    p.add_argument("--steps", type=int, default=None, help="base_train.steps for both runs (default 200)")
    p.add_argument("--batch", type=int, default=None, help="base_train.batch_size for both runs (default 32)")
    p.add_argument("--repeats", type=int, default=None,
                   help="train-base runs per size, interleaved; medians compared (default 5; quick 1)")
    p.add_argument("--threshold", type=float, default=0.10, help="allowed growth of the peak (default 0.10)")
    p.add_argument("--workdir", type=Path, default=None, help="keep shards, runs and logs here (default: temp)")
    p.add_argument("--quick", action="store_true", help="small sizes and few steps, for a smoke test")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    args.sizes = args.sizes or ((200, 2000) if args.quick else (2000, 20000))
    args.steps = args.steps or (20 if args.quick else 200)
    args.batch = args.batch or (16 if args.quick else 32)
    args.repeats = args.repeats or (1 if args.quick else 5)
    if args.batch > min(args.sizes):
        p.error("--batch must not exceed the smaller dataset")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    m = machine()
    mem = f", {m['memory_bytes'] / 2**30:.0f} GiB RAM" if m["memory_bytes"] else ""
    print(f"machine: {m['cpu']}, {m['cpu_count']} cores{mem}; python {m['python']}, jax {m['jax']}")
    smoke = list(SMOKE_OVERRIDES)
    cfg = get_preset("toy", smoke)
    temp = None
    if args.workdir is None:
        temp = tempfile.mkdtemp(prefix="bench_memory-")
        work = Path(temp)
    else:
        work = args.workdir
        work.mkdir(parents=True, exist_ok=True)
    try:
        r = _run(args, cfg, smoke, work, m)
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(r, indent=2) + "\n")
        print(f"wrote {args.json}")
    return r


def _data(n: int) -> list[str]:
    return [f"data.num_examples={n}", "data.text_cache_max=0"]


def _run(args, cfg, smoke, work: Path, m: dict) -> dict:
    pipeline = args.pipeline
    r: dict = {"machine": m, "sizes": list(args.sizes), "steps": args.steps, "batch": args.batch,
               "threshold": args.threshold, "repeats": args.repeats, "preset": "toy", "overrides": smoke,
               "text_cache_max": 0}
    if pipeline is None:
        pipeline = work / "pipeline"
        print(f"training a smoke pipeline into {pipeline} (run_demo('quick', overrides=SMOKE_OVERRIDES), "
              "in a subprocess so this process stays small) ...", flush=True)
        t0 = time.perf_counter()
        code = ("import sys\nfrom muse_mini.config import SMOKE_OVERRIDES\nfrom muse_mini.demo import run_demo\n"
                "run_demo('quick', sys.argv[1], progress=False, evaluate=False, overrides=SMOKE_OVERRIDES)\n")
        with open(work / "pipeline.log", "w") as log:
            done = subprocess.run([sys.executable, "-c", code, str(pipeline)], stdout=log, stderr=subprocess.STDOUT,
                                  cwd=REPO, env=_env())
        if done.returncode != 0:
            raise RuntimeError(f"training the smoke pipeline failed; see {work / 'pipeline.log'}")
        r["pipeline_train_s"] = time.perf_counter() - t0
    check_pipeline(pipeline, cfg)
    r["pipeline"] = str(pipeline)
    highres = ", tokenizer-highres" if (pipeline / "tokenizer-highres").is_dir() else ""
    print(f"pipeline: {pipeline} (tokenizer-base{highres})")
    print(f"config: --preset toy + the smoke recipe's {len(smoke)} overrides; data.text_cache_max=0 "
          f"(text embeddings stored per shard, text mode 'shards'); base_train.steps={args.steps} "
          f"base_train.batch_size={args.batch}; base {cfg.base.depth} layer × width {cfg.base.width}")
    r["datasets"] = []
    for n in args.sizes:
        shards = work / f"tokens-{n}"
        tok = run_cli(["tokenize", "--source", "shapes", "--run", str(pipeline), "--out", str(shards),
                       "--no-progress", *smoke, *_data(n)], work / f"tokenize-{n}.log")
        manifest = json.loads((shards / "manifest.json").read_text())
        size = dir_bytes(shards)
        r["datasets"].append({"examples": n, "path": str(shards), "shards": len(manifest["shards"]),
                              "text_mode": manifest["text"]["mode"], "fields": sorted(manifest["fields"]),
                              "dataset_bytes": size, "tokenize": tok})
        print(f"  N={n:>6,}: tokenized in {tok['wall_s']:.0f} s: {len(manifest['shards'])} shard(s), "
              f"fields {sorted(manifest['fields'])}, text mode {manifest['text']['mode']!r}, "
              f"{_mib(size)} on disk (tokenize peak RSS {_mib(tok['peak_rss_bytes'])})", flush=True)

    # Peak RSS varies by a few percent between identical runs (allocator arenas, threads,
    # compilation), so each size runs --repeats times, interleaved, and the medians are compared.
    r["runs"] = []
    for rep in range(args.repeats):
        for d in r["datasets"]:
            n = d["examples"]
            run = work / f"base-{n}-{rep}"
            train = run_cli(["train-base", "--run", str(run), "--tokenizer-run", str(pipeline / "tokenizer-base"),
                             "--no-progress", *smoke, *_data(n), f"data.tokens={d['path']}",
                             f"base_train.steps={args.steps}", f"base_train.batch_size={args.batch}"],
                            work / f"train-{n}-{rep}.log")
            if not (run / "DONE.json").is_file():
                raise RuntimeError(f"train-base left no DONE.json in {run}")
            train.update(examples=n, repeat=rep)
            r["runs"].append(train)
            print(f"  train-base N={n:>6,} #{rep + 1}: {args.steps} steps × {args.batch} in {train['wall_s']:.0f} s, "
                  f"peak RSS {_mib(train['peak_rss_bytes'])} ({train['peak_source']}); ru_maxrss "
                  f"{_mib(train['ru_maxrss_bytes'])}, wait4 {_mib(train['wait4_maxrss_bytes'])}"
                  + (f" (floored at this process's {_mib(train['parent_maxrss_bytes'])})"
                     if train["ru_maxrss_floored_by_parent"] else ""), flush=True)
    small, large = r["datasets"]
    peaks = {d["examples"]: sorted(x["peak_rss_bytes"] for x in r["runs"] if x["examples"] == d["examples"])
             for d in r["datasets"]}
    for d in r["datasets"]:
        d["peaks_bytes"] = peaks[d["examples"]]
        d["peak_median_bytes"] = statistics.median(peaks[d["examples"]])
    peak_s, peak_l = small["peak_median_bytes"], large["peak_median_bytes"]
    growth = peak_l / peak_s - 1
    worst = max(peaks[large["examples"]]) / min(peaks[small["examples"]]) - 1
    dataset_growth = large["dataset_bytes"] - small["dataset_bytes"]
    r.update(peak_small_bytes=peak_s, peak_large_bytes=peak_l, ratio=peak_l / peak_s, growth=growth,
             worst_growth=worst, passed=growth < args.threshold)
    print(f"\npeak RSS of train-base over token shards (same {args.steps} steps × batch {args.batch}; "
          f"median of {args.repeats}):")
    for d in r["datasets"]:
        spread = ", ".join(f"{x / 2**20:,.0f}" for x in d["peaks_bytes"])
        print(f"  {d['examples']:>6,} examples ({_mib(d['dataset_bytes'])} of shards): "
              f"{_mib(d['peak_median_bytes'])}  (runs: {spread} MiB)")
    print(f"  ratio {peak_l / peak_s:.3f} ({100 * growth:+.1f}%, {(peak_l - peak_s) / 2**20:+,.1f} MiB); "
          f"worst pair (largest large / smallest small) {100 * worst:+.1f}%")
    share = dataset_growth / peak_s
    print(f"  the shards differ by {_mib(dataset_growth)} = {100 * share:.0f}% of the smaller peak"
          + (": a feed that held the dataset in memory would fail the check" if share >= 2 * args.threshold
             else ": too little for the check to tell whether the dataset is held in memory; use larger --sizes"))
    print(f"  {'PASS' if r['passed'] else 'FAIL'}: growth {100 * growth:.1f}% "
          f"{'<' if r['passed'] else '>='} {100 * args.threshold:.0f}%")
    return r


if __name__ == "__main__":
    main()
