"""scripts/recipe_seeds.py: a recipe's accuracy over training seeds, as mean, spread and range."""

import json
import statistics
from pathlib import Path

import pytest
from script_module import load_script

@pytest.fixture(scope="module")
def script():
    return load_script("recipe_seeds")


def _run(root: Path, seed: int, base: float, superres: float, seconds: float) -> Path:
    run = root / f"quick-seed{seed}"
    (run / "samples").mkdir(parents=True)
    results = {"base": {"train": {"accuracy": base}, "holdout": {"accuracy": base / 2}},
               "superres": {"train": {"accuracy": superres}, "holdout": {"accuracy": superres / 2}}}
    (run / "samples" / "accuracy.json").write_text(json.dumps({"key": {}, "results": results}))
    (run / "timings.json").write_text(json.dumps({"training_total": seconds}))
    return run


def test_summary_matches_statistics_and_the_table_shows_every_seed(script, tmp_path):
    values = {0: (0.62, 0.60, 1200.0), 1: (0.55, 0.50, 1500.0), 2: (0.70, 0.66, 1320.0)}
    per_seed = {s: script.seed_row(_run(tmp_path, s, *v)) for s, v in values.items()}
    summary = script.summarise(per_seed)
    base = [v[0] for v in values.values()]
    assert summary["base/train"]["mean"] == pytest.approx(statistics.fmean(base))
    assert summary["base/train"]["std"] == pytest.approx(statistics.stdev(base))
    assert (summary["base/train"]["min"], summary["base/train"]["max"]) == (0.55, 0.70)
    assert summary["superres/holdout"]["mean"] == pytest.approx(statistics.fmean(v[1] / 2 for v in values.values()))
    assert summary["training_minutes"]["max"] == pytest.approx(25.0)
    text = script.table(per_seed, summary)
    for seed in values:
        assert f"| {seed} | " in text
    assert "| mean | 62.3% |" in text and "| min | 55.0% |" in text


def test_a_single_seed_has_no_spread(script, tmp_path):
    per_seed = {3: script.seed_row(_run(tmp_path, 3, 0.5, 0.4, 600.0))}
    assert script.summarise(per_seed)["base/train"]["std"] == 0.0


def test_a_resumed_demo_keeps_the_times_its_finished_stages_trained_in():
    from muse_mini.demo import keep_trained_times

    stored = {"tokenizer-base": 170.0, "base": 900.0, "text_to_image_total": 1070.0, "tokenizer-highres": 60.0,
              "superres": 400.0, "training_total": 1530.0, "eval_base": 6.0}
    # everything was finished: the seconds-long skips give way to the stored times and totals
    resumed = {"shapes": 1.0, "tokenizer-base": 0.2, "base": 0.3, "text_to_image_total": 2.0,
               "tokenizer-highres": 0.1, "superres": 0.2, "training_total": 3.0, "eval_base": 7.0}
    keep_trained_times(resumed, stored, set(stored) - {"text_to_image_total", "training_total", "eval_base"})
    assert resumed == {**stored, "shapes": 1.0, "eval_base": 7.0}
    # super-res trained in this call: its own time stays, and each total swaps the
    # skips for the stored times of the stages it covers
    partial = {"tokenizer-base": 0.2, "base": 0.3, "text_to_image_total": 2.0, "tokenizer-highres": 0.1,
               "superres": 410.0, "training_total": 415.0}
    keep_trained_times(partial, stored, {"tokenizer-base", "base", "tokenizer-highres"})
    assert partial == {"tokenizer-base": 170.0, "base": 900.0, "text_to_image_total": 1071.5,
                       "tokenizer-highres": 60.0, "superres": 410.0, "training_total": 1544.4}
    # only the base stage retrained (a recipe change): the text-to-image total keeps the tokenizer's time
    retrained = {"tokenizer-base": 0.2, "base": 1300.0, "text_to_image_total": 1301.0, "tokenizer-highres": 0.1,
                 "superres": 0.2, "training_total": 1302.0}
    keep_trained_times(retrained, stored, {"tokenizer-base", "tokenizer-highres", "superres"})
    assert retrained["text_to_image_total"] == 1301.0 - 0.2 + 170.0
    assert retrained["training_total"] == round(1302.0 - 0.5 + 630.0, 1)


@pytest.mark.parametrize("argv", [
    ["--seeds", "0", "1", "base.depth=4", "--sampler.steps=8"],
    ["base.depth=4", "--seeds", "0", "1", "--sampler.steps=8"],
    ["--seeds", "0", "1", "--", "base.depth=4", "--sampler.steps=8"],
])
def test_overrides_after_seeds_stay_overrides(script, argv):
    args = script.parse_args(["--recipe", "quick", *argv])
    assert args.seeds == [0, 1]
    assert args.overrides == ["base.depth=4", "--sampler.steps=8"]


def test_repeated_seeds_are_refused_by_name(script, capsys):
    with pytest.raises(SystemExit):
        script.parse_args(["--seeds", "1", "1"])
    assert "--seeds: expected distinct seeds" in capsys.readouterr().err
