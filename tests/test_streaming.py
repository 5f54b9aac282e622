"""Streaming data: per-process shards, exact resume, token shards, bad samples."""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import tarfile
import warnings
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import pytest

from muse_mini.config import get_recipe
from muse_mini.data.image_shards import DataError, DataWarning, ImageBatches, WebDatasetImages
from muse_mini.data.stream import Prefetch, ShardedOrder, process_shards
from muse_mini.data.token_shards import TokenShards, write_manifest, write_shard
from muse_mini.data.webdataset import Shard, expand_shards

sys.path.insert(0, str(Path(__file__).parent))
from _real_data import write_photo_webdataset  # noqa: E402

COUNTS = [12, 12, 12, 12, 12, 12, 12, 12]


def epoch_pairs(order: ShardedOrder, epoch: int) -> set[tuple[int, int]]:
    steps = range(epoch * order.steps_per_epoch, (epoch + 1) * order.steps_per_epoch)
    pairs = [tuple(p) for s in steps for p in order(s).tolist()]
    assert len(pairs) == len(set(pairs)), "an example was read twice in one epoch"
    return set(pairs)


# --------------------------------------------------------------------------- order


@pytest.mark.parametrize("processes", [2, 4])
def test_process_shares_are_disjoint_and_cover_the_data(processes):
    orders = [ShardedOrder(COUNTS, rows=6, seed=3, process_index=p, process_count=processes, window=2)
              for p in range(processes)]
    assert sorted(s for o in orders for s in o.shards) == list(range(len(COUNTS)))
    for epoch in (0, 1):
        shares = [epoch_pairs(o, epoch) for o in orders]
        for a in range(processes):
            for b in range(a + 1, processes):
                assert not shares[a] & shares[b]
        everything = {(s, r) for s, c in enumerate(COUNTS) for r in range(c)}
        assert set().union(*shares) == everything
    # every process takes the same number of steps, so none waits on a collective
    assert len({o.steps_per_epoch for o in orders}) == 1


def test_uneven_shares_take_the_smallest_number_of_steps():
    orders = [ShardedOrder([10, 5, 10], rows=4, seed=0, process_index=p, process_count=2) for p in range(2)]
    # process 0 holds shards 0 and 2 (20 examples, 5 batches), process 1 shard 1 (5, 1 batch)
    assert [o.steps_per_epoch for o in orders] == [1, 1]
    with pytest.raises(ValueError, match="process 1's shards hold 3 examples"):
        ShardedOrder([10, 3, 10], rows=4, seed=0, process_index=0, process_count=2)


def test_order_is_a_function_of_seed_and_step():
    a = ShardedOrder(COUNTS, rows=5, seed=1, window=3)
    b = ShardedOrder(COUNTS, rows=5, seed=1, window=3)
    for step in (0, 7, 19, 40, 3):  # any order of calls, as a resumed run makes
        np.testing.assert_array_equal(a(step), b(step))
    assert not np.array_equal(a(0), ShardedOrder(COUNTS, rows=5, seed=2, window=3)(0))
    assert not np.array_equal(a(0), a(a.steps_per_epoch))  # each epoch is reshuffled


def test_the_shuffle_buffer_is_a_window_of_shards():
    order = ShardedOrder(COUNTS, rows=12, seed=0, window=2)
    first = {int(s) for step in range(2) for s in order(step)[:, 0]}  # the first window's 24 examples
    assert len(first) == 2
    wide = ShardedOrder(COUNTS, rows=12, seed=0, window=8)
    assert len({int(s) for s in wide(0)[:, 0]}) > 2


def test_too_few_shards_for_the_processes_is_a_clear_error():
    with pytest.raises(ValueError, match="2 shard.*4 processes"):
        process_shards(2, 0, 4)


def test_prefetch_returns_what_a_direct_call_would():
    calls = []

    def fn(step):
        calls.append(step)
        return step * 10

    fetch = Prefetch(fn)
    assert [fetch(s) for s in (0, 1, 2, 7, 8)] == [0, 10, 20, 70, 80]
    fetch.close()


