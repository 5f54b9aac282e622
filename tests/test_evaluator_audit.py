"""The evaluator against a second, deliberately simple judge (``tests/spec_checker.py``), on the spec's edges.

Both judges must accept every rendered scene, and both must reject what the
spec rules out, including the cases between its bounds (a 22 px object is
neither small nor large; a relation 10 px apart does not hold). The audit on
generated images is ``scripts/audit_evaluator.py`` (docs/evaluation.md).
"""

from __future__ import annotations

import numpy as np
import pytest

import spec_checker
from muse_mini.data import evaluator, shapes
from muse_mini.data.shapes import ShapeObject

JUDGES = {"evaluator": lambda image, caption: evaluator.evaluate(image, caption).ok,
          "simple": spec_checker.accepts}


@pytest.mark.parametrize("resolution", [64, 32])
def test_both_judges_accept_every_rendered_scene(resolution):
    for split in ("train", "holdout"):
        for index in range(60):
            scene = shapes.sample_scene(11, split, index)
            image = scene.render(resolution)
            for name, accepts in JUDGES.items():
                assert accepts(image, scene.caption), (name, scene.caption, resolution)


def _single(size: int, colour="red", shape="circle"):
    return shapes.render([ShapeObject(colour, shape, 32 + (size % 2) / 2, 32 + (size % 2) / 2, size)])


def _pair(dx: float, dy: float):
    a = ShapeObject("blue", "square", 16, 24, 16)
    return shapes.render([a, ShapeObject("orange", "circle", 16 + dx, 24 + dy, 16)])


# (image, caption, what the spec says)
SPEC_EDGES = {
    "small at 16 px": (_single(16), "a small red circle", True),
    "small at 20 px": (_single(20), "a small red circle", True),
    "22 px is not small": (_single(22), "a small red circle", False),
    "22 px is not large": (_single(22), "a large red circle", False),
    "24 px is not large": (_single(24), "a large red circle", False),
    "large at 26 px": (_single(26), "a large red circle", True),
    "large at 32 px": (_single(32), "a large red circle", True),
    "right of fails": (_pair(28, 0), "a blue square right of an orange circle", False),
    "apart holds": (_pair(28, 0), "a blue square left of an orange circle", True),
    "off-axis 13 of 24 fails": (_pair(24, 13), "a blue square left of an orange circle", False),
    "off-axis above half fails": (_pair(20, 12), "a blue square left of an orange circle", False),
    "off-axis at half holds": (_pair(20, 10), "a blue square left of an orange circle", True),
    "wrong colour": (_single(18, "orange"), "a small red circle", False),
    "wrong shape": (_single(18, "red", "square"), "a small red circle", False),
    "extra object": (_pair(24, 0), "a small blue square", False),
}


@pytest.mark.parametrize("judge", JUDGES)
@pytest.mark.parametrize("case", SPEC_EDGES)
def test_judges_follow_the_spec_at_its_edges(judge, case):
    image, caption, expected = SPEC_EDGES[case]
    for resolution in (64, 32):
        shown = image if resolution == 64 else shapes.downsample(image)
        assert JUDGES[judge](shown, caption) == expected, (case, resolution)


def test_the_simple_judge_measures_what_was_drawn():
    scene = shapes.sample_scene(5, "train", 3, kinds=("relation",))
    for resolution, tolerance in ((64, 0.01), (32, 1.0)):
        found = sorted(spec_checker.objects(scene.render(resolution)), key=lambda o: (o["cy"], o["cx"]))
        drawn = sorted(scene.objects, key=lambda o: (o.cy, o.cx))
        assert [(o["colour"], o["shape"]) for o in found] == [(o.colour, o.shape) for o in drawn]
        for f, d in zip(found, drawn):
            np.testing.assert_allclose([f["cx"], f["cy"], f["size"]], [d.cx, d.cy, d.size], atol=tolerance)


def test_the_audit_script_writes_its_table_and_figures(smoke_runs, tmp_path, monkeypatch):
    import json
    import runpy
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "audit_evaluator.py"
    out = tmp_path / "audit"
    monkeypatch.setattr(sys, "argv", [str(script), str(smoke_runs / "smoke"), "--samples", "3", "--out", str(out)])
    runpy.run_path(str(script), run_name="__main__")
    report = json.loads((out / "audit.json").read_text())
    for stage in ("base", "superres"):
        table = report[stage]["all"]
        assert table["n"] == 12  # 3 prompts per split x 2 splits x with and without guidance
        assert table["both_accept"] + table["only_evaluator"] == pytest.approx(table["evaluator_accepts"])
        assert table["both_accept"] + table["only_simple"] == pytest.approx(table["simple_accepts"])
        assert (out / f"disagreements_{stage}.png").exists() == (report[stage]["disagreements"] > 0)
