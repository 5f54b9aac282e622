"""``muse-mini train-tokenizer | train-base | train-superres``: one resumable stage each (§2.2-2.5)."""

from __future__ import annotations

from pathlib import Path

from muse_mini.cli.common import add_overrides_argument, add_preset_argument, add_progress_argument
from muse_mini.config import TOKENIZER_STAGES, get_preset
from muse_mini.runs.layout import stage_complete
from muse_mini.training.base import train_base
from muse_mini.training.superres import train_superres
from muse_mini.training.tokenizer import train_tokenizer


def add_parsers(sub) -> None:
    p = sub.add_parser("train-tokenizer", help="train a VQGAN tokenizer (resumable; §2.2)")
    add_preset_argument(p)
    p.add_argument("--stage", required=True, choices=TOKENIZER_STAGES,
                   help="base: cfg.tokenizer on low-res images; highres: cfg.highres_tokenizer; "
                        "decoder: cfg.decoder's larger high-res decoder (§2.5; needs --finetune-decoder-from)")
    p.add_argument("--run", required=True, help="run directory, e.g. runs/demo/tokenizer-base")
    p.add_argument("--finetune-decoder-from", default=None, metavar="RUN",
                   help="finished tokenizer run: keep its encoder and codebook frozen and train a "
                        "new decoder sized by decoder_channels/decoder_res_blocks (§2.5)")
    add_progress_argument(p)
    add_overrides_argument(p)
    p.set_defaults(func=run_tokenizer)

    p = sub.add_parser("train-base", help="train the base masked transformer (resumable; §2.3)")
    add_preset_argument(p)
    p.add_argument("--run", required=True, help="run directory, e.g. runs/demo/base")
    p.add_argument("--tokenizer-run", default=None,
                   help="finished base tokenizer run (default: RUN/../tokenizer-base)")
    add_progress_argument(p)
    add_overrides_argument(p)
    p.set_defaults(func=run_base)

    p = sub.add_parser("train-superres", help="train the super-resolution transformer (resumable; §2.4)")
    add_preset_argument(p)
    p.add_argument("--run", required=True, help="run directory, e.g. runs/demo/superres")
    p.add_argument("--tokenizer-run", default=None, help="finished base tokenizer run (default: RUN/../tokenizer-base)")
    p.add_argument("--highres-tokenizer-run", default=None,
                   help="finished high-res tokenizer run (default: RUN/../tokenizer-highres)")
    add_progress_argument(p)
    add_overrides_argument(p)
    p.set_defaults(func=run_superres)


def _finished(flag: str, path: Path, hint: str = "") -> Path:
    if not stage_complete(path):
        raise FileNotFoundError(f"--{flag}: {path} holds no finished tokenizer run{hint}")
    return path


def run_tokenizer(args) -> None:
    cfg = get_preset(args.preset, args.overrides)
    if args.stage == "decoder" and not args.finetune_decoder_from:
        raise ValueError("--finetune-decoder-from: --stage decoder needs the finished high-res tokenizer run "
                         "whose decoder it replaces, e.g. runs/demo/tokenizer-highres")
    if args.finetune_decoder_from:
        _finished("finetune-decoder-from", Path(args.finetune_decoder_from))
    train_tokenizer(cfg, args.stage, args.run, progress=not args.no_progress,
                    finetune_from=args.finetune_decoder_from)
    print(f"{args.stage} tokenizer trained in {args.run}")


def run_base(args) -> None:
    cfg = get_preset(args.preset, args.overrides)
    run = Path(args.run)
    tok = Path(args.tokenizer_run) if args.tokenizer_run else run.parent / "tokenizer-base"
    _finished("tokenizer-run", tok, f"; train one with `muse-mini train-tokenizer --stage base --run {tok}`")
    train_base(cfg, run, tokenizer_run=tok, progress=not args.no_progress)
    print(f"base model trained in {run}")


def run_superres(args) -> None:
    cfg = get_preset(args.preset, args.overrides)
    run = Path(args.run)
    tok = _finished("tokenizer-run", Path(args.tokenizer_run or run.parent / "tokenizer-base"))
    hr = _finished("highres-tokenizer-run", Path(args.highres_tokenizer_run or run.parent / "tokenizer-highres"))
    train_superres(cfg, run, tokenizer_run=tok, highres_tokenizer_run=hr, progress=not args.no_progress)
    print(f"super-res model trained in {run}")
