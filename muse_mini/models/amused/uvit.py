"""aMUSEd's U-ViT (Patil et al., 2024): the masked-token transformer of Muse §2.3 on a token grid.

Mirrors diffusers' ``UVit2DModel``: token embedding → RMSNorm → 1×1 conv; a conv block
(optional 2× downsample, ConvNeXt blocks with global response norm and AdaLN-style modulation,
each followed by two text cross-attentions); 22 transformer layers (self-attention,
cross-attention, GEGLU, each under AdaLN from pooled text + micro-conditioning); the mirrored
conv block (optional 2× upsample); the 1×1-conv MLM head. One example at a time, channels last
(``h×w×C``); field names are the checkpoint's names, so :func:`load_uvit` copies name for name.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from muse_mini.models.amused.layers import Conv, Dense, Norm, init_weights, load_named, read_diffusers_folder

_RENAME = {"ff.proj": "ff.net.0.proj", "ff.out": "ff.net.2"}  # diffusers' FeedForward is an nn.ModuleList
_STACKED = ("transformer_layers",)


class Resample(eqx.Module):
    """diffusers' ``Downsample2D``/``Upsample2D`` as aMUSEd-512 uses them: RMSNorm, then a 2× conv."""

    norm: Norm
    conv: Conv

    def __init__(self, channels: int, eps: float, affine: bool, bias: bool, up: bool):
        self.norm, self.conv = Norm(channels, eps, affine), Conv((channels, channels, 2, 2), bias, transposed=up)

    def __call__(self, x_HxWxC):
        # Downsample2D(padding=0) pads one zero row and column on the far edges before its stride-2 conv.
        return self.conv(self.norm(x_HxWxC), stride=2, padding=((0, 1), (0, 1)))


class Attention(eqx.Module):
    """diffusers' ``Attention`` (multi-head, softmax scaled by 1/√head_dim), self or cross."""

    to_q: Dense
    to_k: Dense
    to_v: Dense
    to_out: tuple[Dense]
    heads: int = eqx.field(static=True)

    def __init__(self, dim: int, heads: int, bias: bool):
        self.to_q, self.to_k, self.to_v = Dense(dim, dim, bias), Dense(dim, dim, bias), Dense(dim, dim, bias)
        self.to_out = (Dense(dim, dim, bias),)
        self.heads = heads

    def __call__(self, x_NxD, context_SxC):
        def split(y):
            return y.reshape(y.shape[0], self.heads, -1)

        q, k, v = split(self.to_q(x_NxD)), split(self.to_k(context_SxC)), split(self.to_v(context_SxC))
        out_NxHxK = jax.nn.dot_product_attention(q, k, v)
        return self.to_out[0](out_NxHxK.reshape(x_NxD.shape[0], -1))


class GlobalResponseNorm(eqx.Module):
    """ConvNeXt-V2's GRN: each channel scaled by its spatial L2 norm over the channels' mean norm."""

    gamma: Float[Array, "1 1 1 C"]
    beta: Float[Array, "1 1 1 C"]

    def __init__(self, channels: int):
        self.gamma = self.beta = jnp.zeros((1, 1, 1, channels))

    def __call__(self, x_HxWxC):
        g_C = jnp.sqrt(jnp.sum(jnp.square(x_HxWxC), axis=(0, 1)))
        n_C = g_C / (g_C.mean() + 1e-6)
        return self.gamma[0, 0, 0] * (x_HxWxC * n_C) + self.beta[0, 0, 0] + x_HxWxC


class ConvNextBlock(eqx.Module):
    """Depthwise 3×3 → RMSNorm → MLP ×4 with GELU and GRN, residual; then scale/shift from the
    conditioning vector (diffusers' ``ConvNextBlock``)."""

    depthwise: Conv
    norm: Norm
    channelwise_linear_1: Dense
    channelwise_norm: GlobalResponseNorm
    channelwise_linear_2: Dense
    cond_embeds_mapper: Dense

    def __init__(self, channels: int, hidden: int, eps: float, affine: bool, bias: bool):
        self.depthwise, self.norm = Conv((channels, 1, 3, 3), bias), Norm(channels, eps, affine)
        self.channelwise_linear_1 = Dense(channels, 4 * channels, bias)
        self.channelwise_norm = GlobalResponseNorm(4 * channels)
        self.channelwise_linear_2 = Dense(4 * channels, channels, bias)
        self.cond_embeds_mapper = Dense(hidden, 2 * channels, bias)

    def __call__(self, x_HxWxC, cond_D):
        h = self.depthwise(x_HxWxC, padding=((1, 1), (1, 1)), groups=x_HxWxC.shape[-1])
        h = self.channelwise_linear_1(self.norm(h))
        h = self.channelwise_linear_2(self.channelwise_norm(jax.nn.gelu(h, approximate=False)))
        scale_C, shift_C = jnp.split(self.cond_embeds_mapper(jax.nn.silu(cond_D)), 2)
        return (h + x_HxWxC) * (1 + scale_C) + shift_C


