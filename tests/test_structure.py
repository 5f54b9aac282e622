"""The package's shape: import layering, no import circles, readable module and function sizes.

Every module under ``muse_mini/`` is parsed with ``ast`` (nothing is imported), and
every import is collected: module-level, function-local, and
``importlib.import_module("...")`` calls with a literal name. Imports point DOWN:
config -> models/data -> decoding -> training -> pipeline/demo -> cli.
"""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "muse_mini"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
EXEMPT_MARK = "long:"  # "# long: <why>" on the def line or the line above it


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _imported_names(module: str, path: Path, tree: ast.AST) -> set[str]:
    """Every dotted name ``module`` imports, wherever the import statement sits."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Call):
            func = node.func
            called = getattr(func, "attr", getattr(func, "id", None))
            if called in ("import_module", "__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    names.add(arg.value)
    return names


def _resolve(name: str) -> str | None:
    """The muse_mini module a dotted import name lands in (``a.b.Name`` -> ``a.b``)."""
    while name and name not in MODULES:
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return name or None


def _edges() -> dict[str, set[str]]:
    edges = {}
    for module, path in MODULES.items():
        targets = {_resolve(n) for n in _imported_names(module, path, ast.parse(path.read_text()))}
        # Importing a sub-module runs its parents' __init__; those edges are implied, not drawn.
        edges[module] = {t for t in targets if t and t != module and not module.startswith(t + ".")
                         and t != "muse_mini"}
    return edges


EDGES = _edges()


def _find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or None (iterative DFS with colours)."""
    state = dict.fromkeys(edges, 0)  # 0 unseen, 1 on the stack, 2 done
    for root in sorted(edges):
        if state[root]:
            continue
        stack = [(root, iter(sorted(edges[root])))]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
            elif state.get(child) == 1:
                path = [n for n, _ in stack]
                return path[path.index(child):] + [child]
            elif state.get(child) == 0:
                state[child] = 1
                stack.append((child, iter(sorted(edges[child]))))
    return None


def test_cycle_finder_reports_a_planted_circle():
    # The checker itself must be able to fail: a planted a -> b -> c -> a circle is found.
    planted = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    cycle = _find_cycle(planted)
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_imports_are_collected_from_every_place_they_can_hide():
    tree = ast.parse(
        "import importlib\n"
        "from muse_mini.config import MuseConfig\n"
        "def f():\n"
        "    from muse_mini.decoding import sampler\n"
        "    return importlib.import_module('muse_mini.runs.layout')\n"
        "class K:\n"
        "    def g(self):\n"
        "        from ..training import loop\n"
    )
    names = _imported_names("muse_mini.models.fake", PKG / "models" / "fake.py", tree)
    resolved = {_resolve(n) for n in names} - {None}
    assert {"muse_mini.config", "muse_mini.decoding.sampler", "muse_mini.runs.layout",
            "muse_mini.training.loop"} <= resolved


def test_the_package_was_found():
    assert {"muse_mini.config", "muse_mini.data.shapes", "muse_mini.pipeline"} <= set(MODULES)


def test_no_import_circles():
    cycle = _find_cycle(EDGES)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_imports_point_down():
    low = ("muse_mini.models", "muse_mini.data", "muse_mini.decoding", "muse_mini.runs")
    high = ("muse_mini.training", "muse_mini.pipeline", "muse_mini.demo", "muse_mini.course", "muse_mini.cli")
    bad = []
    for module, targets in sorted(EDGES.items()):
        for t in sorted(targets):
            if _in(module, *low) and _in(t, *high):
                bad.append(f"{module} imports {t} (models/data/decoding/runs sit below it)")
            if module == "muse_mini.pipeline" and _in(t, "muse_mini.training"):
                bad.append(f"{module} imports {t} (inference must not load training code)")
            if _in(t, "muse_mini.cli") and not _in(module, "muse_mini.cli", "muse_mini.__main__"):
                bad.append(f"{module} imports {t} (only the CLI and __main__ may)")
            if _in(t, "muse_mini.course") and not _in(module, "muse_mini.course", "muse_mini.notebook", "muse_mini.cli"):
                bad.append(f"{module} imports {t} (the exercises sit just under the notebooks and the CLI)")
    assert not bad, "layering violations:\n  " + "\n  ".join(bad)


def _exempt(lines: list[str], node: ast.AST) -> bool:
    first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
    window = lines[max(first - 2, 0): node.lineno]  # the line above the def, decorators, the def
    return any(EXEMPT_MARK in line.partition("#")[2] for line in window)


