"""The whole cascade on a smoke-trained pipeline: shapes, determinism, errors, CLI."""

import equinox as eqx
import numpy as np
import pytest
from PIL import Image

from muse_mini.cli import main
from muse_mini.pipeline import Pipeline


@pytest.fixture(scope="module")
def pipe(smoke_runs):
    return Pipeline.from_run(smoke_runs / "smoke")


def test_generate_gives_64px_by_default_and_32px_for_base(pipe):
    gen = pipe.generate(["a red circle", "two blue squares"], num_per_prompt=2, seed=0)
    assert gen.images.shape == (4, 64, 64, 3) and gen.images.dtype == np.uint8
    assert gen.base_images.shape == (4, 32, 32, 3)
    assert gen.prompts == ["a red circle"] * 2 + ["two blue squares"] * 2
    traj = gen.base_trajectory
    assert traj.tokens_BxTxN.shape == (4, pipe.cfg.sampler.steps, 64)
    assert gen.superres_trajectory.tokens_BxTxN.shape == (4, pipe.cfg.superres_sampler.steps, 256)
    # every token is decided at the end
    assert not np.any(np.asarray(traj.tokens_BxN) == pipe.base.mask_id)
    base_only = pipe.generate(["a red circle"], stage="base", seed=0)
    assert base_only.images.shape == (1, 32, 32, 3) and base_only.superres_trajectory is None


def test_toy_superres_sees_the_decoded_base_image(pipe):
    """lowres_input="pixels": the super-res model takes the base tokens and draws them with its
    frozen copy of the base tokenizer's decoder: the very image the pipeline shows for them."""
    assert pipe.superres.lowres_input == "pixels"
    gen = pipe.generate(["a red circle"], stage="base", seed=0)
    tokens = np.asarray(gen.base_trajectory.tokens_BxN)
    drawn = eqx.filter_jit(lambda model, ids: model.lowres_pixels(ids))(pipe.superres, tokens)
    np.testing.assert_array_equal(drawn, gen.base_images)


def _copy_stages(smoke_runs, dst, subs):
    """A private copy of some smoke stages, so a test that resumes them leaves the shared ones alone."""
    import shutil

    dst.mkdir()
    for sub in subs:
        shutil.copytree(smoke_runs / "smoke" / sub, dst / sub)
    for lock in dst.rglob(".lock"):
        lock.unlink()
    return dst


def test_a_finished_stage_extends_with_more_steps(smoke_runs, tmp_path):
    """`steps` may grow on resume (the trainer's contract): the stage reloads its data."""
    import json

    from muse_mini.config import get_preset
    from muse_mini.notebook import SMOKE_OVERRIDES
    from muse_mini.training.superres import train_superres

    pipeline = _copy_stages(smoke_runs, tmp_path / "pipe", ("tokenizer-base", "tokenizer-highres", "superres"))
    cfg = get_preset("toy", [*SMOKE_OVERRIDES, "superres_train.steps=12"])
    train_superres(cfg, pipeline / "superres", tokenizer_run=pipeline / "tokenizer-base",
                   highres_tokenizer_run=pipeline / "tokenizer-highres", progress=False)
    assert json.loads((pipeline / "superres" / "DONE.json").read_text())["step"] == 12


