"""``muse-mini tokenize``: encode a dataset once with the frozen tokenizers into token shards.

The training stages then stream the shards (``data.tokens=SHARDS``) instead of
pixels. ``--run`` is a pipeline directory holding ``tokenizer-base`` (and
``tokenizer-highres``, for super-res), or a tokenizer run itself. Rerun the
same command to resume an interrupted pass: finished shards are kept.
Launched as several processes (``jax.distributed``), each takes its own shards.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from muse_mini.cli.common import add_overrides_argument, add_preset_argument, add_progress_argument, check_out_dir
from muse_mini.config import get_preset
from muse_mini.runs.layout import stage_complete


def add_parsers(sub) -> None:
    p = sub.add_parser("tokenize", help="encode a dataset once into token shards the transformer stages stream",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_preset_argument(p)
    p.add_argument("--source", required=True,
                   help="the images: a webdataset folder or DIR/{00000..00099}.tar, parquet, an imagefolder, "
                        "a save_to_disk folder, a hub name, or 'shapes' (sets data.source)")
    p.add_argument("--run", required=True, type=Path,
                   help="pipeline directory with tokenizer-base/ (and tokenizer-highres/), or a tokenizer run")
    p.add_argument("--out", required=True, type=Path, help="token-shard directory to write (or resume)")
    p.add_argument("--tokenizer-run", type=Path, default=None, help="base tokenizer run (default: RUN/tokenizer-base)")
    p.add_argument("--highres-tokenizer-run", type=Path, default=None,
                   help="high-res tokenizer run (default: RUN/tokenizer-highres when it exists)")
    add_progress_argument(p)
    add_overrides_argument(p)
    p.set_defaults(func=main)


def _runs(args) -> tuple[Path, Path | None]:
    run = args.run
    tok = args.tokenizer_run or (run if stage_complete(run) else run / "tokenizer-base")
    if not stage_complete(tok):
        raise FileNotFoundError(f"--run: {tok} holds no finished base tokenizer run; train one with "
                                f"`muse-mini train-tokenizer --stage base --run {run / 'tokenizer-base'}`")
    hr = args.highres_tokenizer_run
    if hr is None and stage_complete(run / "tokenizer-highres"):
        hr = run / "tokenizer-highres"
    if hr is not None and not stage_complete(hr):
        raise FileNotFoundError(f"--highres-tokenizer-run: {hr} holds no finished tokenizer run")
    return tok, hr


def main(args) -> int:
    from muse_mini.training.pretokenize import tokenize_dataset

    out = check_out_dir(args.out)
    cfg = get_preset(args.preset, [*args.overrides, f"data.source={args.source}"])
    tok, hr = _runs(args)
    manifest = tokenize_dataset(cfg, out, tokenizer_run=tok, highres_tokenizer_run=hr,
                                progress=not args.no_progress)
    n = sum(s["count"] for s in manifest["shards"])
    print(f"wrote {n} examples in {len(manifest['shards'])} token shards to {out} "
          f"(text: {manifest['text']['mode']}); train with data.tokens={out}")
    return 0
