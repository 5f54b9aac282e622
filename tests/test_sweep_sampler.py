"""scripts/sweep_sampler.py: the settings it parses and its summary over several runs."""

import argparse
import json

import pytest
from script_module import load_script

@pytest.fixture(scope="module")
def script():
    return load_script("sweep_sampler")


def test_a_try_setting_takes_the_sampler_config_field_types(script):
    setting = script._setting("steps=24,choice_temperature=2,guidance=1.5,guidance_schedule=constant")
    assert setting == {"steps": 24, "choice_temperature": 2.0, "guidance": 1.5, "guidance_schedule": "constant"}
    assert isinstance(setting["steps"], int) and isinstance(setting["choice_temperature"], float)


@pytest.mark.parametrize("text, named", [("stepz=24", "stepz"), ("steps=many", "steps")])
def test_a_bad_try_setting_is_an_argparse_error_naming_the_field(script, text, named):
    with pytest.raises(argparse.ArgumentTypeError, match=named):
        script._setting(text)


def test_the_summary_gives_each_settings_mean_and_worst_run(script):
    table = {
        json.dumps({}): {"runs/a": {"train": 0.60, "holdout": 0.50}, "runs/b": {"train": 0.70, "holdout": 0.40}},
        json.dumps({"steps": 24}): {"runs/a": {"train": 0.66}, "runs/b": {"train": 0.58}},
    }
    rows = script._summary(table)
    assert [r["change"] for r in rows] == [{}, {"steps": 24}]
    assert rows[0]["train"]["mean"] == pytest.approx(0.65) and rows[0]["train"]["min"] == 0.60
    assert rows[0]["holdout"] == {"mean": pytest.approx(0.45), "min": 0.40, "by_run": [0.50, 0.40]}
    assert rows[1]["train"]["by_run"] == [0.66, 0.58] and "holdout" not in rows[1]
