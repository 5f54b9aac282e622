"""Embeddings computed once per prompt (Muse §2.1: the encoder is frozen).

    cache = EmbeddingCache(load_text_encoder("minilm"), directory="runs/text-cache")
    emb_BxLxD, mask_BxL = cache.encode(captions)
"""

import os
from pathlib import Path

import numpy as np

from muse_mini.models.text.encoder import TextEncoder, check_prompts


class EmbeddingCache:
    """``encoder.encode`` that embeds each prompt once, then reuses it.

    With ``directory``, stored as ``<directory>/<encoder.fingerprint>.npz``, rewritten atomically when
    prompts are added; ``read_only=True`` (the pipeline's) keeps new prompts in memory only.
    """

    def __init__(self, encoder: TextEncoder, directory: str | Path | None = None, *, read_only: bool = False):
        self.encoder = encoder
        self.directory = Path(directory).expanduser() if directory is not None else None
        self.read_only = bool(read_only)
        self._table: dict[str, np.ndarray] | None = None  # prompt -> emb_TxD, its T real tokens
        self.hits = self.misses = 0

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @property
    def max_length(self) -> int:
        return self.encoder.max_length

    @property
    def path(self) -> Path | None:
        """The on-disk store (hashing the weights on first access when there is one)."""
        return self.directory / f"{self.encoder.fingerprint}.npz" if self.directory is not None else None

    def encode(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Same result as ``encoder.encode(prompts)``, encoding only prompts not seen before."""
        prompts = check_prompts(prompts)
        table = self._load()
        missing = list(dict.fromkeys(p for p in prompts if p not in table))
        # A miss is a prompt that had to be encoded; repeats within a call are hits.
        self.misses += len(missing)
        self.hits += len(prompts) - len(missing)
        if missing:
            emb_BxLxD, mask_BxL = self.encoder.encode(missing)
            for prompt, emb_LxD, mask_L in zip(missing, emb_BxLxD, mask_BxL):
                table[prompt] = emb_LxD[: mask_L.sum()].copy()  # masks are prefixes: right padding
            if not self.read_only:
                self._save()
        out = np.zeros((len(prompts), self.max_length, self.dim), np.float32)
        mask = np.zeros((len(prompts), self.max_length), bool)
        for i, prompt in enumerate(prompts):
            n = len(table[prompt])
            out[i, :n], mask[i, :n] = table[prompt], True
        return out, mask

    __call__ = encode

    def __len__(self) -> int:
        return len(self._load())

    def _load(self) -> dict[str, np.ndarray]:
        if self._table is None:
            self._table = {}
            if self.path is not None and self.path.is_file():
                with np.load(self.path, allow_pickle=False) as f:
                    pieces = np.split(f["tokens"], np.cumsum(f["lengths"])[:-1])
                    self._table = dict(zip(f["texts"].tolist(), pieces))
        return self._table

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "wb") as f:  # a file object stops np.savez appending ".npz"
            np.savez(
                f,
                texts=np.array(list(self._table), dtype=str),
                lengths=np.array([len(e) for e in self._table.values()], np.int64),
                tokens=np.concatenate(list(self._table.values())),
            )
        os.replace(tmp, self.path)
