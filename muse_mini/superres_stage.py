"""Stage 4: training the super-resolution token translator (Muse §2.4).

The high-res tokens of each training image are masked at an arccos rate and
predicted from the ground-truth low-res tokens (the base tokenizer on the
2×-downsampled image; with ``lowres_input="pixels"`` the image they decode
to, stored with the data) and the text, with the same 10% text dropout as the base
model (§2.7). Same trainer, same train step as the base stage; only the model
and its loss differ. Optimiser: Table 6 (as Table 4).
"""

from __future__ import annotations

from pathlib import Path

from muse_mini.base_stage import load_transformer, train_transformer
from muse_mini.config import MuseConfig
from muse_mini.training import stage_complete


def build_superres(cfg: MuseConfig, key):
    """The super-res transformer sized by ``cfg`` (both tokenizers' vocabularies and grids)."""
    from muse_mini.superres import SuperResTransformer

    return SuperResTransformer(
        cfg.superres, vocab_size=cfg.highres_tokenizer.codebook_size,
        seq_len=cfg.highres_tokenizer.grid ** 2, lowres_vocab_size=cfg.tokenizer.codebook_size,
        lowres_seq_len=cfg.tokenizer.grid ** 2, text_width=cfg.text.width,
        lowres_patch=cfg.tokenizer.image_size // cfg.tokenizer.grid, key=key,
    )


def _superres_loss(cfg: MuseConfig):
    from muse_mini.superres import lowres_condition, superres_loss

    def loss_fn(model, batch, key):
        # lowres_input="pixels": the data holds the decoded low-res images.
        lowres = lowres_condition(model, batch["tokens"], images=batch.get("lowres_images"))
        return superres_loss(
            model, batch["hr_tokens"], lowres, batch["text"], batch["text_mask"], key,
            cond_drop=cfg.superres.cond_drop,
        )

    return loss_fn


def train_superres(cfg: MuseConfig, run_dir, *, tokenizer_run, highres_tokenizer_run,
                   progress: bool = True):
    """Train (or resume, or just load) the super-res model in ``run_dir``; returns it."""
    return train_transformer(
        cfg, run_dir, stage="superres", build=build_superres, loss_fn=_superres_loss(cfg),
        train_cfg=cfg.superres_train, progress=progress,
        tokenizer_runs={"tokenizer_run": tokenizer_run, "highres_tokenizer_run": highres_tokenizer_run},
    )


def load_superres(run_dir):
    """``(model, cfg)`` from a finished super-res run."""
    return load_transformer(run_dir, build_superres, "superres_train")


def add_parsers(sub) -> None:
    from muse_mini.cli import add_overrides_argument
    from muse_mini.config import PRESETS

    p = sub.add_parser("train-superres", help="train the super-resolution transformer (resumable)")
    p.add_argument("--preset", default="toy", choices=sorted(PRESETS))
    p.add_argument("--run", required=True, help="run directory, e.g. runs/demo/superres")
    p.add_argument("--tokenizer-run", default=None, help="default: RUN/../tokenizer-base")
    p.add_argument("--highres-tokenizer-run", default=None, help="default: RUN/../tokenizer-highres")
    p.add_argument("--no-progress", action="store_true")
    add_overrides_argument(p)
    p.set_defaults(func=_cli_train)


def _cli_train(args) -> None:
    from muse_mini.config import get_preset

    cfg = get_preset(args.preset, args.overrides)
    run = Path(args.run)
    runs = {
        "tokenizer-run": Path(args.tokenizer_run or run.parent / "tokenizer-base"),
        "highres-tokenizer-run": Path(args.highres_tokenizer_run or run.parent / "tokenizer-highres"),
    }
    for flag, path in runs.items():
        if not stage_complete(path):
            raise FileNotFoundError(f"--{flag}: {path} holds no finished tokenizer run")
    train_superres(cfg, run, tokenizer_run=runs["tokenizer-run"],
                   highres_tokenizer_run=runs["highres-tokenizer-run"], progress=not args.no_progress)
    print(f"super-res model trained in {run}")