# --------------------------------------------------------------------------- webdataset


@pytest.fixture(scope="module")
def wds(tmp_path_factory):
    root = tmp_path_factory.mktemp("wds")
    write_photo_webdataset(root, 30, shard_size=10, corrupt=(3,), uncaptioned=(14,))
    return root


def test_written_shards_follow_img2dataset_naming(wds):
    assert [p.name for p in expand_shards(wds)] == ["00000.tar", "00001.tar", "00002.tar"]
    with tarfile.open(wds / "00001.tar") as tar:
        names = tar.getnames()
    assert names[:3] == ["000010000.jpg", "000010000.txt", "000010000.json"]
    assert json.loads((wds / "00001_stats.json").read_text())["successes"] == 10
    assert (wds / "00001.parquet").is_file()
    assert len(Shard(wds / "00002.tar")) == 10
    assert expand_shards(f"{wds}/{{00001..00002}}.tar") == [wds / "00001.tar", wds / "00002.tar"]


def test_bad_samples_are_skipped_with_a_warning_naming_shard_and_key(wds):
    source = WebDatasetImages(wds)
    reader = ImageBatches(source, None, 64, workers=2)
    with pytest.warns(DataWarning, match=r"shard 00000.tar key 000000003 is not a readable image"):
        images, captions = reader.read([(0, r) for r in range(10)])
    assert images.shape == (10, 64, 64, 3) and images.dtype == np.uint8
    assert all(captions)  # the bad slot holds another good sample
    with pytest.warns(DataWarning, match="shard 00001.tar key 000010004 has no caption"):
        images, _ = reader.read([(1, r) for r in range(10)], fill=False)
    assert len(images) == 9


def test_on_error_raise_stops_with_the_shard_and_key(wds):
    reader = ImageBatches(WebDatasetImages(wds), None, 64, on_error="raise")
    with pytest.raises(DataError, match="shard 00000.tar key 000000003"):
        reader.read([(0, r) for r in range(5)])


def test_a_missing_shard_is_named(wds):
    pattern = f"{wds}/{{00000..00003}}.tar"
    with pytest.warns(DataWarning, match="00003.tar is missing"):
        assert len(WebDatasetImages(pattern).counts) == 3
    with pytest.raises(DataError, match="00003.tar is missing"):
        WebDatasetImages(pattern, on_error="raise")


def _with_a_broken_tar(wds, dst):
    import shutil

    shutil.copytree(wds, dst)
    (dst / "00001.tar").write_bytes(b"garbage\0\0\0 not a tar header at all")  # tarfile: "truncated header"
    return dst


def test_a_shard_that_is_not_a_tar_file_is_skipped_or_named(wds, tmp_path):
    bad = _with_a_broken_tar(wds, tmp_path / "bad")
    with pytest.warns(DataWarning, match=r"shard .*00001.tar is not a tar file; skipped"):
        assert WebDatasetImages(bad).names == ["00000.tar", "00002.tar"]
    with pytest.raises(DataError, match=r"shard .*00001.tar is not a tar file \(set data.on_error=skip"):
        WebDatasetImages(bad, on_error="raise")
    (bad / "00001_stats.json").unlink()  # a truncated tar past its first header is named too
    with tarfile.open(wds / "00001.tar") as tar, tarfile.open(bad / "00001.tar", "w") as out:
        member = tar.getmembers()[0]
        out.addfile(member, tar.extractfile(member))
    (bad / "00001.tar").write_bytes((bad / "00001.tar").read_bytes()[:700])
    with pytest.raises(ValueError, match=r"shard .*00001.tar is not a readable tar file"):
        Shard(bad / "00001.tar").index


