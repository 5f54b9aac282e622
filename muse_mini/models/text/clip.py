"""CLIP text encoder in Equinox: transformers' ``CLIPTextModelWithProjection``, aMUSEd's text tower.

aMUSEd (Patil et al., 2024) replaces Muse's frozen T5-XXL (§2.1) with CLIP ViT-L/14's text
encoder and uses two of its outputs: the per-token states of the penultimate block (before
the final LayerNorm) as cross-attention context, and the projected, final-LayerNorm state at
the EOS token (``text_embeds``) as the pooled conditioning. Blocks are pre-LN with biased
linears, causal attention and quick-GELU; they are stacked and scanned as in ``t5``.
"""

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray
from safetensors.numpy import load_file

from muse_mini.models.amused.layers import check_names
from muse_mini.models.text.t5 import ACTIVATIONS, apply_linear, self_attention, set_leaf, stack_layers
from muse_mini.models.text.weights import SafetensorsWeights

_ACTS = {**ACTIVATIONS, "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x)}


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
    """The fields of transformers' ``CLIPTextConfig`` the encoder reads; defaults are transformers'."""

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    projection_dim: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    eos_token_id: int = 49407

    @classmethod
    def from_dict(cls, config: dict) -> "CLIPTextConfig":
        """Keeps the known keys of a ``config.json`` (saved configs omit defaults) and checks them."""
        cfg = cls(**{f.name: config[f.name] for f in dataclasses.fields(cls) if f.name in config})
        if cfg.hidden_act not in _ACTS:
            raise ValueError(f"hidden_act: expected one of {sorted(_ACTS)}, got {cfg.hidden_act!r}")
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ValueError(f"hidden_size={cfg.hidden_size} is not a multiple of "
                             f"num_attention_heads={cfg.num_attention_heads}")
        if not isinstance(cfg.eos_token_id, int):
            raise ValueError(f"eos_token_id: expected one int, got {cfg.eos_token_id!r}")
        return cfg


def _layer_norm(x_TxD: Array, norm: eqx.nn.LayerNorm) -> Array:
    return jax.vmap(norm)(x_TxD)


def eos_position(input_ids_T: Int[Array, " T"], eos_token_id: int) -> Int[Array, ""]:
    """Where ``text_embeds`` is read, chosen as transformers' ``CLIPTextModel`` does."""
    if eos_token_id == 2:
        # Configs saved with the old eos_token_id=2 pool at the largest id, which is
        # CLIP's end-of-text token as long as no tokens were added to the vocabulary.
        return jnp.argmax(input_ids_T)
    return jnp.argmax(input_ids_T == eos_token_id)  # the first EOS (padding may repeat it)


class CLIPBlock(eqx.Module):
    """Pre-LN block: ``x + attn(LN(x))`` with a causal mask, then ``x + mlp(LN(x))``."""

    norm1: eqx.nn.LayerNorm
    q: eqx.nn.Linear
    k: eqx.nn.Linear
    v: eqx.nn.Linear
    o: eqx.nn.Linear
    norm2: eqx.nn.LayerNorm
    fc1: eqx.nn.Linear
    fc2: eqx.nn.Linear
    num_heads: int = eqx.field(static=True)
    act: str = eqx.field(static=True)

    def __init__(self, cfg: CLIPTextConfig, *, dtype, key: PRNGKeyArray):
        kq, kk, kv, ko, k1, k2 = jr.split(key, 6)
        D, F, eps = cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps
        self.norm1 = eqx.nn.LayerNorm(D, eps=eps, dtype=dtype)
        self.q, self.k, self.v, self.o = (eqx.nn.Linear(D, D, dtype=dtype, key=k) for k in (kq, kk, kv, ko))
        self.norm2 = eqx.nn.LayerNorm(D, eps=eps, dtype=dtype)
        self.fc1 = eqx.nn.Linear(D, F, dtype=dtype, key=k1)
        self.fc2 = eqx.nn.Linear(F, D, dtype=dtype, key=k2)
        self.num_heads, self.act = cfg.num_attention_heads, cfg.hidden_act

    def __call__(self, x_TxD: Float[Array, "T D"]) -> Float[Array, "T D"]:
        T, D = x_TxD.shape
        causal_TxT = jnp.tril(jnp.ones((T, T), bool))  # broadcasts over heads as a (query, key) mask
        h_TxD = _layer_norm(x_TxD, self.norm1)
        attn_TxD = self_attention(h_TxD, self.q, self.k, self.v, self.num_heads, causal_TxT,
                                  scale=(D // self.num_heads) ** -0.5)
        x_TxD = x_TxD + apply_linear(self.o, attn_TxD)
        h_TxF = _ACTS[self.act](apply_linear(self.fc1, _layer_norm(x_TxD, self.norm2)))
        return x_TxD + apply_linear(self.fc2, h_TxF)


class CLIPTextEncoder(eqx.Module):
    """Token ids of ONE prompt -> (penultimate states ``TxD``, ``text_embeds`` ``P``). Batch with ``jax.vmap``."""

    token: eqx.nn.Embedding
    position: eqx.nn.Embedding
    blocks: CLIPBlock  # every leaf has a leading num_layers axis
    final_norm: eqx.nn.LayerNorm
    projection: eqx.nn.Linear
    num_layers: int = eqx.field(static=True)
    eos_token_id: int = eqx.field(static=True)

    def __init__(self, cfg: CLIPTextConfig, *, dtype=jnp.float32, key: PRNGKeyArray):
        kt, kp, kb, kj = jr.split(key, 4)
        D = cfg.hidden_size
        self.token = eqx.nn.Embedding(cfg.vocab_size, D, dtype=dtype, key=kt)
        self.position = eqx.nn.Embedding(cfg.max_position_embeddings, D, dtype=dtype, key=kp)
        make_block = lambda k: CLIPBlock(cfg, dtype=dtype, key=k)
        self.blocks = eqx.filter_vmap(make_block)(jr.split(kb, cfg.num_hidden_layers))
        self.final_norm = eqx.nn.LayerNorm(D, eps=cfg.layer_norm_eps, dtype=dtype)
        self.projection = eqx.nn.Linear(D, cfg.projection_dim, use_bias=False, dtype=dtype, key=kj)
        self.num_layers, self.eos_token_id = cfg.num_hidden_layers, cfg.eos_token_id

    def __call__(self, input_ids_T: Int[Array, " T"], *, key=None) -> tuple[Float[Array, "T D"], Float[Array, " P"]]:
        positions = self.position.weight.shape[0]
        if input_ids_T.ndim != 1 or not 0 < input_ids_T.shape[0] <= positions:
            raise ValueError(f"input_ids_T: expected one sequence of 1..{positions} ids, got shape "
                             f"{input_ids_T.shape} (vmap over a batch)")
        T = input_ids_T.shape[0]
        x_TxD = self.token.weight[input_ids_T] + self.position.weight[:T]
        params, static = eqx.partition(self.blocks, eqx.is_array)

        def step(x_TxD, block_params):
            return eqx.combine(block_params, static)(x_TxD), None

        # hidden_states[-2] is the input of the last block (the embeddings for a one-block model).
        penultimate_TxD, _ = jax.lax.scan(step, x_TxD, jax.tree.map(lambda a: a[:-1], params))
        last = eqx.combine(jax.tree.map(lambda a: a[-1], params), static)
        final_TxD = _layer_norm(last(penultimate_TxD), self.final_norm)
        return penultimate_TxD, self.projection(final_TxD[eos_position(input_ids_T, self.eos_token_id)])


def clip_from_config(config: dict, *, key: PRNGKeyArray, dtype=jnp.float32) -> CLIPTextEncoder:
    """Randomly initialised encoder for a ``CLIPTextConfig`` dict (a ``text_encoder/config.json``)."""
    return CLIPTextEncoder(CLIPTextConfig.from_dict(config), dtype=dtype, key=key)


# eqx.nn.Linear stores weight as (out, in), like torch.nn.Linear: no transposes.
_BLOCK_WEIGHTS: list[tuple[Callable[[CLIPBlock], Array], str]] = [
    (lambda b: b.norm1.weight, "layer_norm1.weight"),
    (lambda b: b.norm1.bias, "layer_norm1.bias"),
    (lambda b: b.q.weight, "self_attn.q_proj.weight"),
    (lambda b: b.q.bias, "self_attn.q_proj.bias"),
    (lambda b: b.k.weight, "self_attn.k_proj.weight"),
    (lambda b: b.k.bias, "self_attn.k_proj.bias"),
    (lambda b: b.v.weight, "self_attn.v_proj.weight"),
    (lambda b: b.v.bias, "self_attn.v_proj.bias"),
    (lambda b: b.o.weight, "self_attn.out_proj.weight"),
    (lambda b: b.o.bias, "self_attn.out_proj.bias"),
    (lambda b: b.norm2.weight, "layer_norm2.weight"),
    (lambda b: b.norm2.bias, "layer_norm2.bias"),
    (lambda b: b.fc1.weight, "mlp.fc1.weight"),
    (lambda b: b.fc1.bias, "mlp.fc1.bias"),
    (lambda b: b.fc2.weight, "mlp.fc2.weight"),
    (lambda b: b.fc2.bias, "mlp.fc2.bias"),
]

_WEIGHTS: list[tuple[Callable[[CLIPTextEncoder], Array], str]] = [
    (lambda m: m.token.weight, "text_model.embeddings.token_embedding.weight"),
    (lambda m: m.position.weight, "text_model.embeddings.position_embedding.weight"),
    (lambda m: m.final_norm.weight, "text_model.final_layer_norm.weight"),
    (lambda m: m.final_norm.bias, "text_model.final_layer_norm.bias"),
    (lambda m: m.projection.weight, "text_projection.weight"),
]

# A buffer (0, 1, ..., 76) that older transformers versions saved; positions are implied.
_IGNORED = {"text_model.embeddings.position_ids"}


def _check_names(found: set[str], num_layers: int, where: Path) -> None:
    """Refuses, in one line, a checkpoint whose tensor names differ from the model's."""
    expected = {name for _, name in _WEIGHTS} | {
        f"text_model.encoder.layers.{i}.{suffix}" for _, suffix in _BLOCK_WEIGHTS for i in range(num_layers)}
    check_names("text_encoder", expected, found - _IGNORED, where)


def load_clip_text(folder: str | Path, *, dtype=jnp.float32, variant: str | None = None) -> CLIPTextEncoder:
    """A ``text_encoder/`` folder (``config.json`` + ``model[.variant].safetensors``) as a ``CLIPTextEncoder``.

    fp16 and fp32 files load alike; every tensor is cast to ``dtype``.
    """
    folder = Path(folder)
    file = folder / (f"model.{variant}.safetensors" if variant else "model.safetensors")
    sharded = variant is None and (folder / "model.safetensors.index.json").is_file()
    if not (folder / "config.json").is_file() or not (file.is_file() or sharded):
        found = sorted(p.name for p in folder.glob("model*.safetensors"))  # e.g. a variant= to pass
        raise ValueError(f"text_encoder: {folder} is not a CLIPTextModelWithProjection folder "
                         f"(expected config.json and {file.name}; found {found or 'no safetensors'})")
    config = json.loads((folder / "config.json").read_text())
    # An abstract skeleton: no random init, and a leaf left unfilled would fail loudly.
    model = eqx.filter_eval_shape(clip_from_config, config, key=jr.key(0), dtype=dtype)
    tensors = SafetensorsWeights(folder) if variant is None else load_file(file)
    _check_names(set(tensors), model.num_layers, file if file.is_file() else folder)
    for where, name in _WEIGHTS:
        model = set_leaf(model, where, tensors[name], name)
    for where, suffix in _BLOCK_WEIGHTS:
        names = [f"text_model.encoder.layers.{i}.{suffix}" for i in range(model.num_layers)]
        model = set_leaf(model, lambda m: where(m.blocks), stack_layers(tensors, names),
                         f"text_model.encoder.layers.*.{suffix}")
    return model


def tokenize_clip(tokenizer, prompts: str | Sequence[str], *, max_length: int | None = None) -> np.ndarray:
    """Prompts -> ``ids_BxT`` as aMUSEd's pipeline tokenizes: padded to and truncated at ``max_length``.

    ``tokenizer`` is a ``tokenizer/`` folder or a transformers ``CLIPTokenizer``; ``max_length``
    defaults to the tokenizer's ``model_max_length`` (77 for aMUSEd), or 77 if it sets none.
    """
    if isinstance(tokenizer, (str, Path)):
        folder = Path(tokenizer)
        if not ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()):
            raise ValueError(f"tokenizer: {folder} is not a CLIP tokenizer folder (expected vocab.json and merges.txt)")
        from transformers import CLIPTokenizer  # transformers is slow to import; only tokenizing needs it

        tokenizer = CLIPTokenizer.from_pretrained(folder)
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts: expected a string or a non-empty list of strings, got {prompts!r}")
    if max_length is None:
        max_length = tokenizer.model_max_length if tokenizer.model_max_length < 1_000_000 else 77
    batch = tokenizer(prompts, padding="max_length", truncation=True, max_length=max_length, return_tensors="np")
    return np.asarray(batch["input_ids"], np.int32)
