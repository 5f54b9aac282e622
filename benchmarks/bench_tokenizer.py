"""Tokenizer training throughput: steps/s and images/s of the compiled update (Muse §2.2).

Times the exact step the tokenizer stage trains with
(:func:`muse_mini.training.tokenizer.make_tokenizer_step`: generator update, the
discriminator update when the preset has one, dead-code restarts), for each
stage of a preset (``decoder``: the §2.5 finetuning step, which updates the
larger decoder only), on random uint8 batches of the stage's training size
(``train_crop`` when set). Compilation and one warm-up step are excluded and
reported separately; the timed steps are chained like in training (each one
consumes the previous state).

    python benchmarks/bench_tokenizer.py --preset toy --steps 50
    python benchmarks/bench_tokenizer.py --preset toy tokenizer_train.batch_size=32

Runs unchanged on CPU or GPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from muse_mini.config import PRESETS, get_preset  # noqa: E402
from muse_mini.models.params import count_leaves  # noqa: E402
from muse_mini.training.tokenizer import STAGES, init_tokenizer_state, make_tokenizer_step, stage_config  # noqa: E402
from muse_mini.training.keys import init_key  # noqa: E402


def bench_stage(cfg, stage: str, steps: int) -> dict:
    vcfg, tcfg = stage_config(cfg, stage)
    # The step counter is set past adversarial_start so a GAN preset times its real update.
    finetune = stage == "decoder"
    state = init_tokenizer_state(vcfg, tcfg, init_key(tcfg.seed), finetune=finetune)
    state = eqx.tree_at(lambda s: s.step, state, state.step + vcfg.adversarial_start)
    size = vcfg.train_crop or vcfg.image_size
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (tcfg.batch_size, size, size, 3), dtype=np.uint8)
    step = eqx.filter_jit(make_tokenizer_step(vcfg, tcfg, finetune=finetune))

    start = time.perf_counter()
    state, metrics = step(state, batch, jax.random.key(0))
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start

    start = time.perf_counter()
    for i in range(steps):
        state, metrics = step(state, batch, jax.random.key(i + 1))
    jax.block_until_ready((state, metrics))
    seconds = time.perf_counter() - start
    return {
        "stage": stage, "size": size, "batch": tcfg.batch_size,
        "params": count_leaves(state.vqgan), "compile_s": compile_s,
        "steps_per_s": steps / seconds, "images_per_s": steps * tcfg.batch_size / seconds,
        "train_estimate_s": tcfg.steps * seconds / steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="toy", choices=sorted(PRESETS))
    parser.add_argument("--steps", type=int, default=50, help="timed steps per stage")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. tokenizer_train.batch_size=16")
    args = parser.parse_args()
    cfg = get_preset(args.preset, args.overrides)

    print(f"preset {cfg.name} on {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"{args.steps} timed steps per stage")
    header = f"{'stage':<8} {'train px':>8} {'batch':>5} {'params':>9} {'compile s':>9} " \
             f"{'steps/s':>8} {'images/s':>9} {'train s':>9}"
    print(header)
    print("-" * len(header))
    for stage in args.stages:
        r = bench_stage(cfg, stage, args.steps)
        print(f"{r['stage']:<8} {r['size']:>8} {r['batch']:>5} {r['params']:>9,d} {r['compile_s']:>9.1f} "
              f"{r['steps_per_s']:>8.2f} {r['images_per_s']:>9.1f} {r['train_estimate_s']:>9.0f}")
    print("(train s: time for the stage's own steps (tokenizer_train, highres_tokenizer_train, decoder_train) "
          "at this rate, excluding compilation and data generation)")


if __name__ == "__main__":
    main()