def _long_functions(path: Path, root: Path = PKG.parent) -> list[str]:
    text = path.read_text()
    lines = text.splitlines()
    out = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION_LINES and not _exempt(lines, node):
                out.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_exemption_needs_a_long_comment(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    plain, marked = tmp_path / "plain.py", tmp_path / "marked.py"
    plain.write_text("def f():\n" + body)
    marked.write_text("# long: one table, split it and it reads worse\ndef f():\n" + body)
    assert len(_long_functions(plain, tmp_path)) == 1 and _long_functions(marked, tmp_path) == []


@pytest.mark.parametrize("kind", ["modules", "functions"])
def test_modules_and_functions_are_short(kind):
    if kind == "modules":
        offenders = []
        for path in MODULES.values():
            lines = path.read_text().splitlines()
            n = len(lines)
            exempt = any(EXEMPT_MARK in line.partition("#")[2] for line in lines[:3])
            if n > MAX_MODULE_LINES and not exempt:
                offenders.append(f"{path.relative_to(PKG.parent)} ({n} lines)")
        limit = MAX_MODULE_LINES
    else:
        offenders = [o for path in MODULES.values() for o in _long_functions(path)]
        limit = MAX_FUNCTION_LINES
    assert not offenders, (f"{len(offenders)} {kind} over {limit} lines without a '# {EXEMPT_MARK}' "
                           "comment saying why:\n  " + "\n  ".join(sorted(offenders)))


# --------------------------------------------------------------------------
# decoding/'s public names are the ones the layers above use

NOTEBOOKS = PKG.parent / "notebooks"


def _public_names(tree: ast.Module) -> set[str]:
    """A module's ``__all__``, or without one every top-level name not starting with ``_``."""
    names = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return set(ast.literal_eval(node.value))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return {n for n in names if not n.startswith("_")}


def _notebook_sources() -> list[str]:
    import json

    return ["".join(cell["source"]) for path in sorted(NOTEBOOKS.glob("*.ipynb"))
            for cell in json.loads(path.read_text())["cells"] if cell["cell_type"] == "code"]


def _imports_from(sources: list[str], module: str) -> set[str]:
    """The names ``from <module> import ...`` brings in, anywhere in ``sources``."""
    names = set()
    for source in sources:
        code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.ImportFrom) and node.module == module:
                names.update(a.name for a in node.names)
    return names


def _api_mismatches(public: dict[str, set[str]], sources: list[str]) -> list[str]:
    """Public names no source imports or reaches as ``module.name``, and imported names that are not public."""
    import re

    text = "\n".join(sources)
    out = []
    for module, names in sorted(public.items()):
        imported = _imports_from(sources, module)
        short = module.rpartition(".")[2]
        out += [f"{module}.{name} is public but unused" for name in sorted(names)
                if name not in imported and not re.search(rf"\b{short}\.{re.escape(name)}\b", text)]
        out += [f"{module}.{name} is used but not in __all__" for name in sorted(imported - names)]
    return out


def test_api_check_catches_unused_and_unlisted_names():
    public = {"muse_mini.decoding.fake": {"used", "unused", "attr"}}
    sources = ["from muse_mini.decoding.fake import used, hidden\nused(hidden)\nunused = 1",
               "from muse_mini.decoding import fake\nfake.attr()"]
    assert _api_mismatches(public, sources) == ["muse_mini.decoding.fake.unused is public but unused",
                                                "muse_mini.decoding.fake.hidden is used but not in __all__"]
    assert _public_names(ast.parse("def f(): pass\ndef _g(): pass\nX = 1")) == {"f", "X"}
    assert _public_names(ast.parse("__all__ = ['f']\ndef f(): pass\ndef g(): pass")) == {"f"}


def test_every_public_decoding_name_is_used_by_the_layers_above():
    """The pipeline, editing, the CLI (any module outside decoding/) or a notebook uses each public name."""
    public = {module: _public_names(ast.parse(path.read_text())) for module, path in MODULES.items()
              if _in(module, "muse_mini.decoding") and module != "muse_mini.decoding"}
    outside = [path.read_text() for module, path in MODULES.items() if not _in(module, "muse_mini.decoding")]
    mismatches = _api_mismatches(public, outside + _notebook_sources())
    assert not mismatches, "\n  ".join(["decoding/'s API and its users disagree:", *mismatches])
