"""A new user's own data and runs: what they mistype or bring gets one clear line, fast, or just works.

None of these tests touches the network: the hub is either declared offline or
its client is replaced by one that fails the way an unreachable hub does.
"""

import json
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from muse_mini.cli import main
from muse_mini.data.sources import load_image_text_dataset


def _one_line(err: Exception) -> str:
    msg = str(err)
    assert "\n" not in msg, msg
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__), "a chained traceback"
    return msg


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


# --------------------------------------------------------------------------
# data.source


def test_a_typo_in_a_local_path_fails_at_once_in_one_line(tmp_path, monkeypatch, offline, capsys):
    monkeypatch.chdir(tmp_path)  # "mydatta" exists nowhere and looks like a hub name
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as info:
        load_image_text_dataset("mydatta")
    assert time.perf_counter() - start < 10
    msg = _one_line(info.value)
    for needle in ("'mydatta'", "neither an existing local file or directory nor a reachable Hugging Face hub",
                   "webdataset", ".tar", "parquet", "metadata.jsonl", "metadata.csv", "save_to_disk",
                   "HF_HUB_OFFLINE"):
        assert needle in msg, (needle, msg)
    # What the user typed: `muse-mini train-tokenizer ... data.source=mydatta`.
    assert main(["train-tokenizer", "--stage", "base", "--run", str(tmp_path / "tok"), "--no-progress",
                 "data.source=mydatta"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "'mydatta'" in err, err
    assert not (tmp_path / "tok").exists()


def test_an_unreachable_hub_is_asked_once_briefly_not_retried(tmp_path, monkeypatch):
    """Online but no route to the hub: the short probe's failure is the answer; load_dataset,
    which retries for half a minute, is never called."""
    import datasets
    import huggingface_hub

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    probes = []

    def unreachable(self, repo_id, *, timeout=None, **kwargs):
        probes.append((repo_id, timeout))
        raise ConnectionError("[Errno -2] Name or service not known")

    def must_not_run(*args, **kwargs):
        raise AssertionError("load_dataset called although the hub did not answer")

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", unreachable)
    monkeypatch.setattr(datasets, "load_dataset", must_not_run)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        load_image_text_dataset("mydatta")
    msg = _one_line(info.value)
    assert "'mydatta'" in msg and "ConnectionError" in msg, msg
    assert probes == [("mydatta", probes[0][1])] and 0 < probes[0][1] <= 10


def test_the_paper_presets_empty_source_asks_for_data(tmp_path, monkeypatch):
    from muse_mini.config import get_preset

    assert get_preset("cc3m").data.source == ""  # the paper presets name no data of their own
    (tmp_path / "a.png").write_bytes(b"")  # the current directory must not be read as the data
    monkeypatch.chdir(tmp_path)
    for empty in ("", "  "):
        with pytest.raises(ValueError) as info:
            load_image_text_dataset(empty)
        msg = str(info.value)
        assert msg.startswith("data.source: the preset has no training data; set data.source=PATH"), msg
        for needle in ("webdataset", "parquet", "metadata.jsonl", "save_to_disk", "docs/real_data.md"):
            assert needle in msg, (needle, msg)


# --------------------------------------------------------------------------
# muse-mini reconstruct


def test_reconstruct_resizes_images_of_another_size(smoke_runs, tmp_path, capsys):
    from muse_mini.data.sources import resize_center_crop
    from muse_mini.models.codec import reconstruct
    from muse_mini.runs.load import load_tokenizer

    run = smoke_runs / "smoke" / "tokenizer-base"  # 32×32
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    yy, xx = np.mgrid[:96, :96]
    big = np.stack([xx * 2, yy * 2, np.full_like(xx, 120)], -1).astype(np.uint8)
    Image.fromarray(big).save(src / "big.png")
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(src / "fits.png")
    assert main(["reconstruct", "--run", str(run), "--images", str(src), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "resized 1 of 2 images" in printed and "32×32" in printed, printed
    got = np.asarray(Image.open(out / "big.png"))
    assert got.shape == (32, 32, 3) and np.asarray(Image.open(out / "fits.png")).shape == (32, 32, 3)
    want = reconstruct(load_tokenizer(run), np.asarray(resize_center_crop(Image.fromarray(big), 32))[None])[0]
    np.testing.assert_array_equal(got, want)  # the same resize as training data gets


# --------------------------------------------------------------------------
# Pipeline.from_run


def _copy_run(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock", "checkpoints"))


def _record(stage_dir, **runs):
    """Rewrite a stage's input-run record as training writes it (`train-base --tokenizer-run ...`)."""
    from muse_mini.runs.layout import relative_run_path

    path = stage_dir / "config.json"
    stored = json.loads(path.read_text())
    stored["metadata"].update({k: relative_run_path(v, stage_dir) for k, v in runs.items()})
    path.write_text(json.dumps(stored))


def test_from_run_loads_the_tokenizers_the_stages_recorded(smoke_runs, tmp_path):
    from muse_mini.pipeline import Pipeline
    from muse_mini.runs.load import load_tokenizer

    smoke, pipe_dir, elsewhere = smoke_runs / "smoke", tmp_path / "pipe", tmp_path / "tokenizers"
    for sub in ("base", "superres", "text-cache"):
        _copy_run(smoke / sub, pipe_dir / sub)
    _copy_run(smoke / "tokenizer-base", elsewhere / "my-lowres")
    _copy_run(smoke / "tokenizer-highres", elsewhere / "my-highres")
    _copy_run(smoke / "tokenizer-highres", pipe_dir / "tokenizer-base")  # a decoy at the default name
    _record(pipe_dir / "base", tokenizer_run=elsewhere / "my-lowres")
    _record(pipe_dir / "superres", tokenizer_run=elsewhere / "my-lowres",
            highres_tokenizer_run=elsewhere / "my-highres")

    pipe = Pipeline.from_run(pipe_dir, require_superres=True)
    assert pipe.tokenizer.image_size == 32  # the recorded one, not the 64px decoy
    want = load_tokenizer(elsewhere / "my-lowres")
    np.testing.assert_array_equal(pipe.tokenizer.quantizer.codebook_KxD, want.quantizer.codebook_KxD)
    assert pipe.has_superres and pipe.highres_tokenizer.image_size == 64

    _record(pipe_dir / "base", tokenizer_run=tmp_path / "moved-away")
    with pytest.raises(FileNotFoundError, match=r"moved-away \(recorded as tokenizer_run='\.\./\.\./moved-away'"):
        Pipeline.from_run(pipe_dir)


# --------------------------------------------------------------------------
# Perceptual-loss weights (tokenizer.perceptual_weights)


def _check_weights_error(err: Exception, source: str) -> str:
    msg = _one_line(err)
    for needle in ("tokenizer.perceptual_weights", "timm/vgg16.tv_in1k", "model.safetensors",
                   "download timm/vgg16.tv_in1k model.safetensors", "hf_hub_download",
                   "tokenizer.perceptual_weights=/path/to/model.safetensors", "tokenizer.perceptual=none",
                   repr(source)):
        assert needle in msg, (needle, msg)
    return msg


def test_missing_vgg16_weights_are_named_with_how_to_get_them(tmp_path, monkeypatch, offline):
    import huggingface_hub

    from muse_mini.config import get_preset
    from muse_mini.training.tokenizer import build_perceptual

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # nothing cached
    vcfg = get_preset("cc3m").tokenizer
    assert (vcfg.perceptual, vcfg.perceptual_weights) == ("vgg16", "timm/vgg16.tv_in1k")
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as info:
        build_perceptual(vcfg)
    assert time.perf_counter() - start < 5  # offline: no retries
    assert "HF_HUB_OFFLINE" in _check_weights_error(info.value, "timm/vgg16.tv_in1k")

    from muse_mini.models.perceptual import load_lpips

    missing = str(tmp_path / "vgg16.safetensors")
    with pytest.raises(FileNotFoundError) as info:
        load_lpips(missing)
    assert "no such file" in _check_weights_error(info.value, missing)


def test_unreachable_hub_for_the_vgg16_weights_is_one_probe_not_retries(tmp_path, monkeypatch):
    import huggingface_hub

    from muse_mini.models.perceptual import load_lpips

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    downloads = []

    def cache_only(repo_id, filename, *, local_files_only=False, **kwargs):
        downloads.append(local_files_only)
        if not local_files_only:
            raise AssertionError("downloaded although the hub did not answer")
        raise huggingface_hub.errors.LocalEntryNotFoundError("not in the cache")

    def unreachable(self, repo_id, *, timeout=None, **kwargs):
        assert timeout is not None and timeout <= 10
        raise ConnectionError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", cache_only)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unreachable)
    with pytest.raises(FileNotFoundError) as info:
        load_lpips("timm/vgg16.tv_in1k")
    assert "ConnectionError" in _check_weights_error(info.value, "timm/vgg16.tv_in1k")
    assert downloads == [True]