class SkipFFTransformerBlock(eqx.Module):
    """Two pre-RMSNorm attentions that both read the text (mapped to the block width), no MLP."""

    kv_mapper: Dense | None
    norm1: Norm
    attn1: Attention
    norm2: Norm
    attn2: Attention

    def __init__(self, channels: int, hidden: int, heads: int, bias: bool):
        self.kv_mapper = Dense(hidden, channels, bias) if hidden != channels else None
        self.norm1, self.norm2 = Norm(channels, 1e-6), Norm(channels, 1e-6)
        self.attn1, self.attn2 = Attention(channels, heads, bias), Attention(channels, heads, bias)

    def __call__(self, x_NxC, text_SxD):
        text = text_SxD if self.kv_mapper is None else self.kv_mapper(jax.nn.silu(text_SxD))
        x_NxC = x_NxC + self.attn1(self.norm1(x_NxC), text)
        return x_NxC + self.attn2(self.norm2(x_NxC), text)


class UVitBlock(eqx.Module):
    """The conv stage either side of the transformer: [downsample], (ConvNeXt, attention) × n, [upsample]."""

    downsample: Resample | None
    res_blocks: tuple[ConvNextBlock, ...]
    attention_blocks: tuple[SkipFFTransformerBlock, ...]
    upsample: Resample | None

    def __init__(self, c: dict, *, down: bool, up: bool):
        n, ch, hid, bias = c["num_res_blocks"], c["block_out_channels"], c["hidden_size"], c["use_bias"]
        eps, affine = c["layer_norm_eps"], c["ln_elementwise_affine"]
        self.downsample = Resample(ch, eps, affine, bias, up=False) if down else None
        self.res_blocks = tuple(ConvNextBlock(ch, hid, eps, affine, bias) for _ in range(n))
        self.attention_blocks = tuple(SkipFFTransformerBlock(ch, hid, c["block_num_heads"], bias) for _ in range(n))
        self.upsample = Resample(ch, eps, affine, bias, up=True) if up else None

    def __call__(self, x_HxWxC, cond_D, text_SxD):
        if self.downsample is not None:
            x_HxWxC = self.downsample(x_HxWxC)
        for res, attn in zip(self.res_blocks, self.attention_blocks):
            x_HxWxC = res(x_HxWxC, cond_D)
            x_HxWxC = attn(x_HxWxC.reshape(-1, x_HxWxC.shape[-1]), text_SxD).reshape(x_HxWxC.shape)
        return x_HxWxC if self.upsample is None else self.upsample(x_HxWxC)


class AdaNorm(eqx.Module):
    """diffusers' ``AdaLayerNormContinuous``: ``norm(x)·(1 + scale) + shift``, both from the conditioning."""

    linear: Dense
    norm: Norm

    def __init__(self, dim: int, eps: float, affine: bool, bias: bool, kind: str):
        self.linear = Dense(dim, 2 * dim, bias)
        self.norm = Norm(dim, eps, affine, bias=bias and kind == "layer", kind=kind)

    def __call__(self, x_NxD, cond_D):
        scale_D, shift_D = jnp.split(self.linear(jax.nn.silu(cond_D)), 2)
        return self.norm(x_NxD) * (1 + scale_D) + shift_D


class FeedForward(eqx.Module):
    """GEGLU: ``out(a · gelu(b))`` with ``[a, b] = proj(x)`` (diffusers' ``FeedForward``, ``geglu``)."""

    proj: Dense
    out: Dense

    def __init__(self, dim: int, inner: int, bias: bool):
        self.proj, self.out = Dense(dim, 2 * inner, bias), Dense(inner, dim, bias)

    def __call__(self, x_NxD):
        a, gate = jnp.split(self.proj(x_NxD), 2, axis=-1)
        return self.out(a * jax.nn.gelu(gate, approximate=False))


