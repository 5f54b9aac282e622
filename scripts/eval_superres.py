"""Does super-res add detail? Super-res PSNR against bicubic upsampling (§2.4).

    .venv/bin/python scripts/eval_superres.py runs/demo --n 500

On ``n`` hold-out Shapes scenes: tokenise the true 32×32 image with the base
tokenizer, let super-res translate those tokens into 16×16 high-res tokens
(the sampler's default 8 steps), decode them with the high-res tokenizer and
compare with the true 64×64 image. The baseline is a bicubic upsampling of
the base tokenizer's 32×32 reconstruction. Prints both PSNRs (dB).

A third figure, a rough gauge of the edge detail left in the low-res tokens:
the same bicubic upsampling with every pixel snapped to the nearest Shapes
colour (or white). From the *true* 32×32 image this recovers the 64×64 scene
exactly (objects are flat and 2×2 averaging keeps where their edges are), so
what it loses from the tokenizer's reconstruction is mostly edge positions
that the base tokenizer's codes blurred.

A fourth, the ceiling: the high-res tokenizer's own reconstruction of the
true 64×64 image, which perfect super-res tokens would give. ``--steps``,
``--temperature`` and ``--choice-temperature`` change the super-res sampler.

The high-res decoder is the pipeline's: the finetuned one of §2.5 when the
run has ``decoder/``. Then the same tokens are also decoded by the high-res
tokenizer's own decoder (``*_tokenizer_decoder_*`` figures), for comparison.
"""

import argparse
import dataclasses
import json
from pathlib import Path

import jax
import numpy as np

from muse_mini import viz
from muse_mini.decoding.guidance import decode_guided, guided_contexts
from muse_mini.pipeline import Pipeline
from muse_mini.data.captions import COLOURS
from muse_mini.data.shapes import downsample, generate
from muse_mini.models.codec import decode_tokens, encode_images
from muse_mini.runs.load import STAGE_DIRS, load_tokenizer
from muse_mini.runs.layout import stage_complete
from muse_mini.models.images import psnr


PALETTE = np.array([(255, 255, 255), *COLOURS.values()], np.float32)


def snap_to_palette(images_BxHxWx3: np.ndarray) -> np.ndarray:
    """Every pixel replaced by the nearest Shapes colour or white."""
    dist = np.square(images_BxHxWx3[..., None, :].astype(np.float32) - PALETTE).sum(-1)
    return PALETTE[dist.argmin(-1)].astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="pipeline directory with a finished super-res stage")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    for name in ("steps", "temperature", "choice_temperature"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int if name == "steps" else float,
                            help="change the preset's super-res sampler")
    args = parser.parse_args()

    pipe = Pipeline.from_run(args.run, require_superres=True)
    changes = {k: getattr(args, k) for k in ("steps", "temperature", "choice_temperature")
               if getattr(args, k) is not None}
    sampler = dataclasses.replace(pipe.cfg.superres_sampler, **changes)
    decoders = {"": pipe.highres_tokenizer}
    if stage_complete(Path(args.run) / STAGE_DIRS["decoder"]):
        decoders["_tokenizer_decoder"] = load_tokenizer(Path(args.run) / STAGE_DIRS["highres_tokenizer"])
    images_hr, captions, _ = generate(args.n, seed=args.seed, split="holdout")
    images_lo = downsample(images_hr)
    bicubic_psnr, snapped_psnr = [], []
    sr_psnr, ceiling_psnr = ({suffix: [] for suffix in decoders} for _ in range(2))
    for start in range(0, args.n, args.batch):
        hr, lo = images_hr[start:start + args.batch], images_lo[start:start + args.batch]
        low_tokens = encode_images(pipe.tokenizer, lo).reshape(len(lo), -1)
        text, mask = pipe.encode(captions[start:start + args.batch])
        decoded = decode_tokens(pipe.tokenizer, low_tokens)
        context = (low_tokens, text, mask)
        traj = decode_guided(pipe.superres, *guided_contexts(context), jax.random.key(start), sampler)
        true_tokens = encode_images(pipe.highres_tokenizer, hr)
        for suffix, decoder in decoders.items():
            sr = decode_tokens(decoder, np.asarray(traj.tokens_BxN))
            sr_psnr[suffix] += [psnr(a, b) for a, b in zip(sr, hr)]
            ceiling_psnr[suffix] += [psnr(a, b) for a, b in zip(decode_tokens(decoder, true_tokens), hr)]
        bicubic = viz.bicubic_upsample(decoded, 2)
        bicubic_psnr += [psnr(a, b) for a, b in zip(bicubic, hr)]
        snapped_psnr += [psnr(a, b) for a, b in zip(snap_to_palette(bicubic), hr)]
    result = {"n": args.n, "sampler": dataclasses.asdict(sampler),
              "bicubic_psnr_db": float(np.mean(bicubic_psnr)),
              "snapped_bicubic_psnr_db": float(np.mean(snapped_psnr))}
    for suffix in decoders:
        result[f"superres{suffix}_psnr_db"] = float(np.mean(sr_psnr[suffix]))
        result[f"highres{suffix}_ceiling_psnr_db"] = float(np.mean(ceiling_psnr[suffix]))
    result["gain_db"] = result["superres_psnr_db"] - result["bicubic_psnr_db"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
