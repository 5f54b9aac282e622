"""benchmarks/gpu_report.py at toy size on CPU: the rows it measures, its goals, its errors (issue 22)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import amused_latency  # noqa: E402
import gpu_report  # noqa: E402


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "report.json"
    gpu_report.main(["--quick", "--batches", "2", "--json", str(out)])
    return json.loads(out.read_text())


def test_measures_every_row_on_the_toy_preset(report):
    assert report["backend"] == "cpu" and report["preset"] == "toy" and report["large_preset"] is None
    assert report["machine"]["cpu_count"] >= 1
    ours = [r for r in report["rows"] if r["model"] == "muse_mini toy" and r["what"] == "latency"]
    assert [(r["batch"], r["steps"], r.get("sr_steps")) for r in ours] == [(2, 2, None), (2, 2, 2)]
    base, cascade = ours
    assert all(r["status"] == "ok" and r["ms_min"] <= r["ms"] <= r["ms_max"] for r in ours)
    # VQ decode included: pixels come out, at the base and at the high-res size
    assert base["output_shape"] == [2, 32, 32, 3] and cascade["output_shape"] == [2, 64, 64, 3]
    assert base["ms_per_image"] == pytest.approx(base["ms"] / 2)
    assert 0 < base["program_bytes"] < cascade["program_bytes"]
    train = [r for r in report["rows"] if r["what"] == "train"]
    assert [(r["batch"], r["remat"]) for r in train] == [(4, True), (4, False)]
    for r in train:
        assert r["status"] == "ok" and r["examples_per_s"] == pytest.approx(4 / r["step_s_median"])
        assert r["mfu"] is None  # no bf16 peak for a CPU


def test_amused_rows_run_or_say_why(report):
    rows = [r for r in report["rows"] if r["what"] == "latency" and r["model"].startswith("aMUSEd")]
    assert [(r["batch"], r["steps"]) for r in rows] == [(2, 2)]
    why = amused_latency.unavailable()
    if why:
        assert rows[0]["status"] == f"skipped: {why}"
    else:
        assert rows[0]["status"] == "ok" and rows[0]["output_shape"] == [2, 3, 8, 8]


def test_same_weights_rows_are_planned_and_run_or_say_why(report):
    rows = [r for r in report["rows"] if r["what"] == "same weights"]
    assert [r["model"] for r in rows] == [f"aMUSEd tiny: {side}" for side in gpu_report.SAME_WEIGHTS]
    assert {(r["batch"], r["steps"]) for r in rows} == {(1, 2)}
    why = amused_latency.unavailable()
    if why:  # muse_mini's environment: no torch, no diffusers
        assert {r["status"] for r in rows} == {f"skipped: {why}"}
    else:
        assert [r["status"] for r in rows] == ["ok"] * 3
        assert rows[0]["logits_max_abs_diff"] < 1e-4 and rows[0]["output_shape"] == [1, 8, 8, 3]
        assert rows[2]["output_shape"] == [1, 3, 8, 8]


def test_only_same_weights_runs_that_section_alone():
    report = gpu_report.run(gpu_report.parse_args(["--quick", "--only-same-weights", "--time-budget", "0"]))
    assert [r["what"] for r in report["rows"]] == ["same weights"] * 3
    why = amused_latency.unavailable() or "--time-budget spent"
    assert {r["status"] for r in report["rows"]} == {f"skipped: {why}"}


def test_goals_compare_the_rows():
    def latency(model, ms, batch=1, steps=12, **extra):
        return {"what": "latency", "model": model, "batch": batch, "steps": steps, "ms": ms, "status": "ok", **extra}

    rows = [latency("muse_mini cc3m", 30.0), latency("muse_mini cc3m", 99.0, batch=8),
            latency("aMUSEd amused-256", 600.0), latency("muse_mini paper-3b", 250.0, steps=24, large=True),
            {"what": "train", "status": "ok", "mfu": 0.40}, {"what": "train", "status": "ok", "mfu": 0.47},
            {"what": "train", "status": "failed: XlaRuntimeError: RESOURCE_EXHAUSTED"}]
    goals = gpu_report.goals(rows, "cc3m")
    assert goals["base_b1_12_ms"] == 30.0 and goals["amused_ratio"] == pytest.approx(20.0)
    assert goals["best_mfu"] == 0.47 and goals["large_24_ms"] == 250.0
    assert goals["met"] == {"base_b1_12_ms<=40": True, "amused_ratio>=14": True,
                            "paper3b_24_ms<=200": False, "mfu>=0.45": True}
    assert gpu_report.goals([], "cc3m")["met"] == dict.fromkeys(goals["met"], False)


def test_a_spent_budget_skips_rows_and_a_failure_keeps_the_others():
    args = gpu_report.parse_args(["--quick", "--time-budget", "0", "--no-amused"])
    report = gpu_report.run(args)
    assert {r["status"] for r in report["rows"]} == {"skipped: --time-budget spent"}
    row = gpu_report._guarded({"what": "x"}, gpu_report.Budget(60), lambda: 1 / 0)
    assert row == {"what": "x", "status": "failed: ZeroDivisionError: division by zero"}
    assert "| x |" not in gpu_report.table([])


def test_bad_arguments_name_the_flag(capsys):
    with pytest.raises(SystemExit):
        gpu_report.parse_args(["--batches", "0", "8"])
    assert "--batches: expected positive integers, got [0, 8]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu_report.parse_args(["--superres-steps", "0"])
    assert "--superres-steps: expected positive integers, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu_report.parse_args(["--guidance", "0"])
    assert "--guidance: expected > 0" in capsys.readouterr().err


def test_latency_weights_are_cast_once_to_the_compute_dtype():
    import jax
    import jax.numpy as jnp
    from muse_mini.config import get_preset
    from muse_mini.models.build import build_base

    cfg = get_preset("toy", ["base.dtype=bfloat16"])
    model = gpu_report.in_compute_dtype(build_base(cfg, jax.random.key(0)), cfg.base.dtype)
    dtypes = {x.dtype for x in jax.tree.leaves(model) if hasattr(x, "dtype")}
    assert dtypes == {jnp.dtype(jnp.bfloat16)}
    fp32 = build_base(get_preset("toy"), jax.random.key(0))
    assert gpu_report.in_compute_dtype(fp32, "float32") is fp32
