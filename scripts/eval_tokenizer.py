"""Reconstruction quality of finished tokenizer runs on hold-out Shapes scenes.

    .venv/bin/python scripts/eval_tokenizer.py runs/demo/tokenizer-base runs/demo/tokenizer-highres --n 1000

For each run: PSNR, codebook usage and perplexity over the hold-out tokens, and
the fraction of reconstructions whose caption the Shapes evaluator accepts
(the toy preset's target is ≥ 98% at both resolutions).
"""

import argparse
import json
import time

from muse_mini.data.shapes import generate
from muse_mini.training.tokenizer import evaluate_tokenizer
from muse_mini.runs.load import load_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="finished tokenizer run directories")
    parser.add_argument("--n", type=int, default=1000, help="number of hold-out scenes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--split", default="holdout", choices=("train", "holdout"))
    args = parser.parse_args()
    for run in args.runs:
        vqgan = load_tokenizer(run)
        images, captions, _ = generate(args.n, seed=args.seed, split=args.split, resolution=vqgan.image_size)
        start = time.perf_counter()
        result = evaluate_tokenizer(vqgan, images, list(captions))
        result["eval_s"] = round(time.perf_counter() - start, 1)
        print(json.dumps({"run": run, "image_size": vqgan.image_size, **result}))


if __name__ == "__main__":
    main()
