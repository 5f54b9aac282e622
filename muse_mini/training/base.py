"""§2.3: training the base masked transformer (and, through `train_transformer`, super-res §2.4).

A step reads through three more modules: batches from :mod:`.feeds`, loss and
update from :mod:`.losses`, the loop from :mod:`.loop`.
"""

from __future__ import annotations

from pathlib import Path

from muse_mini.config import DATA_RUNTIME_FIELDS, MuseConfig
from muse_mini.models.build import build_base
from muse_mini.parallel.hosts import local_rows
from muse_mini.parallel.mesh import make_mesh
from muse_mini.parallel.rules import batch_sharding, check_batch_size
from muse_mini.runs.layout import relative_run_path
from muse_mini.training.feeds import check_data_source, open_feed
from muse_mini.training.loop import train
from muse_mini.training.losses import init_train_state, make_train_step, stage_loss
from muse_mini.training.optim import make_optimizer
from muse_mini.training.rundir import RunSpec

# The MuseConfig sections a transformer stage does not depend on: changing them (a
# sampler default, the other stage's size, the decoder finetuned after both, §2.5)
# keeps its finished run valid.
_LATER = ("sampler", "superres_sampler", "edit", "decoder", "decoder_train", "mesh")
INDEPENDENT_SECTIONS = {
    "base": ("superres", "superres_train", *_LATER),
    "superres": ("base", "base_train", *_LATER),
}


def stage_metadata(run_dir: Path, cfg: MuseConfig, stage: str, **runs) -> dict:
    # the whole config, and where its input runs live
    return {
        "stage": stage,
        "config": cfg.to_dict(),
        **{name: relative_run_path(path, run_dir) for name, path in runs.items()},
    }


def train_transformer(cfg: MuseConfig, run_dir, *, stage: str, build, tokenizer_runs: dict,
                      progress: bool = True):
    """Train (or resume, or just load) the ``"base"`` or ``"superres"`` stage; returns the model.
    ``tokenizer_runs``: ``tokenizer_run`` (and super-res's ``highres_tokenizer_run``)."""
    run_dir = Path(run_dir)
    check_data_source(cfg, tokenizer_runs["tokenizer_run"])
    tc = getattr(cfg, f"{stage}_train")
    mesh = make_mesh(cfg.mesh)  # the mesh may change on resume: it is an independent section
    check_batch_size(tc.batch_size, mesh, f"{stage}_train.batch_size")
    run = RunSpec(
        run_dir, tc, stage_metadata(run_dir, cfg, stage, **tokenizer_runs),
        ignore=[f"config.{s}" for s in INDEPENDENT_SECTIONS[stage]] + [f"config.data.{f}" for f in DATA_RUNTIME_FIELDS],
        defaults={"config": MuseConfig().to_dict()}, model_of=lambda state: state.model,
    )
    run.check_config()  # before any data is read
    feed = None
    if not run.finished():  # a finished run needs no data
        feed = open_feed(cfg, stage=stage, tokenizer_runs=tokenizer_runs, batch_size=tc.batch_size, seed=tc.seed,
                         rows=local_rows(batch_sharding(mesh), tc.batch_size), run_dir=run_dir, progress=progress)
    optimizer = make_optimizer(tc)
    step_fn = make_train_step(stage_loss(cfg, stage), optimizer, encode=feed and feed.encode)
    try:
        state = train(run, init=lambda key: init_train_state(build(cfg, key), optimizer), step_fn=step_fn,
                      batch_fn=feed and feed.batch_fn, mesh=mesh, progress=progress)
    finally:
        if feed is not None:
            feed.close()
    return state.model


def train_base(cfg: MuseConfig, run_dir, *, tokenizer_run, progress: bool = True):
    """Train (or resume, or just load) the base model in ``run_dir``; returns it."""
    return train_transformer(cfg, run_dir, stage="base", build=build_base,
                             tokenizer_runs={"tokenizer_run": tokenizer_run}, progress=progress)
