"""aMUSEd-256 (diffusers) timed the way ``gpu_report.py`` times this project (issue 22).

aMUSEd (Patil et al., 2024) is the open Muse-style model people compare
against. Its weights cannot be downloaded here, so both sides run with random
weights; latency does not depend on their values. The model is built from
the published aMUSEd-256 shapes: a 22-layer, 1024-wide U-ViT
(``UVit2DModel``'s defaults at ``sample_size=16``) over 16×16 = 256 tokens of
an 8192-code VQ-GAN that downsamples 16× (5 levels), so 256×256 px, the same
resolution and token count as the ``cc3m`` base model. Generation is
``AmusedPipeline.__call__``, eager, fp16 on a GPU, with precomputed text
embeddings (the text encoder is excluded on both sides) and the VQ decode
included (``output_type="pt"``, no PIL conversion).

The same-weights rows (issue 39) convert that model in process into
muse_mini's Equinox port (:func:`to_jax`), check that one fp32 transformer
call gives the same logits (:func:`logits_gap`), and time both sides on the
same weights, diffusers also under ``torch.compile`` (:func:`compile_pipe`).

Torch and diffusers are imported only inside the functions: this module is
importable (and :func:`unavailable` answers) without them.
"""

from __future__ import annotations

import statistics
import time

# aMUSEd-256's transformer: UVit2DModel's defaults, which are that checkpoint's
# config, except the 16×16 latent grid of the 256 px model.
AMUSED_256 = {
    "transformer": {"sample_size": 16},
    "vqvae": {
        "act_fn": "silu", "block_out_channels": [128, 256, 256, 512, 768],
        "down_block_types": ["DownEncoderBlock2D"] * 5, "up_block_types": ["UpDecoderBlock2D"] * 5,
        "in_channels": 3, "out_channels": 3, "latent_channels": 64, "layers_per_block": 2,
        "norm_num_groups": 32, "num_vq_embeddings": 8192, "sample_size": 32,
        "mid_block_add_attention": False, "lookup_from_codebook": True,
    },
    "mask_token_id": 8255, "text_width": 768, "text_len": 77, "image_size": 256,
}

# A few-thousand-parameter model of the same structure: exercises the code on a CPU.
TINY = {
    "transformer": {
        "hidden_size": 8, "use_bias": False, "cond_embed_dim": 8, "micro_cond_encode_dim": 2,
        "micro_cond_embed_dim": 10, "encoder_hidden_size": 8, "vocab_size": 32, "codebook_size": 8,
        "in_channels": 8, "block_out_channels": 8, "num_res_blocks": 1, "block_num_heads": 1,
        "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 8, "sample_size": 4,
    },
    "vqvae": {
        "act_fn": "silu", "block_out_channels": [8, 8], "down_block_types": ["DownEncoderBlock2D"] * 2,
        "up_block_types": ["UpDecoderBlock2D"] * 2, "in_channels": 3, "out_channels": 3, "latent_channels": 8,
        "layers_per_block": 1, "norm_num_groups": 8, "num_vq_embeddings": 8, "sample_size": 8,
        "mid_block_add_attention": False, "lookup_from_codebook": True,
    },
    "mask_token_id": 31, "text_width": 8, "text_len": 7, "image_size": 8,
}
SIZES = {"amused-256": AMUSED_256, "tiny": TINY}


def unavailable() -> str | None:
    """Why aMUSEd cannot run here (torch or diffusers missing), or None."""
    try:
        import diffusers  # noqa: F401
        import torch  # noqa: F401
    except ImportError as err:
        return f"{err.name or 'torch/diffusers'} is not installed (pip install torch diffusers)"
    return None


def build(size: str = "amused-256", *, device: str | None = None, dtype: str | None = None):
    """``(pipeline, facts)``: aMUSEd with random weights on ``device`` (cuda when there is one), in ``dtype``
    (default fp16 on cuda, else fp32)."""
    import torch
    from diffusers import AmusedPipeline, AmusedScheduler, UVit2DModel, VQModel

    spec = SIZES[size]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, dtype) if dtype else torch.float16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    transformer = UVit2DModel(**spec["transformer"])
    vqvae = VQModel(**spec["vqvae"])
    pipe = AmusedPipeline(vqvae=vqvae, tokenizer=None, text_encoder=None, transformer=transformer,
                          scheduler=AmusedScheduler(mask_token_id=spec["mask_token_id"]))
    pipe = pipe.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    facts = {
        "size": size, "device": device, "dtype": str(dtype).removeprefix("torch."), "torch": torch.__version__,
        "diffusers": __import__("diffusers").__version__, "transformer_params": count(transformer),
        "vqvae_params": count(vqvae), "tokens": transformer.config.sample_size ** 2,
        "image_size": transformer.config.sample_size * pipe.vae_scale_factor,
        "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
    }
    return pipe, facts


def _embeddings(pipe, batch: int, spec: dict):
    import torch

    gen = torch.Generator().manual_seed(1)
    dev, dt = pipe.device, pipe.transformer.dtype

    def draw(*shape):
        return torch.randn(*shape, generator=gen).to(device=dev, dtype=dt)

    w, n = spec["text_width"], spec["text_len"]
    return {"prompt_embeds": draw(batch, w), "encoder_hidden_states": draw(batch, n, w),
            "negative_prompt_embeds": draw(batch, w), "negative_encoder_hidden_states": draw(batch, n, w)}