def test_tokenize_and_train_tokenizer_name_a_broken_tar_in_one_line(wds, smoke_runs, tmp_path, capsys):
    from muse_mini.cli import main

    bad = _with_a_broken_tar(wds, tmp_path / "bad")
    run = smoke_runs / "smoke"
    smoke = ["tokenizer_train.steps=2", "tokenizer_train.batch_size=4", "data.workers=1", "--no-progress"]
    tokenize = ["tokenize", "--source", str(bad), "--run", str(run), "--out", str(tmp_path / "tokens")]
    for command in (tokenize, ["train-tokenizer", "--stage", "base", "--run", str(tmp_path / "tok"),
                               f"data.source={bad}"]):
        assert main([*command, "data.on_error=raise", *smoke]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "00001.tar is not a tar" in err, err
    with pytest.warns(DataWarning, match="00001.tar is not a tar file"):
        assert main([*tokenize, *smoke]) == 0
    assert [s["count"] for s in TokenShards(tmp_path / "tokens").manifest["shards"]] == [9, 10]


# --------------------------------------------------------------------------- token shards


def test_token_shards_read_rows_in_order(tmp_path):
    rng = np.random.default_rng(0)
    data = [rng.integers(0, 500, size=(n, 16)).astype(np.uint16) for n in (5, 7)]
    for i, tokens in enumerate(data):
        write_shard(tmp_path, i, {"tokens": tokens, "captions": np.array([f"c{i}-{r}" for r in range(len(tokens))])})
    manifest = write_manifest(tmp_path, {"source": "test"})
    assert [s["count"] for s in manifest["shards"]] == [5, 7]
    shards = TokenShards(tmp_path)
    got = shards.read([[1, 6], [0, 0], [1, 2]])
    np.testing.assert_array_equal(got["tokens"], np.stack([data[1][6], data[0][0], data[1][2]]))
    assert got["captions"].tolist() == ["c1-6", "c0-0", "c1-2"]
    assert shards.text_mode == "cache"


def test_token_shards_without_a_manifest_say_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="muse-mini tokenize"):
        TokenShards(tmp_path)


# --------------------------------------------------------------------------- stages


def _smoke(*overrides):
    return get_recipe("smoke", list(overrides))


@pytest.fixture(scope="module")
def shapes_tokens(smoke_runs, tmp_path_factory):
    """256 Shapes scenes tokenised with the session's smoke tokenizers, in 4 shards."""
    from muse_mini.training.pretokenize import tokenize_dataset

    out = tmp_path_factory.mktemp("tokens") / "shapes"
    runs = smoke_runs / "smoke"
    cfg = _smoke("data.num_examples=256", "data.rows_per_shard=64")
    tokenize_dataset(cfg, out, tokenizer_run=runs / "tokenizer-base",
                     highres_tokenizer_run=runs / "tokenizer-highres", progress=False)
    return out


def test_tokenize_matches_the_in_memory_tokens_and_resumes(shapes_tokens, smoke_runs, tmp_path):
    from muse_mini.data.shapes import downsample, generate
    from muse_mini.models.codec import encode_images
    from muse_mini.runs.load import load_tokenizer
    from muse_mini.training.pretokenize import tokenize_dataset

    shards = TokenShards(shapes_tokens)
    assert shards.counts == [64, 64, 64, 64]
    kinds = _smoke().data.kinds
    images, captions, _ = generate(8, seed=0, start=64 * 2, kinds=kinds)  # shard 2's first rows
    tok = load_tokenizer(smoke_runs / "smoke" / "tokenizer-base")
    expected = encode_images(tok, downsample(images, 2)).reshape(8, -1)
    got = shards.read([[2, r] for r in range(8)])
    np.testing.assert_array_equal(got["tokens"], expected)
    assert got["captions"].tolist() == list(captions)

    # an interrupted pass resumes: a deleted shard is rewritten, the others kept
    import shutil

    before = (shapes_tokens / "00001" / "tokens.npy").stat().st_mtime_ns
    shutil.rmtree(shapes_tokens / "00003")
    runs = smoke_runs / "smoke"
    tokenize_dataset(_smoke("data.num_examples=256", "data.rows_per_shard=64"), shapes_tokens,
                     tokenizer_run=runs / "tokenizer-base", highres_tokenizer_run=runs / "tokenizer-highres",
                     progress=False)
    assert (shapes_tokens / "00003" / "tokens.npy").is_file()
    assert (shapes_tokens / "00001" / "tokens.npy").stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="made from other inputs"):
        tokenize_dataset(_smoke("data.num_examples=128", "data.rows_per_shard=64"), shapes_tokens,
                         tokenizer_run=runs / "tokenizer-base", progress=False)


