"""aMUSEd in JAX on this machine: a whole text-to-image generation at aMUSEd-256's size, and its parts.

Random weights with aMUSEd-256's shapes (latency does not depend on their values): the 603M U-ViT over 16×16
tokens and the 146M f16 VQ-GAN. The text encoder is excluded (a precomputed 77×768 CLIP condition), as in
``gpu_report.py``. The generation is muse_mini's compiled guided decoding with aMUSEd's schedule
(``muse_mini.amused.AMUSED_SAMPLER``: 12 steps, both guidance passes in one batch), then the VQ decode.
Compilation is excluded (one warm-up call); times are medians over ``--repeats``.

    python benchmarks/bench_amused.py                 # aMUSEd-256 size
    python benchmarks/bench_amused.py --size tiny     # the test fixture's size, seconds on any CPU
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from muse_mini.amused import AMUSED_SAMPLER, AmusedCodec  # noqa: E402
from muse_mini.decoding.guidance import decode_guided  # noqa: E402
from muse_mini.models.amused.uvit import uvit_from_config  # noqa: E402
from muse_mini.models.amused.vq import vq_from_config  # noqa: E402
from muse_mini.models.codec import decode_token_batch  # noqa: E402
from bench_sampler import median_seconds  # noqa: E402  (this folder: the same timing as the sampler benchmark)

VQ_256 = {"act_fn": "silu", "block_out_channels": [128, 256, 256, 512, 768],
          "down_block_types": ["DownEncoderBlock2D"] * 5, "up_block_types": ["UpDecoderBlock2D"] * 5,
          "in_channels": 3, "out_channels": 3, "latent_channels": 64, "layers_per_block": 2, "norm_num_groups": 32,
          "num_vq_embeddings": 8192, "mid_block_add_attention": False, "lookup_from_codebook": True,
          "norm_type": "group"}
SIZES = {
    "amused-256": ({"sample_size": 16}, VQ_256, 77, 768, 768),
    "tiny": ({"hidden_size": 32, "block_out_channels": 16, "in_channels": 8, "num_res_blocks": 1,
              "block_num_heads": 2, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 48,
              "codebook_size": 30, "vocab_size": 32, "cond_embed_dim": 24, "encoder_hidden_size": 32,
              "micro_cond_encode_dim": 8, "micro_cond_embed_dim": 40, "sample_size": 8},
             {**VQ_256, "block_out_channels": [8, 8, 16], "down_block_types": ["DownEncoderBlock2D"] * 3,
              "up_block_types": ["UpDecoderBlock2D"] * 3, "latent_channels": 8, "norm_num_groups": 4,
              "num_vq_embeddings": 30}, 77, 32, 24),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="amused-256")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=AMUSED_SAMPLER.steps)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    uvit_cfg, vq_cfg, text_len, text_width, pooled_width = SIZES[args.size]
    keys = jax.random.split(jax.random.key(0), 4)
    uvit = uvit_from_config({**uvit_cfg, "encoder_hidden_size": text_width, "cond_embed_dim": pooled_width},
                            key=keys[0])
    vq = vq_from_config(vq_cfg, key=keys[1])
    codec = AmusedCodec(vq, uvit.grid[0] * vq.factor)
    B = args.batch
    context = (jax.random.normal(keys[2], (B, text_len, text_width)), jax.random.normal(keys[3], (B, pooled_width)),
               jnp.broadcast_to(jnp.asarray([codec.image_size, codec.image_size, 0, 0, 6], jnp.float32), (B, 5)))
    uncond = (jnp.zeros_like(context[0]), jnp.zeros_like(context[1]), context[2])
    sampler = dataclasses.replace(AMUSED_SAMPLER, steps=args.steps)

    def tokens():
        return decode_guided(uvit, context, uncond, jax.random.key(1), sampler).tokens_BxN

    decode = jax.jit(lambda t: decode_token_batch(codec, t))
    ids = tokens()
    t_tokens = median_seconds(tokens, args.repeats)
    t_decode = median_seconds(lambda: decode(ids), args.repeats)
    print(f"{args.size} on {platform.processor() or platform.machine()} ({jax.devices()[0].device_kind}), "
          f"batch {B}, {args.steps} steps, {codec.image_size}×{codec.image_size} px, fp32:")
    print(f"  U-ViT decoding {t_tokens:.2f} s ({t_tokens / args.steps * 1000:.0f} ms per step, both guidance "
          f"passes), VQ decode {t_decode:.2f} s, text to pixels {t_tokens + t_decode:.2f} s")


if __name__ == "__main__":
    main()