def time_generation(pipe, size: str, *, batch: int, steps: int, guidance: float, repeats: int,
                    warmup: int = 1) -> dict:
    """Median, min and max milliseconds of one ``pipe(...)`` call, and its peak memory (cuda only).

    ``warmup`` untimed calls first (cuDNN autotuning, allocator warm-up; torch.compile's compilation and CUDA
    graph recording). ``guidance``
    is diffusers' scale ``s`` in ``u + s·(c − u)``, so Muse's ``t`` is ``s − 1``;
    any ``s > 1`` runs both passes in one batch of ``2·batch``, as this project does.
    """
    import torch

    cuda = pipe.device.type == "cuda"
    kwargs = dict(_embeddings(pipe, batch, SIZES[size]), num_inference_steps=steps, guidance_scale=guidance,
                  output_type="pt", generator=torch.Generator(device=pipe.device).manual_seed(0))

    def call():
        images = pipe(**kwargs).images
        if cuda:
            torch.cuda.synchronize()
        return images

    for _ in range(warmup):
        images = call()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(1e3 * (time.perf_counter() - start))
    return {"ms": statistics.median(times), "ms_min": min(times), "ms_max": max(times),
            "peak_memory_bytes": torch.cuda.max_memory_allocated() if cuda else None,
            "output_shape": list(images.shape)}


# --------------------------------------------------------------------------
# The same weights in JAX and in diffusers (issue 39)


def to_jax(pipe):
    """The pipeline's U-ViT and VQ-GAN as muse_mini's Equinox modules, fp32, name for name
    (``state_dict`` → numpy → :func:`muse_mini.models.amused.layers.load_named`): the same weights in both."""
    from muse_mini.models.amused.uvit import uvit_from_tensors
    from muse_mini.models.amused.vq import vq_from_tensors

    def arrays(module):
        return {name: t.detach().float().cpu().numpy() for name, t in module.state_dict().items()}

    uvit = uvit_from_tensors(dict(pipe.transformer.config), arrays(pipe.transformer),
                             mask_id=pipe.scheduler.config.mask_token_id)
    return uvit, vq_from_tensors(dict(pipe.vqvae.config), arrays(pipe.vqvae))


def logits_gap(pipe, uvit, size: str, batch: int = 2) -> dict:
    """One U-ViT call on the same random inputs in diffusers and in JAX, fp32 with TF32 off on both sides:
    the largest absolute logit difference, beside the largest logit (diffusers' ``(B, V, h, w)`` is token-major
    here: ``reshape(B, V, h·w).transpose(0, 2, 1)``)."""
    import equinox as eqx
    import jax
    import numpy as np
    import torch

    c, gen = pipe.transformer.config, torch.Generator().manual_seed(2)
    ids = torch.randint(0, c.codebook_size, (batch, c.sample_size, c.sample_size), generator=gen)
    ids[:, ::2, ::3] = pipe.scheduler.config.mask_token_id
    side = SIZES[size]["image_size"]
    inputs = (ids, torch.randn(batch, SIZES[size]["text_len"], c.encoder_hidden_size, generator=gen),
              torch.randn(batch, c.cond_embed_dim, generator=gen), torch.tensor([[side, side, 0, 0, 6.0]] * batch))
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            ref = pipe.transformer(*(t.to(pipe.device) for t in inputs)).float().cpu().numpy()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
    with jax.default_matmul_precision("highest"):
        ours = eqx.filter_jit(lambda m, *a: jax.vmap(m)(*a))(uvit, *(t.numpy() for t in inputs))
    ref_BxNxV = ref.reshape(batch, c.codebook_size, -1).transpose(0, 2, 1)
    return {"logits_max_abs_diff": float(np.abs(np.asarray(ours) - ref_BxNxV).max()),
            "logits_max_abs": float(np.abs(ref_BxNxV).max())}


def jax_inputs(pipe, size: str, batch: int = 1):
    """The embeddings :func:`time_generation` draws, as JAX ``(context, uncond)`` for ``decode_guided``:
    (CLIP hidden states, pooled text, micro-conditions (width, height, crop 0, 0, aesthetic score 6))."""
    import jax.numpy as jnp

    e = {k: jnp.asarray(v.float().cpu().numpy()) for k, v in _embeddings(pipe, batch, SIZES[size]).items()}
    side = SIZES[size]["image_size"]
    micro = jnp.broadcast_to(jnp.asarray([side, side, 0, 0, 6], jnp.float32), (batch, 5))
    return ((e["encoder_hidden_states"], e["prompt_embeds"], micro),
            (e["negative_encoder_hidden_states"], e["negative_prompt_embeds"], micro))


def in_serving_dtype(pipe):
    """``pipe`` in :func:`build`'s default dtype: fp16 on cuda, as aMUSEd is served; unchanged elsewhere."""
    import torch

    return pipe.to(dtype=torch.float16) if pipe.device.type == "cuda" else pipe


def compile_pipe(pipe, mode: str):
    """``pipe`` with ``torch.compile`` on its transformer and VQ decoder (the modules each step and the decode run)."""
    import torch

    pipe.transformer = torch.compile(pipe.transformer, mode=mode)
    pipe.vqvae.decoder = torch.compile(pipe.vqvae.decoder, mode=mode)
    return pipe