class TransformerLayer(eqx.Module):
    """diffusers' ``BasicTransformerBlock`` with ``norm_type="ada_norm_continuous"``: RMS AdaLN before
    both attentions, a LayerNorm AdaLN before the GEGLU feed-forward (Muse §2.3's layer)."""

    norm1: AdaNorm
    attn1: Attention
    norm2: AdaNorm
    attn2: Attention
    norm3: AdaNorm
    ff: FeedForward

    def __init__(self, c: dict):
        d, heads, bias = c["hidden_size"], c["num_attention_heads"], c["use_bias"]
        eps, affine = c["layer_norm_eps"], c["ln_elementwise_affine"]
        self.norm1, self.attn1 = AdaNorm(d, eps, affine, bias, "rms"), Attention(d, heads, bias)
        self.norm2, self.attn2 = AdaNorm(d, eps, affine, bias, "rms"), Attention(d, heads, bias)
        self.norm3, self.ff = AdaNorm(d, eps, affine, bias, "layer"), FeedForward(d, c["intermediate_size"], bias)

    def __call__(self, x_NxD, cond_D, text_SxD):
        h = self.norm1(x_NxD, cond_D)
        x_NxD = x_NxD + self.attn1(h, h)
        x_NxD = x_NxD + self.attn2(self.norm2(x_NxD, cond_D), text_SxD)
        return x_NxD + self.ff(self.norm3(x_NxD, cond_D))


class ConvEmbed(eqx.Module):
    """diffusers' ``UVit2DConvEmbed``: token embedding → RMSNorm → 1×1 conv."""

    embeddings: eqx.nn.Embedding
    layer_norm: Norm
    conv: Conv

    def __init__(self, c: dict):
        emb = c["in_channels"]
        self.embeddings = eqx.nn.Embedding(weight=jnp.zeros((c["vocab_size"], emb)))
        self.layer_norm = Norm(emb, c["layer_norm_eps"], c["ln_elementwise_affine"])
        self.conv = Conv((c["block_out_channels"], emb, 1, 1), c["use_bias"])

    def __call__(self, ids_HxW):
        return self.conv(self.layer_norm(self.embeddings.weight[ids_HxW]))


class MlmHead(eqx.Module):
    """diffusers' ``ConvMlmLayer``: 1×1 conv → RMSNorm → 1×1 conv to the codebook's logits."""

    conv1: Conv
    layer_norm: Norm
    conv2: Conv

    def __init__(self, c: dict):
        emb, bias = c["in_channels"], c["use_bias"]
        self.conv1 = Conv((emb, c["block_out_channels"], 1, 1), bias)
        self.layer_norm = Norm(emb, c["layer_norm_eps"], c["ln_elementwise_affine"])
        self.conv2 = Conv((c["codebook_size"], emb, 1, 1), bias)

    def __call__(self, x_HxWxC):
        return self.conv2(self.layer_norm(self.conv1(x_HxWxC)))


class CondEmbed(eqx.Module):
    """diffusers' ``TimestepEmbedding``: Linear → SiLU → Linear on [pooled text, micro-conds]."""

    linear_1: Dense
    linear_2: Dense

    def __init__(self, in_dim: int, dim: int, bias: bool):
        self.linear_1, self.linear_2 = Dense(in_dim, dim, bias), Dense(dim, dim, bias)

    def __call__(self, x_I):
        return self.linear_2(jax.nn.silu(self.linear_1(x_I)))


def micro_cond_features(micro_conds_M, dim: int):
    """Sinusoidal features of each micro-condition (cos half first, frequencies 10000^(-i/half)),
    concatenated: ``get_timestep_embedding(flip_sin_to_cos=True, downscale_freq_shift=0)``."""
    half = dim // 2
    angles_MxH = micro_conds_M[:, None].astype(jnp.float32) * jnp.exp(-math.log(10000.0) * jnp.arange(half) / half)
    feats_MxF = jnp.concatenate([jnp.cos(angles_MxH), jnp.sin(angles_MxH)], axis=-1)
    return jnp.pad(feats_MxF, ((0, 0), (0, dim % 2))).reshape(-1)


class AmusedCondition(eqx.Module):
    """What every decoding step reads, computed once per prompt: the projected text and the
    conditioning vector (pooled CLIP text + micro-conditioning) that drives every AdaLN."""

    text_SxD: Float[Array, "S D"]
    cond_D: Float[Array, " D"]