def test_the_64px_output_is_decoded_by_the_finetuned_decoder(pipe, smoke_runs):
    """§2.5: decoder/ replaces the high-res tokenizer's decoder; its encoder and codebook are the
    tokenizer's, so the super-res tokens keep their meaning."""
    import jax

    from muse_mini.runs.load import check_finetuned_from, load_tokenizer
    from muse_mini.models.codec import decode_tokens

    runs = smoke_runs / "smoke"
    tokenizer, decoder = load_tokenizer(runs / "tokenizer-highres"), load_tokenizer(runs / "decoder")
    same = lambda a, b: all(  # noqa: E731
        np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
    assert same(pipe.highres_tokenizer, decoder)
    assert same(decoder.encoder, tokenizer.encoder) and same(decoder.quantizer, tokenizer.quantizer)
    top = pipe.cfg.highres_tokenizer.channel_mult[-1]
    assert decoder.decoder.conv_in.weight.shape[0] == pipe.cfg.decoder.channels * top
    assert tokenizer.decoder.conv_in.weight.shape[0] == pipe.cfg.highres_tokenizer.decoder_channels * top
    gen = pipe.generate(["a red circle"], seed=0)
    np.testing.assert_array_equal(
        gen.images, decode_tokens(decoder, np.asarray(gen.superres_trajectory.tokens_BxN)))
    with pytest.raises(ValueError, match=r"decoder/config.json: expected a decoder finetuned from .*tokenizer-base"):
        check_finetuned_from(runs / "decoder", runs / "tokenizer-base")


def test_the_decoder_settings_do_not_void_the_transformer_runs(smoke_runs, tmp_path):
    """The decoder is finetuned after both transformers (§2.5): resizing it must not make their
    finished runs refuse to load (ConfigMismatchError)."""
    import equinox as eqx
    import jax

    from muse_mini.training.base import train_base
    from muse_mini.config import get_preset
    from muse_mini.notebook import SMOKE_OVERRIDES
    from muse_mini.training.superres import train_superres

    from muse_mini.runs.load import load_base, load_superres

    runs = _copy_stages(smoke_runs, tmp_path / "pipe", ("tokenizer-base", "tokenizer-highres", "base", "superres"))
    done = {sub: (runs / sub / "DONE.json").read_bytes() for sub in ("base", "superres")}
    cfg = get_preset("toy", [*SMOKE_OVERRIDES, "decoder.channels=32", "decoder_train.lr=0.5"])
    base = train_base(cfg, runs / "base", tokenizer_run=runs / "tokenizer-base", progress=False)
    superres = train_superres(cfg, runs / "superres", tokenizer_run=runs / "tokenizer-base",
                              highres_tokenizer_run=runs / "tokenizer-highres", progress=False)
    # Both finished runs were loaded as they were: not refused, not retrained.
    assert {sub: (runs / sub / "DONE.json").read_bytes() for sub in done} == done
    for trained, (stored, _) in ((base, load_base(runs / "base")), (superres, load_superres(runs / "superres"))):
        leaves = jax.tree_util.tree_leaves(eqx.filter(stored, eqx.is_array))
        assert leaves and all(np.array_equal(x, y) for x, y in zip(
            jax.tree_util.tree_leaves(eqx.filter(trained, eqx.is_array)), leaves))


def test_a_run_written_before_the_edit_section_still_resumes(smoke_runs, tmp_path):
    """``edit`` is read at sampling time only: a finished stage whose config.json lacks it is kept, and the
    section is recorded."""
    import json

    from muse_mini.config import get_preset
    from muse_mini.notebook import SMOKE_OVERRIDES
    from muse_mini.training.base import train_base

    runs = _copy_stages(smoke_runs, tmp_path / "pipe", ("tokenizer-base", "base"))
    config = json.loads((runs / "base" / "config.json").read_text())
    del config["metadata"]["config"]["edit"]
    (runs / "base" / "config.json").write_text(json.dumps(config))
    done = (runs / "base" / "DONE.json").read_bytes()
    cfg = get_preset("toy", SMOKE_OVERRIDES)
    train_base(cfg, runs / "base", tokenizer_run=runs / "tokenizer-base", progress=False)
    assert (runs / "base" / "DONE.json").read_bytes() == done
    assert json.loads((runs / "base" / "config.json").read_text())["metadata"]["config"]["edit"]["guidance"] == 0.0


def test_same_seed_same_images_other_seed_differs(pipe):
    # A hot temperature: a barely trained model is too sure of the background token.
    kw = dict(num_per_prompt=2, stage="base", temperature=5.0)
    a = pipe.generate(["a green triangle"], seed=3, **kw)
    b = pipe.generate(["a green triangle"], seed=3, **kw)
    c = pipe.generate(["a green triangle"], seed=4, **kw)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(np.asarray(a.base_trajectory.tokens_BxN), np.asarray(c.base_trajectory.tokens_BxN))


def test_negative_prompt_replaces_the_unconditional_logits(pipe):
    kw = dict(stage="base", seed=1, guidance=3.0, guidance_schedule="constant")
    plain = pipe.generate(["a large circle"], **kw)
    neg = pipe.generate(["a large circle"], negative_prompt="a large red circle", **kw)
    # A barely trained model may still pick the same tokens; the guided logits,
    # seen through the confidences the sampler ranked, must differ.
    conf_plain = np.asarray(plain.base_trajectory.confidence_BxTxN)
    conf_neg = np.asarray(neg.base_trajectory.confidence_BxTxN)
    finite = np.isfinite(conf_plain) & np.isfinite(conf_neg)
    assert finite.any() and not np.allclose(conf_plain[finite], conf_neg[finite])


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompts=[]), "prompts: expected at least one prompt"),
    (dict(prompts=["a red circle", "  "]), "prompts[1] is empty"),
    (dict(steps=0), "steps"),
    (dict(temperature=0.0), "temperature"),
    (dict(guidance=float("nan")), "guidance"),
    (dict(top_k=0), "top_k"),
    (dict(num_per_prompt=0), "num_per_prompt"),
    (dict(stage="giant"), "stage"),
    (dict(temprature=1.0), "unknown sampler options"),
    (dict(prompts=5), "prompts: expected a string or a list of strings, got int"),
    (dict(prompts=None), "prompts: expected a string or a list of strings, got NoneType"),
    (dict(prompts=["a red circle", 3]), "prompts[1]: expected a string, got int"),
    (dict(seed="a"), "seed: expected an integer"),
    (dict(seed=-1), "seed: expected an integer seed in [0, 2**32)"),
    (dict(seed=2**32), "seed: expected an integer seed in [0, 2**32)"),
    (dict(seed=1.5), "seed: expected an integer"),
    (dict(negative_prompt=""), "negative_prompt: expected None or a non-empty string"),
    (dict(negative_prompt=["a"]), "negative_prompt: expected None or a non-empty string"),
    (dict(superres_sampler={"steps": 2}), "superres_sampler: expected a SamplerConfig"),
])
def test_bad_arguments_name_themselves(pipe, kwargs, message):
    prompts = kwargs.pop("prompts", ["a red circle"])
    with pytest.raises(ValueError) as err:
        pipe.generate(prompts, **kwargs)
    assert message in str(err.value)


