"""`muse-mini` as a new user meets it: bad input is one line on stderr and exit code 2, never a traceback."""

import pytest

from muse_mini.cli import build_parser, main


def _fails(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"muse-mini {argv[0]}: error: "), err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize("seed", [str(2 ** 32), str(2 ** 70), "-1"])
def test_sample_refuses_a_seed_outside_the_one_range(capsys, tmp_path, seed):
    _fails(capsys, ["sample", "--run", str(tmp_path), "--prompt", "a red circle", "--out", str(tmp_path / "o"),
                    "--seed", seed], "--seed: expected an integer seed in [0, 2**32)")


@pytest.mark.parametrize("seed", [2 ** 70, -1])
def test_train_refuses_a_seed_override_outside_the_one_range(capsys, tmp_path, seed):
    _fails(capsys, ["train-base", "--run", str(tmp_path / "b"), f"base_train.seed={seed}"],
           "TrainConfig.seed: expected an integer seed in [0, 2**32)")


def test_seed_range_is_stated_once_for_the_flags_and_the_api():
    """The sampling commands' help names the range check_seed enforces, which the Python API uses too."""
    from muse_mini.config import SEED_RANGE, check_seed

    assert SEED_RANGE == (0, 2 ** 32)
    check_seed("seed", 0), check_seed("seed", 2 ** 32 - 1)
    for bad in (-1, 2 ** 32, 1.0, True):
        with pytest.raises(ValueError, match=r"seed: expected an integer seed in \[0, 2\*\*32\)"):
            check_seed("seed", bad)
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in ("sample", "edit"):
        seed = next(a for a in sub.choices[name]._actions if a.dest == "seed")
        assert "[0, 2**32)" in seed.help, (name, seed.help)


def test_negative_depth_is_named_before_any_model_is_built(capsys, tmp_path):
    _fails(capsys, ["params", "base.depth=-1"], "TransformerConfig.depth")


def test_out_naming_an_existing_file_is_refused_and_the_file_kept(capsys, tmp_path):
    out = tmp_path / "taken"
    out.write_text("keep me")
    _fails(capsys, ["sample", "--run", str(tmp_path), "--prompt", "a red circle", "--out", str(out)], str(out))
    _fails(capsys, ["shapes", "--out", str(out), "--n", "1"], str(out))
    assert out.read_text() == "keep me"


def test_a_prompts_file_that_is_not_utf8_is_named(capsys, tmp_path):
    bad = tmp_path / "prompts.txt"
    bad.write_bytes(b"a red \xff circle\n")
    _fails(capsys, ["sample", "--run", str(tmp_path), "--prompts", str(bad), "--out", str(tmp_path / "o")],
           str(bad), "UTF-8")


def test_sample_needs_some_prompt(capsys, tmp_path):
    _fails(capsys, ["sample", "--run", str(tmp_path), "--out", str(tmp_path / "o")], "--prompt")


def test_a_corrupt_run_config_is_named_in_one_line(capsys, tmp_path):
    from muse_mini.runs.layout import DONE_FILE, FINAL_FILE

    for sub in ("tokenizer-base", "base"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "config.json").write_text("{oops")
        (tmp_path / sub / DONE_FILE).write_text("{}")
        (tmp_path / sub / FINAL_FILE).write_bytes(b"")
    main(["sample", "--run", str(tmp_path), "--prompt", "a red circle", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and "config.json" in err, err


def test_reconstruct_names_a_file_that_is_not_an_image(capsys, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "x.png").write_text("not a png")
    run = tmp_path / "tok"
    run.mkdir()
    err = _fails(capsys, ["reconstruct", "--run", str(run), "--images", str(images), "--out", str(tmp_path / "o")])
    assert "--run" in err or "x.png" in err


def test_every_flag_of_every_command_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command in sub.choices.items():
        for action in command._actions:
            if action.dest != "help":
                assert action.help, f"muse-mini {name} {action.option_strings or action.dest} has no help"


def test_demo_accepts_the_recipes_as_spelled():
    parser = build_parser()
    for recipe in ("quick", "full"):
        assert parser.parse_args(["demo", "--recipe", recipe]).recipe == recipe
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--recipe", "slow"])


def test_demo_seed_sets_every_stages_training_seed_and_bad_seeds_are_named(capsys, monkeypatch, tmp_path):
    import muse_mini.cli.demo as demo_cli
    from muse_mini.config import TRAIN_SECTIONS, get_recipe, seed_overrides

    _fails(capsys, ["demo", "--seed", str(2 ** 70), "--out", str(tmp_path / "d")], "--seed")
    seen = {}
    monkeypatch.setattr(demo_cli, "run_demo", lambda recipe, out, **kw: seen.update(kw, recipe=recipe))
    assert main(["demo", "--recipe", "quick", "--seed", "7", "--out", str(tmp_path / "d"), "base.depth=3"]) in (0, None)
    assert seen["seed"] == 7 and seen["overrides"] == ["base.depth=3"]
    cfg = get_recipe("quick", [*seed_overrides(7), "base_train.seed=1"])  # later overrides win
    assert {s: getattr(cfg, s).seed for s in TRAIN_SECTIONS} == {**dict.fromkeys(TRAIN_SECTIONS, 7), "base_train": 1}
    assert cfg.data == get_recipe("quick").data  # the same Shapes world on every seed
