"""Encoder weights straight from Hugging Face safetensors files, one tensor at a time.

muse_mini is torch-free, so only ``model.safetensors`` (single or sharded with
an index) loads; tensors are read lazily as numpy arrays.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
from safetensors import safe_open


class TextEncoderError(RuntimeError):
    """A text encoder could not be found, verified or loaded; the message says what to do."""


class SafetensorsWeights(Mapping):
    """Lazy name -> numpy array view of a checkpoint directory (single file or sharded)."""

    def __init__(self, directory: Path):
        index = directory / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            self.files = sorted({directory / f for f in weight_map.values()})
            self._where = {name: directory / f for name, f in weight_map.items()}
        elif (directory / "model.safetensors").is_file():
            self.files = [directory / "model.safetensors"]
            with safe_open(self.files[0], framework="numpy") as f:
                self._where = {name: self.files[0] for name in f.keys()}
        else:
            raise TextEncoderError(
                f"{directory} has no model.safetensors (or model.safetensors.index.json). "
                "Only safetensors checkpoints load: muse_mini is torch-free, so pytorch_model.bin "
                "must first be converted (e.g. save_pretrained(..., safe_serialization=True))."
            )
        self._handles = {}

    def __getitem__(self, name: str) -> np.ndarray:
        path = self._where[name]
        if path not in self._handles:
            self._handles[path] = safe_open(path, framework="numpy")
        return self._handles[path].get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)
