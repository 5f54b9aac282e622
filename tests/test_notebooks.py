"""Every notebook runs top to bottom in smoke mode (tiny models, few steps).

The notebooks are executed from a temporary copy so that no outputs reach git,
with ``MUSE_MINI_SMOKE=1``, their run directories in one temporary ``runs/`` and what they write in a
temporary scratch directory; the shipped pretrained pipeline is what they show.
"""

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _imported_modules(nb):
    """Module names in the notebook's ``import x`` / ``from x import y`` statements."""
    import ast

    names = set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                names.add(node.module)
    return names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_imports_only_existing_public_muse_mini_modules(path):
    """A moved or private module in a notebook fails here, before any kernel starts."""
    import importlib.util

    ours = sorted(m for m in _imported_modules(nbformat.read(path, as_version=4)) if m.split(".")[0] == "muse_mini")
    assert ours, f"{path.name} does not import muse_mini"
    for module in ours:
        assert not any(part.startswith("_") for part in module.split(".")), f"{path.name}: private {module}"
        assert importlib.util.find_spec(module) is not None, f"{path.name}: no module {module}"


def _files(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_mode(path, tmp_path, monkeypatch):
    """Runs top to bottom, writing only into the scratch directory: not into runs/, not into the shipped weights."""
    from muse_mini.runs.pretrained import SHIPPED_DIR

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.get("outputs"), f"{path.name} is committed with outputs"
    work = tmp_path / "nb"
    work.mkdir()
    shutil.copy(path, work / path.name)
    monkeypatch.setenv("MUSE_MINI_SMOKE", "1")
    runs = tmp_path / "runs"
    runs.mkdir()
    shipped = _files(SHIPPED_DIR)
    monkeypatch.setenv("MUSE_MINI_RUNS", str(runs))
    monkeypatch.setenv("MUSE_MINI_SCRATCH", str(tmp_path / "scratch"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    client = NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(work)}})
    client.execute()
    assert _files(runs) == {}, f"{path.name} wrote into the runs directory"
    assert _files(SHIPPED_DIR) == shipped, f"{path.name} changed the shipped weights"
