"""Trained models from run directories, for sampling, editing and evaluation.

Reads ``config.json`` and ``model.eqx`` (or ``model_ema.eqx``) only; no optimiser or trainer is imported.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import equinox as eqx
import jax

from muse_mini.config import MuseConfig, TrainConfig, VQGANConfig, from_dict
from muse_mini.models.build import build_base, build_superres
from muse_mini.models.vqgan import VQGAN
from muse_mini.runs.checkpoint import CheckpointError, load_checkpoint
from muse_mini.runs.ema import EMA_FILE, PAPER_DECAY, check_decay, planned_steps, write_ema
from muse_mini.runs.layout import CONFIG_FILE, read_run_config, relative_run_path, stage_complete
from muse_mini.runs.weights import load_model


def _from_stored(cls, data, path: Path, what: str):
    try:
        return from_dict(cls, data)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: its {what} does not fit this version of muse_mini ({e})") from None


def read_tokenizer_config(run_dir) -> tuple[VQGANConfig, TrainConfig, dict]:
    """``(VQGANConfig, TrainConfig, metadata)`` from a tokenizer run's ``config.json``."""
    stored = read_run_config(run_dir)
    meta, path = stored["metadata"], Path(run_dir) / CONFIG_FILE
    if "tokenizer" not in meta:
        raise ValueError(f"run: {run_dir} is a {meta.get('stage', 'unknown')!r} run, not a tokenizer run")
    return (_from_stored(VQGANConfig, meta["tokenizer"], path, "tokenizer config"),
            _from_stored(TrainConfig, stored["train_config"], path, "train_config"), meta)


def load_tokenizer(run_dir, *, with_config: bool = False):
    """The VQGAN of a finished tokenizer run; ``(vqgan, VQGANConfig)`` with ``with_config``."""
    vcfg, _, _ = read_tokenizer_config(run_dir)
    like = eqx.filter_eval_shape(lambda k: VQGAN(vcfg, key=k), jax.random.key(0))
    vqgan = load_model(run_dir, like)
    return (vqgan, vcfg) if with_config else vqgan


STAGE_DIRS = {
    "tokenizer": "tokenizer-base",
    "highres_tokenizer": "tokenizer-highres",
    "base": "base",
    "superres": "superres",
    "decoder": "decoder",
}


def input_run(stage_dir: Path, key: str, default: Path) -> tuple[Path, str]:
    """The input run a stage recorded under ``key`` (relative to the stage, so a copied pipeline points
    at its own copies), else ``default``; and for errors where that path came from."""
    recorded = read_run_config(stage_dir)["metadata"].get(key)
    if not recorded:
        return default, ""
    path = Path(os.path.normpath(os.path.join(os.path.abspath(stage_dir), recorded)))
    return path, f" (recorded as {key}={recorded!r} in {stage_dir / CONFIG_FILE})"


def pipeline_runs(run_dir, *, require_superres: bool = False) -> dict[str, Path]:
    """The finished stage runs of a pipeline directory, by stage: tokenizer and base always; highres_tokenizer
    and superres when super-res is trained; decoder (§2.5) when finetuned from that high-res tokenizer."""
    run_dir = Path(run_dir)
    dirs = {name: run_dir / sub for name, sub in STAGE_DIRS.items()}
    if not stage_complete(dirs["base"]):  # name the first stage to train
        first = "base" if stage_complete(dirs["tokenizer"]) else "tokenizer"
        raise FileNotFoundError(f"run_dir: {dirs[first]} holds no finished {first} run; "
                                "train the pipeline first (make demo, or muse-mini train-base)")
    tokenizer_dir, where = input_run(dirs["base"], "tokenizer_run", dirs["tokenizer"])
    if not stage_complete(tokenizer_dir):
        raise FileNotFoundError(f"run_dir: {tokenizer_dir}{where} holds no finished tokenizer run; "
                                "train the pipeline first (make demo, or muse-mini train-tokenizer)")
    runs = {"tokenizer": tokenizer_dir, "base": dirs["base"]}
    missing = f"{dirs['superres']} holds no finished super-res run"
    if stage_complete(dirs["superres"]):
        highres_dir, where = input_run(dirs["superres"], "highres_tokenizer_run", dirs["highres_tokenizer"])
        missing = f"{highres_dir}{where} holds no finished high-res tokenizer run"
        if stage_complete(highres_dir):
            missing = None
            runs.update(superres=dirs["superres"], highres_tokenizer=highres_dir)
            if stage_complete(dirs["decoder"]):
                check_finetuned_from(dirs["decoder"], highres_dir)
                runs["decoder"] = dirs["decoder"]
    if missing and require_superres:
        raise FileNotFoundError(f"run_dir: {missing}")
    return runs


