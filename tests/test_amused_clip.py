"""CLIP text encoder (aMUSEd's text tower): parity with transformers' CLIPTextModelWithProjection, loading.

References come from scripts/make_amused_fixtures.py (torch + transformers, run once in a
separate venv): ``tests/fixtures/amused/tiny-256/{text_encoder,tokenizer}`` and ``tiny-256.npz``.
"""

import json
import shutil
from functools import cache
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from muse_mini.models.text import clip

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "amused"
FIXTURE = FIXTURES / "tiny-256"
TOL = 1e-4
PROMPTS = ["a photo of a red dog on the grass", "two green triangles above a blue circle!"]  # the script's PROMPTS
TINY = {"vocab_size": 50, "hidden_size": 16, "intermediate_size": 24, "projection_dim": 8,
        "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 12, "eos_token_id": 49}


@eqx.filter_jit
def run(model: clip.CLIPTextEncoder, ids_BxT):
    return jax.vmap(model)(ids_BxT)


@cache
def tiny() -> clip.CLIPTextEncoder:
    return eqx.filter_jit(clip.clip_from_config)(TINY, key=jr.key(0))


@cache
def reference(layout: str = "tiny-256") -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{layout}.npz") as f:
        return dict(f)


def export(model: clip.CLIPTextEncoder) -> dict[str, np.ndarray]:
    """The model's weights under transformers' names (the inverse of the loader's table)."""
    tensors = {name: np.asarray(where(model)) for where, name in clip._WEIGHTS}
    for where, suffix in clip._BLOCK_WEIGHTS:
        for i, layer in enumerate(np.asarray(where(model.blocks))):
            tensors[f"text_model.encoder.layers.{i}.{suffix}"] = layer
    return tensors


def write_folder(folder: Path, config: dict, tensors: dict[str, np.ndarray], name="model.safetensors") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tensors, folder / name)
    return folder


def test_tokenize_matches_transformers():
    ref = reference()
    ids = clip.tokenize_clip(FIXTURE / "tokenizer", PROMPTS)
    np.testing.assert_array_equal(ids, ref["clip_input_ids"])
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(FIXTURE / "tokenizer")
    np.testing.assert_array_equal(clip.tokenize_clip(tokenizer, PROMPTS[1]), ref["clip_input_ids"][1:])


@pytest.mark.parametrize("layout, variant", [("tiny-256", None), ("tiny-512", None), ("tiny-256", "fp16")])
def test_parity_with_transformers(layout, variant, tmp_path):
    ref, folder = reference(layout), FIXTURES / layout / "text_encoder"
    if variant == "fp16":  # an fp16 file: cast to fp32 on load, so only rounding of the weights differs
        shutil.copytree(folder, tmp_path / "text_encoder")
        folder = tmp_path / "text_encoder"
        save_file({k: v.astype(np.float16) for k, v in load_file(folder / "model.safetensors").items()},
                  folder / "model.fp16.safetensors")
    model = clip.load_clip_text(folder, variant=variant)
    assert model.token.weight.dtype == jnp.float32
    penultimate, embeds = run(model, jnp.asarray(ref["clip_input_ids"]))
    err_h = np.abs(np.asarray(penultimate) - ref["clip_penultimate"]).max()
    err_e = np.abs(np.asarray(embeds) - ref["clip_text_embeds"]).max()
    tol = TOL if variant is None else 1e-2
    assert err_h <= tol and err_e <= tol, (err_h, err_e)


def test_random_model_roundtrips_through_a_folder(tmp_path):
    model = tiny()
    ids_BxT = jnp.array([[3, 7, 49, 5, 49, 49], [3, 49, 2, 2, 2, 2]])
    # Older transformers saved the position_ids buffer too; it is skipped.
    tensors = {**export(model), "text_model.embeddings.position_ids": np.arange(12)[None]}
    folder = write_folder(tmp_path / "text_encoder", TINY, tensors)
    loaded = clip.load_clip_text(folder)
    for a, b in zip(run(model, ids_BxT), run(loaded, ids_BxT)):
        np.testing.assert_array_equal(a, b)
    half = clip.load_clip_text(folder, dtype=jnp.bfloat16)
    assert half.blocks.fc1.weight.dtype == jnp.bfloat16


def test_causal_and_pooled_at_the_first_eos():
    ids = jnp.array([3, 7, 49, 5, 49, 49])
    (h, h2), (e, e2) = run(tiny(), jnp.stack([ids, ids.at[3:].set(11)]))
    # Later tokens change nothing before them, nor the state pooled at the first EOS.
    np.testing.assert_allclose(h[:3], h2[:3], atol=1e-6)
    np.testing.assert_allclose(e, e2, atol=1e-6)
    assert not np.allclose(h[3:], h2[3:])
    assert int(clip.eos_position(ids, 49)) == 2
    # Configs saved with the old eos id 2 pool at the largest id (the first, if repeated).
    assert int(clip.eos_position(jnp.array([3, 2, 40, 9, 40]), 2)) == 2


def test_unknown_and_missing_weights_are_named(tmp_path):
    tensors = export(tiny())
    extra = write_folder(tmp_path / "extra", TINY, {**tensors, "text_model.foo.weight": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match=r"unknown weights \['text_model.foo.weight'\], missing weights \[\]") as e:
        clip.load_clip_text(extra)
    assert "\n" not in str(e.value)
    del tensors["text_model.encoder.layers.1.mlp.fc2.bias"]
    missing = write_folder(tmp_path / "missing", TINY, tensors)
    with pytest.raises(ValueError, match=r"missing weights \['text_model.encoder.layers.1.mlp.fc2.bias'\]") as e:
        clip.load_clip_text(missing)
    assert "\n" not in str(e.value)


def test_shape_mismatch_and_wrong_folders_are_refused(tmp_path):
    tensors = export(tiny())
    folder = write_folder(tmp_path / "te", {**TINY, "projection_dim": 9}, tensors)
    with pytest.raises(ValueError, match=r"text_projection.weight: checkpoint shape \(8, 16\) != model shape"):
        clip.load_clip_text(folder)
    with pytest.raises(ValueError, match=r"expected config.json and model.safetensors"):
        clip.load_clip_text(tmp_path)
    with pytest.raises(ValueError, match=r"expected config.json and model.fp16.safetensors"):
        clip.load_clip_text(folder, variant="fp16")
    with pytest.raises(ValueError, match=r"tokenizer: .* \(expected vocab.json and merges.txt"):
        clip.tokenize_clip(tmp_path, ["a cat"])


def test_bad_config_and_input_are_refused():
    with pytest.raises(ValueError, match="hidden_act"):
        clip.clip_from_config({**TINY, "hidden_act": "swish2"}, key=jr.key(0))
    model = tiny()
    with pytest.raises(ValueError, match="input_ids_T"):
        model(jnp.zeros((2, 5), jnp.int32))
    with pytest.raises(ValueError, match="input_ids_T"):
        model(jnp.zeros((13,), jnp.int32))
