"""Stage 2: training the base masked transformer on tokenised, captioned images.

Glue only: the model is :mod:`muse_mini.transformer`, the loss (arccos masking,
§2.6; 10% text dropout, §2.7) is :func:`muse_mini.transformer.masked_token_loss`,
and the loop is the shared trainer (:func:`muse_mini.training.train`), so the
run resumes bit-exactly. The optimiser follows Table 4 (Adafactor, β1 = 0.9,
weight decay 0.045, cosine decay with warmup); the toy preset scales it.

A run directory holds ``config.json`` (the whole :class:`MuseConfig`, and where
the frozen tokenizer lives), ``data.npz`` (token maps and text embeddings), the
checkpoints and ``metrics.jsonl``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import equinox as eqx

from muse_mini.config import MuseConfig, from_dict
from muse_mini.token_data import TokenData, build_token_data
from muse_mini.training import (
    epoch_batch_indices, init_key, init_train_state, load_final, make_optimizer, make_train_step,
    relative_run_path, train,
)


def stage_metadata(run_dir: Path, cfg: MuseConfig, stage: str, **runs) -> dict:
    """The run's ``config.json`` metadata: the whole config, and where its inputs live."""
    return {
        "stage": stage,
        "config": cfg.to_dict(),
        **{name: relative_run_path(path, run_dir) for name, path in runs.items()},
    }


def read_stage(run_dir) -> tuple[MuseConfig, dict]:
    """The :class:`MuseConfig` and metadata stored in a stage's ``config.json``."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no config.json; is this a muse_mini run directory?")
    meta = json.loads(path.read_text())["metadata"]
    return from_dict(MuseConfig, meta["config"]), meta


def build_base(cfg: MuseConfig, key):
    """The base transformer sized by ``cfg`` (vocabulary and grid from the tokenizer)."""
    from muse_mini.transformer import BaseTransformer

    return BaseTransformer(
        cfg.base, vocab_size=cfg.tokenizer.codebook_size, seq_len=cfg.tokenizer.grid ** 2,
        text_width=cfg.text.width, key=key,
    )


def cached_token_data(run_dir: Path, cfg: MuseConfig, tokenizer, highres_tokenizer=None,
                      progress: bool = True) -> TokenData:
    """``run_dir/data.npz``: tokenised training set, built once per run."""
    path = run_dir / "data.npz"
    if path.is_file():
        return TokenData.load(path)
    data = build_token_data(cfg, tokenizer, highres_tokenizer, cache_dir=run_dir.parent / "text-cache",
                            progress=progress)
    data.save(path)
    return data


def _base_loss(cfg: MuseConfig):
    from muse_mini.transformer import masked_token_loss

    def loss_fn(model, batch, key):
        return masked_token_loss(
            model, batch["tokens"], batch["text"], batch["text_mask"], key, cond_drop=cfg.base.cond_drop
        )

    return loss_fn


# The MuseConfig sections a transformer stage does not depend on: changing
# them (a sampler default, the other stage's size, the decoder finetuned after
# both, §2.5) keeps its finished run valid.
_LATER = ("sampler", "superres_sampler", "decoder", "decoder_train")
INDEPENDENT_SECTIONS = {
    "base": ("superres", "superres_train", *_LATER),
    "superres": ("base", "base_train", *_LATER),
}


def train_transformer(cfg: MuseConfig, run_dir, *, stage: str, build, loss_fn, train_cfg,
                      tokenizer_runs: dict, progress: bool = True):
    """Train (or resume, or just load) a transformer stage; shared by base and super-res.

    ``tokenizer_runs`` names the frozen tokenizers' run directories, in the
    order :func:`cached_token_data` takes them (base, then high-res). A run
    stores the whole config, but only the sections the stage depends on must
    match on resume (``INDEPENDENT_SECTIONS``).
    """
    from muse_mini.tokenizer_stage import load_tokenizer

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tc = train_cfg
    optimizer = make_optimizer(tc)
    state = init_train_state(build(cfg, init_key(tc.seed)), optimizer)
    metadata = stage_metadata(run_dir, cfg, stage, **tokenizer_runs)
    @functools.cache  # loaded on the first batch: a finished run needs none, an extended one does
    def data() -> TokenData:
        tokenizers = [load_tokenizer(path) for path in tokenizer_runs.values()]
        return cached_token_data(run_dir, cfg, *tokenizers, progress=progress)

    def batch_fn(step):
        return data().batch(epoch_batch_indices(len(data()), tc.batch_size, tc.seed, step))

    state = train(
        run_dir, state=state, step_fn=make_train_step(loss_fn, optimizer),
        batch_fn=batch_fn, cfg=tc, metadata=metadata, progress=progress,
        config_ignore=[f"config.{section}" for section in INDEPENDENT_SECTIONS[stage]],
        config_defaults={"config": MuseConfig().to_dict()},
    )
    return state.model


def load_transformer(run_dir, build, train_field: str):
    """``(model, cfg)`` from a finished transformer run; the skeleton is built abstractly."""
    cfg, _ = read_stage(run_dir)
    optimizer = make_optimizer(getattr(cfg, train_field))
    like = eqx.filter_eval_shape(lambda k: init_train_state(build(cfg, k), optimizer), init_key(0))
    return load_final(run_dir, like).model, cfg


def train_base(cfg: MuseConfig, run_dir, *, tokenizer_run, progress: bool = True):
    """Train (or resume, or just load) the base model in ``run_dir``; returns it."""
    return train_transformer(
        cfg, run_dir, stage="base", build=build_base, loss_fn=_base_loss(cfg),
        train_cfg=cfg.base_train, tokenizer_runs={"tokenizer_run": tokenizer_run}, progress=progress,
    )


def load_base(run_dir):
    """``(model, cfg)`` from a finished base run."""
    return load_transformer(run_dir, build_base, "base_train")


# --------------------------------------------------------------------------
# CLI


def add_parsers(sub) -> None:
    from muse_mini.cli import add_overrides_argument
    from muse_mini.config import PRESETS

    p = sub.add_parser("train-base", help="train the base masked transformer (resumable)")
    p.add_argument("--preset", default="toy", choices=sorted(PRESETS))
    p.add_argument("--run", required=True, help="run directory, e.g. runs/demo/base")
    p.add_argument("--tokenizer-run", default=None,
                   help="finished base tokenizer run (default: RUN/../tokenizer-base)")
    p.add_argument("--no-progress", action="store_true")
    add_overrides_argument(p)
    p.set_defaults(func=_cli_train)


def _cli_train(args) -> None:
    from muse_mini.config import get_preset
    from muse_mini.training import stage_complete

    cfg = get_preset(args.preset, args.overrides)
    run = Path(args.run)
    tok = Path(args.tokenizer_run) if args.tokenizer_run else run.parent / "tokenizer-base"
    if not stage_complete(tok):
        raise FileNotFoundError(f"--tokenizer-run: {tok} holds no finished tokenizer run; "
                                f"train one with `muse-mini train-tokenizer --stage base --run {tok}`")
    train_base(cfg, run, tokenizer_run=tok, progress=not args.no_progress)
    print(f"base model trained in {run}")
