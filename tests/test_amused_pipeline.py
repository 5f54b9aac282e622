"""aMUSEd through muse_mini: one sampling step against diffusers' scheduler with the same noise, and
generation, inpainting, outpainting and mask-free editing on folders laid out exactly like amused/amused-256,
from the Python API and the CLI. The fixtures are tiny random models made once with diffusers 0.33.1
(``scripts/make_amused_fixtures.py``)."""

import dataclasses
import json
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from muse_mini.amused import AMUSED_SAMPLER, AmusedPipeline, load_any, resolve_amused
from muse_mini.cli import main
from muse_mini.decoding.sampler import DecodeState, _step_with_noise
from muse_mini.decoding.spec import DecodeSpec
from muse_mini.models.codec import encode_images

FIXTURES = Path(__file__).parent / "fixtures" / "amused"
LAYOUTS = ("tiny-256", "tiny-512")


@pytest.fixture(scope="module", params=LAYOUTS)
def pipe(request):
    return AmusedPipeline.from_pretrained(FIXTURES / request.param)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_one_sampling_step_picks_the_tokens_diffusers_scheduler_picks_with_the_same_noise(layout):
    """AmusedScheduler.step at step 3 of 12 (cosine keep count, choice temperature linspace(2, 0)), its two
    random draws replaced by recorded Gumbel noise: the sampled tokens and the re-masked ones must agree."""
    ref = np.load(FIXTURES / f"{layout}.npz")
    steps, step, mask_id = int(ref["step_steps"]), int(ref["step_index"]), int(ref["step_mask_token_id"])
    sample_N = ref["step_sample"]
    N = sample_N.shape[0]
    spec = DecodeSpec.from_sampler(dataclasses.replace(AMUSED_SAMPLER, steps=steps), mask_id)
    masked_N = sample_N == mask_id
    # Text-to-image: every token was masked at the start, so the keep count is ⌊N·cos(π/2·(s+1)/T)⌋.
    state = DecodeState(jnp.asarray(sample_N)[None], jnp.asarray(masked_N)[None], jnp.asarray([N], jnp.int32))
    gumbel = np.concatenate([ref["step_sample_gumbel"], ref["step_choice_gumbel"][:, None]], axis=-1)[None]
    new, out = _step_with_noise(jnp.asarray(ref["step_logits"])[None], state, step, jnp.asarray(gumbel), spec=spec,
                                temperature=jnp.float32(1.0), choice_temperature=jnp.float32(2.0))
    np.testing.assert_array_equal(np.asarray(out.sampled_BxN[0]), ref["step_pred_original"])
    np.testing.assert_array_equal(np.asarray(new.tokens_BxN[0]), ref["step_prev_sample"])
    assert 0 < int(new.mask_BxN.sum()) < int(masked_N.sum())  # a real step: some committed, some re-masked


