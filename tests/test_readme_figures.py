"""The README's pictures: the script makes all three from the shipped pipeline; the README shows the committed ones."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("decoding_strip.png", "prompt_grid.png", "edit.png")
REJECTED_RGB = (0xD6, 0x27, 0x28)  # the script's frame around an image the evaluator rejects
MAX_BYTES = 200_000


@pytest.fixture(scope="module")
def smoke_figures(tmp_path_factory):
    out = tmp_path_factory.mktemp("images")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_readme_figures.py"), "--smoke", "--out",
                           str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done.stdout


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_smoke_run_writes_three_pngs_and_says_so(smoke_figures):
    out, stdout = smoke_figures
    assert sorted(p.name for p in out.iterdir()) == sorted(NAMES)
    for name in NAMES:
        assert f"wrote {out / name}" in stdout
        assert 0 < (out / name).stat().st_size < MAX_BYTES


def test_layouts(smoke_figures):
    out, _ = smoke_figures
    strip, grid, edit = (_rgb(out / name) for name in NAMES)
    assert strip.shape[1] > 3 * strip.shape[0]  # one row of steps
    assert grid.shape[1] > grid.shape[0]  # smoke: 4 prompts across, 2 samples down
    assert 2 * edit.shape[0] < edit.shape[1]  # input | region | inpainted


def test_grid_frames_exactly_the_rejected_images(smoke_figures):
    out, stdout = smoke_figures
    accepted, total = map(int, re.search(r"\((\d+) of (\d+) accepted\)", stdout).groups())
    red = int(np.all(_rgb(out / "prompt_grid.png") == REJECTED_RGB, axis=-1).sum())
    rejected = total - accepted
    # A frame is about 2,700 pixels at this size; a stray decoded pixel of that exact colour is far fewer.
    low, high = (1000 * rejected, 5000 * rejected) if rejected else (0, 100)
    assert low <= red <= high, f"{rejected} of {total} rejected, but {red} pixels of the frame colour"


def test_readme_shows_the_committed_images():
    readme = (ROOT / "README.md").read_text()
    for name in NAMES:
        assert f"](docs/images/{name})" in readme, f"README.md: no image link to docs/images/{name}"
        path = ROOT / "docs" / "images" / name
        assert path.is_file(), f"{path} is not committed"
        assert path.stat().st_size < MAX_BYTES, f"{path}: {path.stat().st_size} bytes"
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 100
