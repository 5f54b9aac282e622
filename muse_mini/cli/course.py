"""``muse-mini course``: the exercises of notebooks 00-05 (``list``) and their checkers run on files (``check``).

``muse-mini course check my_answers.py`` imports the file, runs the checker of every exercise
function it defines, prints one line per check and exits 1 if any fails.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def add_parsers(sub) -> None:
    p = sub.add_parser("course", help="the notebooks' exercises: list them, or check your answers")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION",
                               help="list: the exercises; check: run their checkers on your files")
    listing = actions.add_parser("list", help="the exercises, notebook by notebook")
    listing.set_defaults(func=run_list)
    check = actions.add_parser("check", help="run the checkers on the exercise functions that .py files define")
    check.add_argument("paths", nargs="+", metavar="FILE_OR_DIR",
                       help="Python files, or folders whose .py files are checked (e.g. notebooks/solutions)")
    check.set_defaults(func=run_check)


def run_list(args) -> int:
    from muse_mini.course import EXERCISES

    rows = [("notebook", "function", "§", "task")] + [(ex.notebook, ex.name, ex.section, ex.task) for ex in EXERCISES]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3])
    return 0


def _files(paths: list[str]) -> list[Path]:
    files = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.glob("*.py") if not p.name.startswith("_"))
            if not found:
                raise ValueError(f"{path}: a folder with no .py files to check")
            files += found
        elif path.is_file() and path.suffix == ".py":
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: expected a .py file or a folder of them")
    return files


def _load(path: Path, index: int):
    """The module ``path`` defines, imported under a private name (never into the package)."""
    spec = importlib.util.spec_from_file_location(f"_muse_mini_course_answers_{index}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_check(args) -> int:
    from muse_mini.course import EXERCISES

    names = [ex.name for ex in EXERCISES]
    failed = total = 0
    for index, path in enumerate(_files(args.paths)):
        try:
            module = _load(path, index)
        except Exception as err:  # the learner's file: one line, not a traceback
            print(f"✗ {path}: could not be imported: {type(err).__name__}: {err}")
            failed += 1
            continue
        found = [ex for ex in EXERCISES if callable(getattr(module, ex.name, None))]
        if not found:
            raise ValueError(f"{path}: defines none of the exercise functions; expected one or more of "
                             f"{', '.join(names)}")
        for ex in found:
            result = ex.checker(getattr(module, ex.name))
            print(f"{result!r}  [{path}]", flush=True)
            total += 1
            failed += not result.passed
    print(f"{total - failed} of {total} checks passed" + (f", {failed} failed" if failed else ""))
    return 1 if failed else 0