DEFAULTS = dict(  # UVit2DModel's defaults, for configs that leave some out
    hidden_size=1024, use_bias=False, cond_embed_dim=768, micro_cond_encode_dim=256, micro_cond_embed_dim=1280,
    encoder_hidden_size=768, vocab_size=8256, codebook_size=8192, in_channels=768, block_out_channels=768,
    num_res_blocks=3, downsample=False, upsample=False, block_num_heads=12, num_hidden_layers=22,
    num_attention_heads=16, intermediate_size=2816, layer_norm_eps=1e-6, ln_elementwise_affine=True, sample_size=64,
)


class UVit2D(eqx.Module):
    """aMUSEd's transformer with muse_mini's sampler interface (``seq_len``, ``mask_id``,
    :meth:`encode_condition`, :meth:`logits`). Logits are token-major ``(N, codebook_size)``,
    row-major over the ``h×w`` grid: diffusers' ``(B, V, h, w)`` is ``reshape(B, V, N).transpose(0, 2, 1)``."""

    encoder_proj: Dense
    encoder_proj_layer_norm: Norm
    embed: ConvEmbed
    cond_embed: CondEmbed
    down_block: UVitBlock
    project_to_hidden_norm: Norm
    project_to_hidden: Dense
    transformer_layers: TransformerLayer  # stacked: each leaf has a leading layer axis
    project_from_hidden_norm: Norm
    project_from_hidden: Dense
    up_block: UVitBlock
    mlm_layer: MlmHead
    grid: tuple[int, int] = eqx.field(static=True)
    mask_id: int = eqx.field(static=True)
    vocab_size: int = eqx.field(static=True)  # the codebook size: the logits' width
    cond_dims: tuple[int, int, int] = eqx.field(static=True)  # pooled text width, micro-conditions, features each

    def __init__(self, c: dict, *, mask_id: int | None = None):
        d, ch, bias, eps, affine = (c["hidden_size"], c["block_out_channels"], c["use_bias"], c["layer_norm_eps"],
                                    c["ln_elementwise_affine"])
        self.encoder_proj, self.encoder_proj_layer_norm = Dense(c["encoder_hidden_size"], d, bias), Norm(d, eps, affine)
        self.embed = ConvEmbed(c)
        self.cond_embed = CondEmbed(c["micro_cond_embed_dim"] + c["cond_embed_dim"], d, bias)
        self.down_block = UVitBlock(c, down=c["downsample"], up=False)
        self.project_to_hidden_norm, self.project_to_hidden = Norm(ch, eps, affine), Dense(ch, d, bias)
        layer = TransformerLayer(c)
        self.transformer_layers = jax.tree.map(lambda w: jnp.stack([w] * c["num_hidden_layers"]), layer)
        self.project_from_hidden_norm, self.project_from_hidden = Norm(d, eps, affine), Dense(d, ch, bias)
        self.up_block = UVitBlock(c, down=False, up=c["upsample"])
        self.mlm_layer = MlmHead(c)
        self.grid = (c["sample_size"], c["sample_size"])
        self.mask_id = c["vocab_size"] - 1 if mask_id is None else mask_id
        self.vocab_size = c["codebook_size"]
        enc = c["micro_cond_encode_dim"]
        self.cond_dims = (c["cond_embed_dim"], c["micro_cond_embed_dim"] // enc, enc)

    @property
    def seq_len(self) -> int:
        return self.grid[0] * self.grid[1]

    def encode_condition(self, text_TxE, pooled_P, micro_conds_M) -> AmusedCondition:
        """The CLIP penultimate states projected to the model width, and the AdaLN conditioning vector from the
        pooled ``text_embeds`` and the micro-conditions (width, height, crop top, crop left, aesthetic score)."""
        dt, e = self.encoder_proj.weight.dtype, self.encoder_proj.weight.shape[1]
        if jnp.ndim(text_TxE) != 2 or text_TxE.shape[1] != e:
            raise ValueError(f"text_TxE: expected (T, {e}) CLIP hidden states, got {jnp.shape(text_TxE)}")
        if (jnp.shape(pooled_P), jnp.shape(micro_conds_M)) != ((self.cond_dims[0],), (self.cond_dims[1],)):
            raise ValueError(f"pooled_P, micro_conds_M: expected shapes ({self.cond_dims[0]},) and "
                             f"({self.cond_dims[1]},), got {jnp.shape(pooled_P)} and {jnp.shape(micro_conds_M)}")
        text_TxD = self.encoder_proj_layer_norm(self.encoder_proj(text_TxE.astype(dt)))
        feats = micro_cond_features(micro_conds_M, self.cond_dims[2]).astype(dt)
        return AmusedCondition(text_TxD, self.cond_embed(jnp.concatenate([pooled_P.astype(dt), feats])))

    def logits(self, tokens: Int[Array, "N"] | Int[Array, "h w"], cond: AmusedCondition) -> Float[Array, "N V"]:
        """Logits ``(N, codebook_size)`` for a token map: ``(h, w)`` ids, or ``N = h·w`` ids on the model's ``grid``."""
        if jnp.ndim(tokens) == 1 and tokens.shape[0] == self.seq_len:
            tokens = tokens.reshape(self.grid)
        elif jnp.ndim(tokens) != 2:
            raise ValueError(f"tokens: expected {self.seq_len} ids or an (h, w) map of ids, got {jnp.shape(tokens)}")
        if self.down_block.downsample is not None and (tokens.shape[0] % 2 or tokens.shape[1] % 2):
            raise ValueError(f"tokens: the 2× down/upsampling needs an even (h, w) grid, got {tokens.shape}")
        x_HxWxC = self.down_block(self.embed(tokens), cond.cond_D, cond.text_SxD)
        h_NxD = self.project_to_hidden(self.project_to_hidden_norm(x_HxWxC.reshape(-1, x_HxWxC.shape[-1])))
        params, static = eqx.partition(self.transformer_layers, eqx.is_array)

        def layer(h, layer_params):
            return eqx.combine(layer_params, static)(h, cond.cond_D, cond.text_SxD), None

        h_NxD, _ = jax.lax.scan(layer, h_NxD, params)
        x_HxWxC = self.project_from_hidden(self.project_from_hidden_norm(h_NxD)).reshape(x_HxWxC.shape)
        logits_HxWxV = self.mlm_layer(self.up_block(x_HxWxC, cond.cond_D, cond.text_SxD))
        return logits_HxWxV.reshape(-1, logits_HxWxV.shape[-1])

    def __call__(self, input_ids, text_TxE, pooled_P, micro_conds_M) -> Float[Array, "N V"]:
        """diffusers' ``UVit2DModel.forward`` token-major: :meth:`encode_condition`, then :meth:`logits`."""
        return self.logits(input_ids, self.encode_condition(text_TxE, pooled_P, micro_conds_M))


def _full_config(config: dict) -> dict:
    c = {**DEFAULTS, **{k: v for k, v in config.items() if k in DEFAULTS}}
    if c["block_out_channels"] % c["block_num_heads"] or c["hidden_size"] % c["num_attention_heads"]:
        raise ValueError("transformer config: block_out_channels and hidden_size must divide by "
                         f"block_num_heads and num_attention_heads, got {c['block_out_channels']}/"
                         f"{c['block_num_heads']} and {c['hidden_size']}/{c['num_attention_heads']}")
    return c


def uvit_from_config(config: dict, *, key, mask_id: int | None = None) -> UVit2D:
    """Random :class:`UVit2D` from a diffusers ``UVit2DModel`` ``config.json`` dict;
    ``mask_id`` defaults to ``vocab_size - 1`` (aMUSEd's scheduler ``mask_token_id``)."""
    return init_weights(_skeleton(config, mask_id), key, stacked=_STACKED)


def _skeleton(config: dict, mask_id: int | None) -> UVit2D:
    return eqx.filter_eval_shape(lambda: UVit2D(_full_config(config), mask_id=mask_id))


def uvit_from_tensors(config: dict, tensors, dtype=jnp.float32, *, mask_id: int | None = None) -> UVit2D:
    """:class:`UVit2D` from a ``config.json`` dict and ``{diffusers name: array}`` (a safetensors file, or a torch
    ``state_dict`` as numpy: the GPU report converts a model in process)."""
    skeleton = _skeleton(config, mask_id)
    return load_named(skeleton, tensors, "transformer", dtype=dtype, stacked=_STACKED, rename=_RENAME)


def load_uvit(folder, dtype=jnp.float32, *, mask_id: int | None = None) -> UVit2D:
    """:class:`UVit2D` from a diffusers ``transformer/`` folder (fp32 or fp16 safetensors, cast to ``dtype``)."""
    config, tensors = read_diffusers_folder(folder, "transformer")
    return uvit_from_tensors(config, tensors, dtype, mask_id=mask_id)