def test_a_batch_is_padded_to_a_power_of_two_and_sliced(pipe):
    """Three prompts run as a batch of four (the last row repeated): the same images as asking
    for that fourth row explicitly, without it."""
    kw = dict(seed=5, temperature=5.0)
    three = pipe.generate(["a red circle", "two blue squares", "a green triangle"], **kw)
    four = pipe.generate(["a red circle", "two blue squares", "a green triangle", "a green triangle"], **kw)
    assert three.images.shape == (3, 64, 64, 3) and three.base_images.shape == (3, 32, 32, 3)
    assert len(three.prompts) == 3
    assert three.base_trajectory.tokens_BxTxN.shape == (3, pipe.cfg.sampler.steps, 64)
    assert three.superres_trajectory.tokens_BxN.shape == (3, 256)
    np.testing.assert_array_equal(three.images, four.images[:3])
    np.testing.assert_array_equal(np.asarray(three.base_trajectory.confidence_BxTxN),
                                  np.asarray(four.base_trajectory.confidence_BxTxN)[:3])


def test_padded_batch_sizes():
    from muse_mini.pipeline import padded_batch

    assert [padded_batch(n) for n in (1, 2, 3, 5, 8, 9, 31, 32, 33, 64, 65, 192)] == \
        [1, 2, 4, 8, 8, 16, 32, 32, 64, 64, 96, 192]
    with pytest.raises(ValueError, match="batch: expected an integer >= 1"):
        padded_batch(0)


def test_new_prompts_leave_the_run_directory_alone(pipe, smoke_runs):
    """The run's text-cache is read, never rewritten, by sampling; new prompts stay in memory."""
    cache_dir = smoke_runs / "smoke" / "text-cache"
    before = {p.name: p.read_bytes() for p in cache_dir.iterdir()}
    known = len(pipe.text_encoder)
    pipe.generate(["a prompt the smoke run never saw"], stage="base", seed=0)
    pipe.generate(["a prompt the smoke run never saw"], stage="base", seed=0)
    assert {p.name: p.read_bytes() for p in cache_dir.iterdir()} == before
    assert len(pipe.text_encoder) == known + 1 and pipe.text_encoder.read_only