class Crash(Exception):
    pass


def _train_base(cfg, run, tokenizer_run, crash_after=None, monkeypatch=None):
    """train_base, optionally stopped by an exception after update ``crash_after`` (a crash mid-epoch)."""
    import muse_mini.training.base as base
    from muse_mini.training.hooks import TrainerHooks

    class CrashAfter(TrainerHooks):
        def on_step(self, step, state, metrics):
            if step == crash_after:
                raise Crash

    if crash_after is not None:
        monkeypatch.setattr(base, "train", functools.partial(base.train, hooks=[CrashAfter()]))
    try:
        return base.train_base(cfg, run, tokenizer_run=tokenizer_run, progress=False)
    finally:
        if monkeypatch is not None:
            monkeypatch.undo()


def test_a_streaming_run_resumed_mid_epoch_sees_the_same_batches(shapes_tokens, smoke_runs, tmp_path,
                                                                  monkeypatch):
    tok = smoke_runs / "smoke" / "tokenizer-base"
    # 256 examples / batch 16 = 16 steps an epoch; 12 steps stop mid-epoch at the crash (step 7)
    cfg = _smoke(f"data.tokens={shapes_tokens}", "data.shuffle_shards=2", "base_train.steps=12",
                 "base_train.checkpoint_every=4", "base_train.batch_size=16")
    ref = _train_base(cfg, tmp_path / "ref", tok)
    with pytest.raises(Crash):
        _train_base(cfg, tmp_path / "run", tok, crash_after=6, monkeypatch=monkeypatch)
    assert (tmp_path / "run" / "checkpoints").is_dir()
    resumed = _train_base(cfg, tmp_path / "run", tok)
    for a, b in zip(jax.tree.leaves(eqx.filter(ref, eqx.is_array)), jax.tree.leaves(eqx.filter(resumed, eqx.is_array))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    ref_loss = [json.loads(l)["loss"] for l in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    run_loss = [json.loads(l)["loss"] for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert ref_loss == run_loss


def test_shards_of_another_tokenizer_are_refused(shapes_tokens, smoke_runs, tmp_path):
    from muse_mini.training.base import train_base

    cfg = _smoke(f"data.tokens={shapes_tokens}", "base_train.steps=2")
    with pytest.raises(ValueError, match="tokenised with tokenizer_run"):
        train_base(cfg, tmp_path / "b", tokenizer_run=smoke_runs / "smoke" / "tokenizer-highres", progress=False)


def test_a_stage_on_other_data_than_its_tokenizer_names_the_override(tmp_path):
    """The config is never rewritten from the tokenizer run: another source is refused in one line."""
    from muse_mini.training.feeds import check_data_source

    run = tmp_path / "tok"
    run.mkdir()
    recorded = {"source": "/data/mine", "image_column": "img"}
    (run / "config.json").write_text(json.dumps({"metadata": {"data": recorded}}))
    with pytest.raises(ValueError, match=r"trained on '/data/mine', not 'shapes'; pass data.source=/data/mine "
                                         r"data.image_column=img") as e:
        check_data_source(_smoke(), run)
    assert "\n" not in str(e.value)
    check_data_source(_smoke("data.source=/data/mine", "data.image_column=img"), run)  # the same data: fine
    check_data_source(_smoke("data.tokens=/some/shards"), run)  # shards name their tokenizer runs


def test_the_images_feed_encodes_in_the_step_like_the_token_shards(shapes_tokens, smoke_runs):
    """feed=images runs the frozen tokenizer and text encoder inside the step: same ids as tokenize."""
    from muse_mini.data.shapes import generate
    from muse_mini.models.text.encoder import load_text_encoder
    from muse_mini.runs.load import load_tokenizer
    from muse_mini.training.feeds import ImageEncoder

    cfg = _smoke()
    runs = smoke_runs / "smoke"
    images, captions, _ = generate(4, seed=0, start=64, kinds=cfg.data.kinds)
    encoder = load_text_encoder(cfg.text.encoder, max_length=cfg.text.max_length)
    ids, mask = encoder.tokenize(list(captions))
    batch = {"images": images, "text_ids": ids, "text_ids_mask": mask}
    encode = ImageEncoder(load_tokenizer(runs / "tokenizer-base"), encoder.model,
                          load_tokenizer(runs / "tokenizer-highres"), factor=2)
    out = eqx.filter_jit(lambda e, b: e(b))(encode, batch)
    stored = TokenShards(shapes_tokens).read([[1, r] for r in range(4)])
    np.testing.assert_array_equal(np.asarray(out["tokens"]), stored["tokens"].astype(np.int32))
    np.testing.assert_array_equal(np.asarray(out["hr_tokens"]), stored["hr_tokens"].astype(np.int32))
    text, text_mask = encoder.encode(list(captions))
    np.testing.assert_array_equal(np.asarray(out["text_mask"]), text_mask)
    np.testing.assert_allclose(np.asarray(out["text"]), text, atol=2e-5)


def test_the_images_feed_trains_with_the_frozen_encoders_as_step_inputs(smoke_runs, tmp_path):
    """feed=images: the step gets the frozen models as an argument, not in the batch dict; they
    are not trained and not checkpointed, and a resumed run continues bit for bit."""
    from muse_mini.runs.checkpoint import read_header
    from muse_mini.training.base import train_base
    from muse_mini.training.feeds import open_feed

    tok = smoke_runs / "smoke" / "tokenizer-base"
    cfg = _smoke("data.feed=images", "data.workers=1", "base_train.steps=4", "base_train.checkpoint_every=2",
                 "base_train.batch_size=4")
    feed = open_feed(cfg, stage="base", tokenizer_runs={"tokenizer_run": tok}, rows=slice(0, 4), batch_size=4,
                     seed=0, run_dir=tmp_path / "feed")
    assert sorted(feed.batch_fn(0)) == ["images", "text_ids", "text_ids_mask"] and feed.encode is not None
    feed.close()
    ref = train_base(cfg, tmp_path / "ref", tokenizer_run=tok, progress=False)
    leaves = [leaf["path"] for leaf in read_header(tmp_path / "ref" / "final.eqx")["leaves"]]
    assert all(p.startswith((".model", ".opt_state")) for p in leaves)
    import shutil

    shutil.copytree(tmp_path / "ref", tmp_path / "cut")
    for name in ("DONE.json", "final.eqx", "model.eqx", "checkpoints/ckpt_00000004.eqx"):
        (tmp_path / "cut" / name).unlink()
    resumed = train_base(cfg, tmp_path / "cut", tokenizer_run=tok, progress=False)
    for a, b in zip(jax.tree.leaves(eqx.filter(ref, eqx.is_array)), jax.tree.leaves(eqx.filter(resumed, eqx.is_array))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_feed_cache_refuses_a_dataset_too_large_for_memory(tmp_path):
    from muse_mini.training.feeds import check_cache_size

    with pytest.raises(ValueError, match="muse-mini tokenize"):
        check_cache_size(_smoke("data.num_examples=5000", "data.cache_max=1000"))
    cfg = _smoke()
    assert dataclasses.replace(cfg.data, tokens="x").resolved_feed == "shards"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_cache_size(cfg)
