"""Every notebook runs top to bottom in smoke mode (tiny models, few steps).

The notebooks are executed from a temporary copy so that no outputs reach git,
with ``MUSE_MINI_SMOKE=1`` and their run directories in one temporary ``runs/``.
"""

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_is_a_notebook_per_stage():
    names = {p.stem for p in NOTEBOOKS}
    for stem in ("00_data_and_text", "01_tokenizer", "02_base_model", "03_decoding", "04_superres"):
        assert stem in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_mode(path, tmp_path, smoke_runs, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.get("outputs"), f"{path.name} is committed with outputs"
    work = tmp_path / "nb"
    work.mkdir()
    shutil.copy(path, work / path.name)
    monkeypatch.setenv("MUSE_MINI_SMOKE", "1")
    monkeypatch.setenv("MUSE_MINI_RUNS", str(smoke_runs))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    client = NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(work)}})
    client.execute()