def test_from_run_on_an_empty_directory_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer-base"):
        Pipeline.from_run(tmp_path)


def test_cli_sample_writes_one_png_per_prompt_and_sample(smoke_runs, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n\nthree green triangles\n")
    out = tmp_path / "out"
    assert main(["sample", "--run", str(smoke_runs / "smoke"), "--prompts", str(prompts),
                 "--out", str(out), "--num-per-prompt", "2", "--steps", "4"]) == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["0000_0.png", "0000_1.png", "0001_0.png", "0001_1.png"]
    assert np.asarray(Image.open(out / "0000_0.png")).shape == (64, 64, 3)
    assert main(["sample", "--run", str(smoke_runs / "smoke"), "--prompts", str(prompts),
                 "--out", str(tmp_path / "b"), "--stage", "base"]) == 0
    assert np.asarray(Image.open(tmp_path / "b" / "0001_0.png")).shape == (32, 32, 3)


def test_cli_errors_are_one_line(smoke_runs, tmp_path, capsys):
    assert main(["sample", "--run", str(smoke_runs / "smoke"), "--prompts", str(tmp_path / "none.txt"),
                 "--out", str(tmp_path)]) == 2
    assert "--prompts: no such file" in capsys.readouterr().err
    assert main(["train-base", "--run", str(tmp_path / "base")]) == 2
    assert "no finished tokenizer run" in capsys.readouterr().err


def test_demo_reuses_its_evaluation_only_while_nothing_changed(pipe, smoke_runs, tmp_path):
    import dataclasses
    import json
    import shutil

    from muse_mini.demo import _cached_evaluation, _evaluation_key

    for sub in ("base", "superres"):
        (tmp_path / sub).mkdir()
        shutil.copy(smoke_runs / "smoke" / sub / "DONE.json", tmp_path / sub / "DONE.json")
    (tmp_path / "samples").mkdir()
    path = tmp_path / "samples" / "accuracy.json"
    assert _cached_evaluation(path, _evaluation_key(pipe, tmp_path)) is None  # nothing stored yet
    report = {"key": _evaluation_key(pipe, tmp_path), "results": {"base": {"accuracy": 0.5}}}
    path.write_text(json.dumps(report))
    assert _cached_evaluation(path, _evaluation_key(pipe, tmp_path))["results"] == {"base": {"accuracy": 0.5}}
    # another sampler default, or a retrained stage, makes the stored figures stale
    other = dataclasses.replace(pipe, cfg=dataclasses.replace(
        pipe.cfg, sampler=dataclasses.replace(pipe.cfg.sampler, steps=pipe.cfg.sampler.steps + 1)))
    assert _cached_evaluation(path, _evaluation_key(other, tmp_path)) is None
    (tmp_path / "superres" / "DONE.json").write_text(json.dumps({"step": 1, "finished_at": "later"}))
    assert _cached_evaluation(path, _evaluation_key(pipe, tmp_path)) is None
    path.write_text("{not json")
    assert _cached_evaluation(path, _evaluation_key(pipe, tmp_path)) is None


def test_a_superres_run_without_its_low_res_decoder_is_refused_in_one_line(smoke_runs, tmp_path):
    """A pixel-input super-res run saved before the model held its low-res decoder says how to retrain."""
    from muse_mini.runs.checkpoint import CheckpointError
    from muse_mini.runs.load import load_superres
    from muse_mini.runs.weights import save_model

    runs = _copy_stages(smoke_runs, tmp_path / "pipe", ("superres",))
    model, _ = load_superres(runs / "superres")
    assert model.lowres_input == "pixels"
    save_model(runs / "superres", eqx.tree_at(lambda m: m.lowres_decoder, model, None), metadata={})
    with pytest.raises(CheckpointError, match=r"trained before the super-res model held its own low-res "
                                              r"decoder.*delete .*superres and rerun `make demo`") as err:
        load_superres(runs / "superres")
    assert "\n" not in str(err.value)
