"""Time per image: one compiled decoding loop vs a Python loop of jitted steps (Muse §2.8).

Both paths run the same base transformer (random weights) under the same
classifier-free guidance wrapper (§2.7) and the same
:func:`muse_mini.decoding.sampler.decode_step`; they differ only in who drives the
steps. The compiled path is one ``lax.scan`` (one dispatch per image batch); the
naive path dispatches one jitted step per decoding step, paying host overhead
and a device round trip each time. With the same key both draw the same
numbers, so their tokens are compared as a check.

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
from muse_mini.decoding.guidance import (  # noqa: E402
    BatchedModel, GuidedLogits, classifier_free_guidance, unconditional_context,
)
from muse_mini.decoding.sampler import decode, decode_step, init_state, run_decode  # noqa: E402
from muse_mini.models.build import build_superres  # noqa: E402
from muse_mini.decoding.spec import DecodeSpec, sampler_scalars  # noqa: E402
from muse_mini.models.codec import decode_token_batch  # noqa: E402
from muse_mini.pipeline import decode_guided  # noqa: E402
from muse_mini.models.transformer import BaseTransformer  # noqa: E402
from muse_mini.models.vqgan import VQGAN  # noqa: E402


def guided(model, context, sampler):
    return classifier_free_guidance(
        BatchedModel(model), cond=context, uncond=unconditional_context(context),
        scale=jnp.float32(sampler.guidance), schedule=sampler.guidance_schedule, steps=sampler.steps,
    )


def decode_kwargs(model, sampler) -> dict:
    return dict(steps=sampler.steps, mask_id=model.mask_id, schedule=sampler.schedule,
                temperature=sampler.temperature, top_k=sampler.top_k,
                choice_temperature=sampler.choice_temperature)


@eqx.filter_jit
def compiled_decode(model, context, key, sampler):
    batch = context[0].shape[0]
    tokens = jnp.full((batch, model.seq_len), model.mask_id, jnp.int32)
    mask = jnp.ones((batch, model.seq_len), bool)
    traj = decode(guided(model, context, sampler), tokens, mask, key=key, **decode_kwargs(model, sampler))
    return traj.tokens_BxN


jitted_step = eqx.filter_jit(decode_step)


def naive_decode(model, context, key, sampler):
    """The same steps driven from Python: one jitted ``decode_step`` call per step."""
    batch = context[0].shape[0]
    logits_fn = guided(model, context, sampler)
    state = init_state(jnp.zeros((batch, model.seq_len), jnp.int32),
                       jnp.ones((batch, model.seq_len), bool), model.mask_id)
    for t in range(sampler.steps):
        # A traced step index: one compilation serves every step.
        state, _ = jitted_step(logits_fn, state, jnp.int32(t), key=key, **decode_kwargs(model, sampler))
    return state.tokens_BxN


@eqx.filter_jit
def decode_encoding_every_step(model, context, uncond, key, spec, guidance, temperature, choice_temperature):
    """:func:`muse_mini.pipeline.decode_guided` as it was: the model called on the raw contexts at every step."""
    batch = context[0].shape[0]
    logits_fn = GuidedLogits(BatchedModel(model), context, uncond, guidance, spec.guidance_schedule, spec.steps)
    tokens = jnp.full((batch, model.seq_len), spec.mask_id, jnp.int32)
    return run_decode(logits_fn, tokens, jnp.ones((batch, model.seq_len), bool), key=key, spec=spec,
                      temperature=temperature, choice_temperature=choice_temperature)


def condition_every_step_vs_once(model, context, key, sampler, repeats: int) -> tuple[float, float, bool]:
    """Seconds per decoding with the condition encoded inside every step and encoded once before the
    loop (:func:`muse_mini.pipeline.decode_guided`), same arguments, same compiled loop; same tokens?"""
    spec, scalars = DecodeSpec.from_sampler(sampler, model.mask_id), sampler_scalars(sampler)
    uncond = unconditional_context(context)

    def once():
        return decode_guided(model, context, uncond, key, spec, *scalars).tokens_BxN

    def every():
        return decode_encoding_every_step(model, context, uncond, key, spec, *scalars).tokens_BxN

    return median_seconds(every, repeats), median_seconds(once, repeats), bool(np.array_equal(every(), once()))


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
            base_s, base_context = compiled, context

    superres = build_superres(cfg, key_model)
    batch, hr = args.batch, cfg.highres_tokenizer.image_size
    if superres.lowres_input == "tokens":
        lowres = jax.random.randint(key_text, (batch, superres.lowres_seq_len), 0, superres.lowres_vocab_size)
    else:  # a decoded low-res image (lowres_input="pixels")
        lowres = jax.random.uniform(key_text, (batch, *superres.lowres_shape), minval=-1.0)
    text = jax.random.normal(key_text, (batch, cfg.text.max_length, cfg.text.width))
    context = (lowres, text, jnp.ones((batch, cfg.text.max_length), bool))
    sr_s = median_seconds(lambda: compiled_decode(superres, context, key_decode, cfg.superres_sampler), args.repeats)
    vcfg = tokenizer_stage_config(cfg, "decoder" if cfg.decoder.enabled else "highres")
    vqgan = VQGAN(vcfg, key=key_model)
    tokens = jax.random.randint(key_text, (batch, superres.seq_len), 0, vcfg.codebook_size)
    pixels = eqx.filter_jit(decode_token_batch)
    dec_s = median_seconds(lambda: pixels(vqgan, tokens), args.repeats)
    print(f"\ncondition (text projection; super-res: low-res encoder + text + skip), batch {batch}:")
    print(f"{'model':>9} {'every step ms/img':>18} {'once ms/img':>12} {'every/once':>11}  same tokens")
    for name, m, ctx, smp in (("base", model, base_context, sampler),
                              ("super-res", superres, context, cfg.superres_sampler)):
        every, once, same = condition_every_step_vs_once(m, ctx, key_decode, smp, args.repeats)
        print(f"{name:>9} {1e3 * every / batch:>18.2f} {1e3 * once / batch:>12.2f} {every / once:>11.2f}  {same}")
    which = "finetuned" if cfg.decoder.enabled else "tokenizer's"
    print(f"\n{hr}×{hr} image, batch {batch}, compiled: base {1e3 * base_s / batch:.2f} ms/img + "
          f"super-res ({cfg.superres_sampler.steps} steps, {superres.seq_len} tokens) {1e3 * sr_s / batch:.2f} ms/img "
          f"+ {which} decoder ({vcfg.decoder_channels} channels) {1e3 * dec_s / batch:.2f} ms/img "
          f"= {1e3 * (base_s + sr_s + dec_s) / batch:.2f} ms/img")


if __name__ == "__main__":
    main()