def test_generate_inpaint_outpaint_and_edit_run_through_muse_minis_paths(pipe):
    side, grid = pipe.tokenizer.image_size, pipe.tokenizer.grid
    gen = pipe.generate(["a red circle", "two green squares"], num_per_prompt=2, seed=0)
    assert gen.images.shape == (4, side, side, 3) and gen.images.dtype == np.uint8
    assert gen.base_trajectory.tokens_BxTxN.shape == (4, AMUSED_SAMPLER.steps, grid * grid)
    assert int(np.asarray(gen.base_trajectory.tokens_BxN).max()) < pipe.base.vocab_size  # no [MASK] left
    again = pipe.generate(["a red circle", "two green squares"], num_per_prompt=2, seed=0)
    np.testing.assert_array_equal(gen.images, again.images)

    mask = np.zeros((side, side), bool)
    mask[: side // 2, : side // 2] = True
    inpainted = pipe.inpaint(gen.images[0], mask, "a blue square", seed=1)
    tokens_before = encode_images(pipe.tokenizer, gen.images[:1]).reshape(-1)
    kept = ~np.asarray(inpainted.token_mask[0])
    assert kept.sum() == grid * grid * 3 // 4  # the top-left quarter regenerated, the rest fixed (§3.3.1)
    np.testing.assert_array_equal(np.asarray(inpainted.base_trajectory.tokens_BxN[0])[kept], tokens_before[kept])

    wider = pipe.outpaint(gen.images[0], "a red circle", extend="right", by=side // 2, seed=0)
    assert wider.images.shape[1:] == (side, side + side // 2, 3)

    edited = pipe.edit(gen.images[0], "a yellow circle", seed=0, iterations=3)
    assert edited.images.shape == (1, side, side, 3)


def test_the_decoding_viewer_shows_an_amused_decoding(pipe):
    from muse_mini.models.codec import decode_tokens
    from muse_mini.viz.widgets import DecodingViewer, trajectory_frames

    gen = pipe.generate(["a red circle"], seed=0)
    frames = trajectory_frames(gen.base_trajectory, lambda ids: decode_tokens(pipe.tokenizer, ids[None])[0])
    viewer = DecodingViewer(frames, gen.base_trajectory)
    viewer.slider.value = 2
    assert viewer.step == 2 and frames.shape[0] == AMUSED_SAMPLER.steps


def test_the_cli_samples_and_edits_from_an_amused_folder(tmp_path, capsys):
    folder = FIXTURES / "tiny-256"
    assert main(["sample", "--run", str(folder), "--prompt", "a red circle", "--out", str(tmp_path / "s"),
                 "--steps", "4", "--choice-anneal", "amused"]) == 0
    lines = (tmp_path / "s" / "index.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["prompt"] == "a red circle" and (tmp_path / "s" / "0000_0.png").is_file()
    image = tmp_path / "s" / "0000_0.png"
    assert main(["edit", "--run", str(folder), "--image", str(image), "--prompt", "a blue circle",
                 "--out", str(tmp_path / "e.png"), "--iterations", "2"]) == 0
    assert (tmp_path / "e.png").is_file()
    assert main(["sample", "--run", str(folder), "--prompt", "x", "--out", str(tmp_path / "t"), "--ema"]) == 2
    assert "ema:" in capsys.readouterr().err


def test_wrong_folders_and_missing_files_are_refused_in_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an aMUSEd folder"):
        resolve_amused(tmp_path)
    copy = tmp_path / "amused"
    shutil.copytree(FIXTURES / "tiny-256", copy)
    shutil.rmtree(copy / "vqvae")
    with pytest.raises(FileNotFoundError, match=r"lacks vqvae/"):
        AmusedPipeline.from_pretrained(copy)
    with pytest.raises(FileNotFoundError, match="Hub is offline"):
        AmusedPipeline.from_pretrained("amused/amused-256")
    # A folder that is not aMUSEd's goes to Muse's loader, which names what it expected.
    with pytest.raises(FileNotFoundError):
        load_any(tmp_path / "nothing-here")


def test_the_cpu_benchmark_runs_at_the_fixture_size():
    import subprocess
    import sys

    bench = Path(__file__).parents[1] / "benchmarks" / "bench_amused.py"
    out = subprocess.run([sys.executable, str(bench), "--size", "tiny", "--repeats", "1", "--steps", "3"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "3 steps, 32×32 px" in out.stdout and "text to pixels" in out.stdout


def test_a_hub_id_downloads_only_the_files_the_loaders_read(monkeypatch, tmp_path):
    """Online, a repo id goes through huggingface_hub.snapshot_download; the patterns asked for must fetch every
    file the loaders read from amused/amused-256's layout, and nothing else (no .bin, no fp16 copies)."""
    import fnmatch

    import huggingface_hub

    from muse_mini.amused import HUB_FILES

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hub_repo = FIXTURES / "tiny-256"
    files = [str(p.relative_to(hub_repo)) for p in hub_repo.rglob("*") if p.is_file()]
    files += ["transformer/diffusion_pytorch_model.fp16.safetensors", "text_encoder/pytorch_model.bin"]

    def snapshot_download(repo_id, allow_patterns):
        assert repo_id == "amused/amused-256"
        local = tmp_path / "snapshot"
        for name in files:
            if any(fnmatch.fnmatch(name, pattern) for pattern in allow_patterns):
                source = hub_repo / name
                (local / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(source, local / name) if source.exists() else (local / name).write_bytes(b"")
        return str(local)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    folder = resolve_amused("amused/amused-256")
    fetched = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert fetched == {f for f in files if "fp16" not in f and not f.endswith(".bin")}
    assert not [p for p in HUB_FILES if not any(fnmatch.fnmatch(f, p) for f in fetched)]
    assert AmusedPipeline.from_pretrained("amused/amused-256").base.seq_len == 64
