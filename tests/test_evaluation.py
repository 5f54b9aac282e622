"""The judges of generated images (issue 21): the Fréchet distance and the Shapes feature network."""

import numpy as np
import pytest
import scipy.linalg

from muse_mini.data import shapes
from muse_mini.evaluation.frechet import feature_stats, frechet_distance


def _scipy_fid(x, y):
    """FID as the reference implementations write it: scipy's sqrtm of Σ₁Σ₂, real part."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


@pytest.mark.parametrize("dim, shift, scale", [(4, 0.0, 1.0), (16, 0.5, 2.0), (64, 3.0, 0.3)])
def test_frechet_distance_matches_scipy(dim, shift, scale):
    rng = np.random.default_rng(dim)
    mix = rng.normal(size=(dim, dim))
    x = rng.normal(size=(500, dim)) @ mix
    y = scale * rng.normal(size=(400, dim)) @ (mix + 0.3 * rng.normal(size=(dim, dim))) + shift
    ours = frechet_distance(feature_stats(x), feature_stats(y))
    np.testing.assert_allclose(ours, _scipy_fid(x, y), rtol=1e-6, atol=1e-8)


def test_frechet_distance_invariants():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8))
    a = feature_stats(x)
    assert abs(frechet_distance(a, a)) < 1e-9
    shifted = feature_stats(x + np.arange(8))  # same covariance: d² is |Δμ|²
    np.testing.assert_allclose(frechet_distance(a, shifted), (np.arange(8) ** 2).sum(), rtol=1e-9)
    b = feature_stats(rng.normal(size=(300, 8)) * 2)
    np.testing.assert_allclose(frechet_distance(a, b), frechet_distance(b, a), rtol=1e-9)
    with pytest.raises(ValueError, match=r"features: expected an \(N, D\) array with N >= 2"):
        feature_stats(np.zeros((1, 8)))
    with pytest.raises(ValueError, match="features: the two sets have 8 and 4 dimensions"):
        frechet_distance(a, feature_stats(x[:, :4]))


def test_the_shipped_feature_network_reads_unseen_scenes():
    """≥ 95% of unseen scenes get their whole colour set and shape set right, at 64 px and at 32 px."""
    from muse_mini.evaluation.features import heldout_accuracy, load_feature_net

    accuracy = heldout_accuracy(load_feature_net(), 256, seed=9)
    for size in ("64px", "32px"):
        assert accuracy[size]["colours"] >= 0.95 and accuracy[size]["shapes"] >= 0.95, accuracy
        assert accuracy[size]["count"] >= 0.95, accuracy


def test_shapes_fid_tells_real_scenes_from_wrong_ones():
    from muse_mini.evaluation.fid import shapes_fid, shapes_stats

    real, _, _ = shapes.generate(256, seed=21)
    other, _, _ = shapes.generate(256, seed=22)
    reference = shapes_stats(real)
    floor = shapes_fid(other, reference)
    recoloured = other[..., ::-1].copy()  # blue for red: the wrong colours, same layouts
    blank = np.full_like(other, 255)
    assert floor < shapes_fid(recoloured, reference) and floor < shapes_fid(blank, reference)
    # 32 px images are judged against the reference decimated to 32 px: real low-res scenes stay close
    low = shapes.downsample(other)
    assert shapes_fid(low, real) < shapes_fid(shapes.downsample(recoloured), real)
    with pytest.raises(ValueError, match="reference: 32 px images cannot judge 64 px ones"):
        shapes_fid(other, shapes.downsample(real))


def test_feature_training_is_deterministic_and_its_command_writes_loadable_weights(tmp_path, capsys):
    import jax

    from muse_mini.cli import main
    from muse_mini.evaluation.features import load_feature_net

    argv = ["train-features", "--steps", "3", "--num-examples", "32", "--batch-size", "8", "--heldout", "8",
            "--no-progress"]
    for name in ("a.eqx", "b.eqx"):
        assert main([*argv, "--out", str(tmp_path / name)]) == 0
    a, b = load_feature_net(tmp_path / "a.eqx"), load_feature_net(tmp_path / "b.eqx")
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert '"colours"' in capsys.readouterr().out
    assert main([*argv, "--steps", "0", "--out", str(tmp_path / "c.eqx")]) == 2
    assert "--steps: expected an integer >= 1" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="train one with `muse-mini train-features --out"):
        load_feature_net(tmp_path / "missing.eqx")


def test_evaluate_writes_its_report_and_reuses_its_samples(smoke_runs, tmp_path, capsys, monkeypatch):
    import json

    from muse_mini.cli import main
    from muse_mini.pipeline import Pipeline

    out = tmp_path / "eval"
    argv = ["evaluate", "--run", str(smoke_runs / "smoke"), "--out", str(out), "--samples", "8", "--seeds", "0", "1",
            "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert set(report["stages"]) == {"base", "superres", "superres_tokenizer_decoder"}  # smoke has a decoder
    for stage, splits in report["stages"].items():
        assert set(splits) == {"train", "holdout"}
        for figures in splits.values():
            assert figures["n_images"] == 16 and 0 <= figures["accuracy"] <= 1
            assert figures["shapes_fid"] > 0 and figures["diversity"] > 0
            assert set(figures["per_count"]) <= {"1", "2", "3", "4"}
            assert sum(v["n_images"] for v in figures["per_count"].values()) == 16
    for name in ("accuracy.png", "shapes_fid.png", "samples_base.png", "samples_superres.png"):
        assert (out / name).is_file()
    # unchanged inputs: the stored samples are reused, nothing is generated
    monkeypatch.setattr(Pipeline, "generate", lambda *a, **k: (_ for _ in ()).throw(AssertionError("regenerated")))
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads((out / "report.json").read_text())["stages"] == report["stages"]
    # a prompt file: its captions, sorted into the splits by the hold-out pairs
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle left of a blue square\n\nthree blue triangles\nfour green circles\n")
    monkeypatch.undo()
    assert main([*argv[:4], str(tmp_path / "eval2"), "--prompts", str(prompts), "--seeds", "0", "--no-progress"]) == 0
    splits = json.loads((tmp_path / "eval2" / "report.json").read_text())["stages"]["base"]
    assert splits["train"]["n_images"] == 2 and splits["holdout"]["n_images"] == 1
    assert splits["holdout"]["shapes_fid"] is None and splits["train"]["diversity"] is None  # 1 image, 1 seed
    assert set(splits["train"]["per_count"]) == {"2", "4"}


@pytest.mark.parametrize("extra, message", [
    (["--samples", "1"], "--samples: expected an integer >= 2"),
    (["--seeds", "0", "0"], "--seeds: expected distinct seeds"),
    (["--seeds", str(2**70)], "--seeds: expected an integer seed"),
    (["--prompts", "no/such.txt"], "--prompts: no such file"),
])
def test_evaluate_rejects_bad_flags_before_loading(tmp_path, capsys, extra, message):
    from muse_mini.cli import main

    assert main(["evaluate", "--run", str(tmp_path), "--out", str(tmp_path / "e"), *extra]) == 2
    assert message in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["evaluate", "--run", str(tmp_path), "--out", str(tmp_path / "file")]) == 2
    assert "--out: " in capsys.readouterr().err and (tmp_path / "file").read_text() == "x"


def test_a_prompt_file_must_hold_canonical_captions(tmp_path):
    from muse_mini.evaluation.report import evaluation_prompts

    path = tmp_path / "p.txt"
    path.write_text("a red circle left of a blue square\n\nthree blue triangles\n")
    prompts = evaluation_prompts(4, path)
    assert prompts.captions == {"train": ["a red circle left of a blue square"], "holdout": ["three blue triangles"]}
    path.write_text("a small red circle\na cat on a mat\n")
    with pytest.raises(ValueError, match="--prompts: line 2 of"):
        evaluation_prompts(4, path)


def test_inception_fid_is_an_extra_with_clear_offline_errors(tmp_path, monkeypatch):
    import subprocess
    import sys

    from muse_mini.evaluation import inception

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert inception.default_weights_path() == tmp_path / "torch" / "hub" / "checkpoints" / inception.FID_WEIGHTS_NAME
    with pytest.raises(FileNotFoundError, match=r"inception weights: no file at .*pt_inception-2015-12-05.*Download"):
        inception.inception_features(np.zeros((2, 64, 64, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="clip weights: no file at"):
        inception.clip_score(np.zeros((1, 64, 64, 3), np.uint8), ["x"], weights=tmp_path / "none.bin")
    # the core never imports torch: evaluation, the pipeline and the CLI load without it
    code = ("import sys, muse_mini.evaluation.report, muse_mini.evaluation.inception, muse_mini.cli; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pareto_front_keeps_exactly_the_undominated_points():
    from muse_mini.evaluation.claims import pareto_front

    rng = np.random.default_rng(3)
    points = [{"accuracy": float(a), "shapes_fid": float(f)} for a, f in rng.uniform(size=(40, 2))]
    front = pareto_front(points)
    for i, p in enumerate(points):
        beaten = any(q["accuracy"] >= p["accuracy"] and q["shapes_fid"] <= p["shapes_fid"] and q is not p
                     for q in points)
        assert (i in front) == (not beaten)
    fids = [points[i]["shapes_fid"] for i in front]
    accs = [points[i]["accuracy"] for i in front]
    assert fids == sorted(fids) and accs == sorted(accs)  # along the front, more accuracy costs FID


def test_diversity_is_compared_at_accuracies_both_schedules_reach():
    from muse_mini.evaluation.claims import diversity_at_equal_accuracy

    rows = [{"schedule": "constant", "accuracy": a, "diversity": 1 - a} for a in (0.2, 0.4, 0.6)]
    rows += [{"schedule": "linear", "accuracy": a, "diversity": 2 - a} for a in (0.3, 0.5, 0.7)]
    table = diversity_at_equal_accuracy(rows)
    assert table[0]["accuracy"] == pytest.approx(0.3) and table[-1]["accuracy"] == pytest.approx(0.6)
    for row in table:
        assert row["linear"] - row["constant"] == pytest.approx(1.0)
    assert diversity_at_equal_accuracy([r for r in rows if r["accuracy"] < 0.35] +
                                       [{"schedule": "linear", "accuracy": 0.9, "diversity": 0}]) == []