def check_finetuned_from(run_dir, tokenizer_run) -> None:
    """Raise unless ``run_dir`` is a decoder finetuned from ``tokenizer_run`` (§2.5: it knows only that codebook)."""
    _, _, meta = read_tokenizer_config(run_dir)
    source = meta.get("finetune_from")
    expected = relative_run_path(tokenizer_run, run_dir)
    if source is None or os.path.normpath(source) != os.path.normpath(expected):
        raise ValueError(
            f"{Path(run_dir) / CONFIG_FILE}: expected a decoder finetuned from {tokenizer_run}, "
            f"but it records finetune_from={source!r}"
        )


def read_stage(run_dir) -> tuple[MuseConfig, dict]:
    """The :class:`~muse_mini.config.schema.MuseConfig` and metadata stored by a transformer stage."""
    meta = read_run_config(run_dir)["metadata"]
    if "config" not in meta:
        raise ValueError(f"run: {run_dir} is a {meta.get('stage', 'unknown')!r} run, not a transformer run")
    return _from_stored(MuseConfig, meta["config"], Path(run_dir) / CONFIG_FILE, "config"), meta


def _load_ema(run_dir, like):
    path = Path(run_dir) / EMA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {EMA_FILE}; average its checkpoints first: "
                                f"muse-mini ema --run {run_dir}")
    return load_checkpoint(path, like)[0]


def _load_transformer(run_dir, build, ema: bool = False):
    cfg, _ = read_stage(run_dir)
    like = eqx.filter_eval_shape(lambda k: build(cfg, k), jax.random.key(0))
    if ema:
        return _load_ema(run_dir, like), cfg
    return load_model(run_dir, like), cfg


TRANSFORMER_STAGES = ("base", "superres")


def transformer_skeleton(run_dir):
    """The abstract model of a base or super-res run, from its ``config.json``.

    Tokenizer runs are refused: dead-code restarts make their checkpoints' codes unrelated (and §3 averages the transformer).
    """
    meta = read_run_config(run_dir)["metadata"]
    if "config" not in meta or meta.get("stage") not in TRANSFORMER_STAGES:
        raise ValueError(f"--run: {run_dir} is a {meta.get('stage', 'unknown')!r} "
                         f"{'tokenizer ' if 'tokenizer' in meta else ''}run; "
                         "the offline EMA averages base or super-res transformer runs only")
    cfg, _ = read_stage(run_dir)
    build = build_base if meta["stage"] == "base" else build_superres
    return eqx.filter_eval_shape(lambda k: build(cfg, k), jax.random.key(0))


def average_checkpoints(run_dir, *, decay: float = PAPER_DECAY, every: int | None = None) -> Path:
    """The offline EMA of a base or super-res run's checkpoints (§3) written to ``model_ema.eqx``;
    ``load_base(run_dir, ema=True)`` / ``Pipeline.from_run(..., ema=True)`` read it."""
    check_decay(decay)  # the cheap checks before building the skeleton
    planned_steps(run_dir, every)
    return write_ema(run_dir, decay=decay, every=every, like_model=transformer_skeleton(run_dir))


def load_base(run_dir, *, ema: bool = False):
    """``(model, cfg)`` from a finished base run; ``ema``: its offline EMA weights (``muse-mini ema``, §3)."""
    return _load_transformer(run_dir, build_base, ema)


def load_superres(run_dir, *, ema: bool = False):
    """``(model, cfg)`` from a finished super-res run; ``ema``: its offline EMA weights."""
    with refusing_superres_without_decoder(run_dir):
        return _load_transformer(run_dir, build_superres, ema)


@contextlib.contextmanager
def refusing_superres_without_decoder(run_dir):
    """Turn the leaf mismatch of a pixel-input super-res run saved before the model held its own
    low-res decoder (the model's file, or the training state's) into one line that says how to retrain."""
    try:
        yield
    except CheckpointError as err:
        if err.missing and all(".lowres_decoder." in p for p in err.missing):
            raise CheckpointError(
                f"run_dir: {run_dir} was trained before the super-res model held its own low-res decoder "
                f"(lowres_input='pixels'); retrain the stage: delete {run_dir} and rerun `make demo` "
                "(or muse-mini train-superres)") from None
        raise
