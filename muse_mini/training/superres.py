"""§2.4: the super-res translator learns masked high-res tokens from the low-res ones and the text
(Table 6), through the base stage's :func:`.base.train_transformer`."""

from __future__ import annotations

import functools

from muse_mini.config import MuseConfig
from muse_mini.models.build import build_superres
from muse_mini.runs.load import load_tokenizer, refusing_superres_without_decoder
from muse_mini.training.base import train_transformer


def train_superres(cfg: MuseConfig, run_dir, *, tokenizer_run, highres_tokenizer_run, progress: bool = True):
    build = build_superres
    if cfg.superres.lowres_input == "pixels":  # the model keeps the low-res tokenizer's decoder, frozen
        build = functools.partial(build_superres, lowres_tokenizer=load_tokenizer(tokenizer_run))
    with refusing_superres_without_decoder(run_dir):
        return train_transformer(
            cfg, run_dir, stage="superres", build=build, progress=progress,
            tokenizer_runs={"tokenizer_run": tokenizer_run, "highres_tokenizer_run": highres_tokenizer_run},
        )
