"""``muse-mini train-tokenizer | train-base | train-superres``: one resumable stage each (§2.2-2.5)."""

from __future__ import annotations

from pathlib import Path

from muse_mini.cli.common import add_overrides_argument, add_preset_argument, add_progress_argument
from muse_mini.config import TOKENIZER_STAGES, get_preset
from muse_mini.runs.layout import stage_complete
from muse_mini.training.base import train_base
from muse_mini.training.superres import train_superres
from muse_mini.training.tokenizer import train_tokenizer


def _stage_parser(sub, name: str, help: str, run_example: str, func, add_inputs):
    p = sub.add_parser(name, help=help)
    add_preset_argument(p)
    p.add_argument("--run", required=True, help=f"run directory, e.g. {run_example}")
    add_inputs(p)
    add_progress_argument(p)
    add_overrides_argument(p)
    p.set_defaults(func=func)


def _tokenizer_inputs(p) -> None:
    p.add_argument("--stage", required=True, choices=TOKENIZER_STAGES,
                   help="base: cfg.tokenizer on low-res images; highres: cfg.highres_tokenizer; "
                        "decoder: cfg.decoder's larger high-res decoder (§2.5; needs --finetune-decoder-from)")
    p.add_argument("--finetune-decoder-from", default=None, metavar="RUN",
                   help="finished tokenizer run: keep its encoder and codebook frozen and train a "
                        "new decoder sized by decoder_channels/decoder_res_blocks (§2.5)")


def _base_inputs(p) -> None:
    p.add_argument("--tokenizer-run", default=None,
                   help="finished base tokenizer run (default: RUN/../tokenizer-base)")


def _superres_inputs(p) -> None:
    _base_inputs(p)
    p.add_argument("--highres-tokenizer-run", default=None,
                   help="finished high-res tokenizer run (default: RUN/../tokenizer-highres)")


def add_parsers(sub) -> None:
    _stage_parser(sub, "train-tokenizer", "train a VQGAN tokenizer (resumable; §2.2)",
                  "runs/demo/tokenizer-base", run_tokenizer, _tokenizer_inputs)
    _stage_parser(sub, "train-base", "train the base masked transformer (resumable; §2.3)",
                  "runs/demo/base", run_base, _base_inputs)
    _stage_parser(sub, "train-superres", "train the super-resolution transformer (resumable; §2.4)",
                  "runs/demo/superres", run_superres, _superres_inputs)


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
