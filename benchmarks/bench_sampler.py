"""Time per image: one compiled decoding loop vs a Python loop of jitted steps (Muse §2.8).

Both paths run the same base transformer (random weights) under the same
classifier-free guidance wrapper (§2.7) and the same ``decode_step``; they
differ only in who drives the steps. The compiled path is the pipeline's
(:func:`muse_mini.decoding.guidance.decode_guided`, one ``lax.scan``); the
naive path dispatches one jitted step per decoding step. With the same key
both draw the same numbers, so their tokens are compared as a check.

    python benchmarks/bench_sampler.py --preset toy --batch 16 --repeats 5
    python benchmarks/bench_sampler.py --preset cc3m --batch 8 base.depth=4

A last table gives the compiled time per high-res image of the whole
pipeline (§2.4, §2.5): base decoding, then super-res decoding with its own
sampler settings (``superres_sampler``), then the high-res VQGAN decoder (the
finetuned one when ``decoder.enabled``), each at the large batch.

Compilation is excluded (one warm-up call each); times are medians over
``--repeats``. Runs unchanged on CPU or GPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from muse_mini.config import get_preset, tokenizer_stage_config  # noqa: E402
from muse_mini.decoding.guidance import classifier_free_guidance, decode_guided, guided_contexts  # noqa: E402
from muse_mini.decoding.sampler import decode_step, init_state  # noqa: E402
from muse_mini.decoding.spec import DecodeSpec, sampler_scalars  # noqa: E402
from muse_mini.models.build import build_superres  # noqa: E402
from muse_mini.models.codec import decode_token_batch  # noqa: E402
from muse_mini.models.transformer import BaseTransformer  # noqa: E402
from muse_mini.models.vqgan import VQGAN  # noqa: E402


def compiled_decode(model, context, key, sampler):
    """What the pipeline runs: one compiled, guided decoding."""
    return decode_guided(model, *guided_contexts(context), key, sampler).tokens_BxN


jitted_step = eqx.filter_jit(decode_step)


def naive_decode(model, context, key, sampler):
    """The same steps driven from Python: one jitted ``decode_step`` call per step."""
    batch = context[0].shape[0]
    spec = DecodeSpec.from_sampler(sampler, model.mask_id)
    guidance, temperature, choice_temperature = sampler_scalars(sampler)
    logits_fn = eqx.filter_jit(classifier_free_guidance)(model, *guided_contexts(context), scale=guidance, spec=spec)
    state = init_state(jnp.zeros((batch, model.seq_len), jnp.int32),
                       jnp.ones((batch, model.seq_len), bool), model.mask_id)
    for t in range(sampler.steps):
        # A traced step index: one compilation serves every step.
        state, _ = jitted_step(logits_fn, state, jnp.int32(t), key=key, spec=spec, temperature=temperature,
                               choice_temperature=choice_temperature)
    return state.tokens_BxN


def median_seconds(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile + warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="toy")
    parser.add_argument("--batch", type=int, default=16, help="the large batch (batch 1 is always run)")
    parser.add_argument("--steps", type=int, default=None, help="decoding steps (default: the preset's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", metavar="section.field=value",
                        help="config overrides, e.g. base.depth=2 sampler.temperature=1.0")
    args = parser.parse_args(argv)

    overrides = list(args.overrides)
    if args.steps is not None:
        overrides.append(f"sampler.steps={args.steps}")
    if args.guidance is not None:
        overrides.append(f"sampler.guidance={args.guidance}")
    cfg = get_preset(args.preset, overrides)
    sampler = cfg.sampler
    if sampler.guidance == 0:  # keep both passes so the benchmark measures CFG
        print("note: guidance 0 still runs the unconditional pass here")

    key_model, key_text, key_decode = jax.random.split(jax.random.key(args.seed), 3)
    model = BaseTransformer(cfg.base, vocab_size=cfg.tokenizer.codebook_size,
                            seq_len=cfg.tokenizer.grid ** 2, text_width=cfg.text.width, key=key_model)
    device = jax.devices()[0]
    print(f"device: {device.platform} ({device.device_kind}), jax {jax.__version__}")
    print(f"preset {cfg.name}: {model.seq_len} tokens, codebook {model.vocab_size}, "
          f"base depth {cfg.base.depth} width {cfg.base.width} ({cfg.base.dtype}); "
          f"{sampler.steps} steps, {sampler.schedule} schedule, guidance {sampler.guidance} "
          f"({sampler.guidance_schedule}), random weights")

    print(f"{'batch':>5} {'compiled ms/img':>16} {'naive ms/img':>13} {'naive/compiled':>15}  same tokens")
    for batch in sorted({args.batch, 1}, reverse=True):
        text = jax.random.normal(key_text, (batch, cfg.text.max_length, cfg.text.width))
        context = (text, jnp.ones((batch, cfg.text.max_length), bool))
        compiled = median_seconds(lambda: compiled_decode(model, context, key_decode, sampler), args.repeats)
        naive = median_seconds(lambda: naive_decode(model, context, key_decode, sampler), args.repeats)
        same = np.array_equal(compiled_decode(model, context, key_decode, sampler),
                              naive_decode(model, context, key_decode, sampler))
        print(f"{batch:>5} {1e3 * compiled / batch:>16.2f} {1e3 * naive / batch:>13.2f} "
              f"{naive / compiled:>15.2f}  {same}")
        if batch == args.batch:
            base_s = compiled

    superres = build_superres(cfg, key_model)
    batch, hr = args.batch, cfg.highres_tokenizer.image_size
    lowres = jax.random.randint(key_text, (batch, superres.lowres_seq_len), 0, superres.lowres_vocab_size)
    text = jax.random.normal(key_text, (batch, cfg.text.max_length, cfg.text.width))
    context = (lowres, text, jnp.ones((batch, cfg.text.max_length), bool))
    sr_s = median_seconds(lambda: compiled_decode(superres, context, key_decode, cfg.superres_sampler), args.repeats)
    vcfg = tokenizer_stage_config(cfg, "decoder" if cfg.decoder.enabled else "highres")
    vqgan = VQGAN(vcfg, key=key_model)
    tokens = jax.random.randint(key_text, (batch, superres.seq_len), 0, vcfg.codebook_size)
    pixels = eqx.filter_jit(decode_token_batch)
    dec_s = median_seconds(lambda: pixels(vqgan, tokens), args.repeats)
    which = "finetuned" if cfg.decoder.enabled else "tokenizer's"
    print(f"\n{hr}×{hr} image, batch {batch}, compiled: base {1e3 * base_s / batch:.2f} ms/img + "
          f"super-res ({cfg.superres_sampler.steps} steps, {superres.seq_len} tokens) {1e3 * sr_s / batch:.2f} ms/img "
          f"+ {which} decoder ({vcfg.decoder_channels} channels) {1e3 * dec_s / batch:.2f} ms/img "
          f"= {1e3 * (base_s + sr_s + dec_s) / batch:.2f} ms/img")


if __name__ == "__main__":
    main()
