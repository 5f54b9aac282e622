"""Stage 2: training the base masked transformer on tokenised, captioned images.

Glue only: the model is :mod:`muse_mini.models.transformer`, the loss (arccos masking,
§2.6; 10% text dropout, §2.7) is :func:`muse_mini.training.losses.masked_token_loss`,
and the loop is the shared trainer (:func:`muse_mini.training.loop.train`), so the
run resumes bit-exactly. The optimiser follows Table 4 (Adafactor, β1 = 0.9,
weight decay 0.045, cosine decay with warmup); the toy preset scales it.

A run directory holds ``config.json`` (the whole :class:`MuseConfig`, and where
the frozen tokenizer lives), ``data.npz`` (token maps and text embeddings), the
checkpoints and ``metrics.jsonl``.
"""

from __future__ import annotations

import functools
from pathlib import Path

from muse_mini.config import DATA_RUNTIME_FIELDS, MuseConfig
from muse_mini.models.build import build_base
from muse_mini.training.losses import masked_token_loss
from muse_mini.runs.layout import relative_run_path, stage_complete
from muse_mini.runs.load import load_tokenizer
from muse_mini.training.token_data import PickledCacheError, TokenData, build_token_data
from muse_mini.parallel.hosts import barrier, is_main_process, local_rows
from muse_mini.parallel.mesh import make_mesh
from muse_mini.parallel.rules import batch_sharding, check_batch_size
from muse_mini.training.keys import epoch_batch_indices
from muse_mini.training.feeds import Feed, check_cache_size, data_from_tokenizer, loss_for_feed, make_feed
from muse_mini.training.loop import train
from muse_mini.training.optim import init_train_state, make_optimizer, make_train_step


def stage_metadata(run_dir: Path, cfg: MuseConfig, stage: str, **runs) -> dict:
    """The run's ``config.json`` metadata: the whole config, and where its inputs live."""
    return {
        "stage": stage,
        "config": cfg.to_dict(),
        **{name: relative_run_path(path, run_dir) for name, path in runs.items()},
    }


def cached_token_data(run_dir: Path, cfg: MuseConfig, tokenizer, highres_tokenizer=None,
                      progress: bool = True) -> TokenData:
    """``run_dir/data.npz``: tokenised training set, built once per run.

    A cache an older muse_mini wrote with pickles is rebuilt, never unpickled:
    its contents are a deterministic function of the config and the tokenizers.
    In a multi-process job process 0 builds it and the others read it.
    """
    path = run_dir / "data.npz"
    data = None
    if is_main_process():
        if path.is_file():
            try:
                data = TokenData.load(path)
            except PickledCacheError:
                path.unlink()
        if data is None:
            data = build_token_data(cfg, tokenizer, highres_tokenizer, cache_dir=run_dir.parent / "text-cache",
                                    progress=progress)
            data.save(path)
    barrier(f"token data {path}")
    return data if data is not None else TokenData.load(path)


def _base_loss(cfg: MuseConfig):
    def loss_fn(model, batch, key):
        return masked_token_loss(
            model, batch["tokens"], batch["text"], batch["text_mask"], key, cond_drop=cfg.base.cond_drop
        )

    return loss_fn


# The MuseConfig sections a transformer stage does not depend on: changing
# them (a sampler default, the other stage's size, the decoder finetuned after
# both, §2.5) keeps its finished run valid.
_LATER = ("sampler", "superres_sampler", "decoder", "decoder_train", "mesh")
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
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = data_from_tokenizer(cfg, tokenizer_runs["tokenizer_run"])
    tc = train_cfg
    mesh = make_mesh(cfg.mesh)  # ``mesh`` may change on resume: it is in INDEPENDENT_SECTIONS
    check_batch_size(tc.batch_size, mesh, f"{stage}_train.batch_size")
    rows = local_rows(batch_sharding(mesh), tc.batch_size)  # this process's part of each batch
    optimizer = make_optimizer(tc)
    if cfg.data.resolved_feed == "cache" and not stage_complete(run_dir):
        check_cache_size(cfg)
    metadata = stage_metadata(run_dir, cfg, stage, **tokenizer_runs)
    @functools.cache  # loaded on the first batch: a finished run needs none, an extended one does
    def data() -> TokenData:
        tokenizers = [load_tokenizer(path) for path in tokenizer_runs.values()]
        return cached_token_data(run_dir, cfg, *tokenizers, progress=progress)

    @functools.cache  # opened on the first batch, like the data
    def feed() -> Feed:
        return make_feed(cfg, stage=stage, tokenizer_runs=tokenizer_runs, rows=rows, batch_size=tc.batch_size,
                         seed=tc.seed, cached_data=data, cache_dir=run_dir.parent / "text-cache")

    def batch_fn(step):
        return feed().batch_fn(step)

    loss_fn = loss_for_feed(cfg, stage, loss_fn)
    state = train(
        run_dir, init=lambda key: init_train_state(build(cfg, key), optimizer), mesh=mesh, step_fn=make_train_step(loss_fn, optimizer),
        batch_fn=batch_fn, cfg=tc, metadata=metadata, progress=progress,
        config_ignore=[f"config.{section}" for section in INDEPENDENT_SECTIONS[stage]]
        + [f"config.data.{name}" for name in DATA_RUNTIME_FIELDS],
        config_defaults={"config": MuseConfig().to_dict()}, model_of=lambda s: s.model,
    )
    if feed.cache_info().currsize:
        feed().close()
    return state.model


def train_base(cfg: MuseConfig, run_dir, *, tokenizer_run, progress: bool = True):
    """Train (or resume, or just load) the base model in ``run_dir``; returns it."""
    return train_transformer(
        cfg, run_dir, stage="base", build=build_base, loss_fn=_base_loss(cfg),
        train_cfg=cfg.base_train, tokenizer_runs={"tokenizer_run": tokenizer_run}, progress=progress,
    )
