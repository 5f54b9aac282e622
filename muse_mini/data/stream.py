"""Which examples each process reads at each step: a pure function of ``(seed, step)``.

Process ``p`` of ``P`` owns shards ``p, p + P, …`` (as MaxText and Grain split data).
Each epoch it permutes its shards, cuts them into windows of ``window`` shards and
permutes each window's examples, all seeded by ``(seed, epoch, process[, window])``:
step ``s``'s rows come from ``s`` alone, so a resumed run reads what an uninterrupted
one would, and memory is one window's index. Every process takes as many steps per
epoch as the smallest share holds whole batches.
"""

from __future__ import annotations

import bisect
import concurrent.futures
import functools
import threading
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["ShardedOrder", "process_shards", "Prefetch"]


def process_shards(n_shards: int, process_index: int, process_count: int) -> list[int]:
    """The shards process ``process_index`` of ``process_count`` reads (round robin)."""
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index: expected 0 <= index < {process_count}, got {process_index}")
    if n_shards < process_count:
        raise ValueError(f"data: {n_shards} shard(s) cannot be split over {process_count} processes; "
                         f"write at least {process_count} shards (e.g. a smaller shard size)")
    return list(range(process_index, n_shards, process_count))


class ShardedOrder:
    """The ``(shard, row)`` pairs one process reads at each step: ``rows`` of them, from ``counts``
    (examples per shard, of all shards, so every process agrees on the epoch length)."""

    def __init__(self, counts: Sequence[int], rows: int, *, seed: int, process_index: int = 0,
                 process_count: int = 1, window: int = 8):
        if rows < 1:
            raise ValueError(f"rows: expected a positive number of rows per step, got {rows}")
        if window < 1:
            raise ValueError(f"data.shuffle_shards: expected a positive number of shards, got {window}")
        self.counts = [int(c) for c in counts]
        self.rows, self.seed, self.window = rows, seed, window
        self.process_index, self.process_count = process_index, process_count
        self.shards = process_shards(len(self.counts), process_index, process_count)
        shares = [sum(self.counts[p::process_count]) for p in range(process_count)]
        self.steps_per_epoch = min(shares) // rows
        if self.steps_per_epoch == 0:
            p = int(np.argmin(shares))
            raise ValueError(f"data: process {p}'s shards hold {shares[p]} examples, fewer than one "
                             f"batch's {rows} rows per process; use more data or a smaller batch_size")

    def __len__(self) -> int:
        """Examples this process reads per epoch."""
        return self.steps_per_epoch * self.rows

    def _windows(self, epoch: int) -> list[list[int]]:
        order = np.random.default_rng([self.seed, epoch, self.process_index]).permutation(len(self.shards))
        shards = [self.shards[i] for i in order]
        return [shards[i:i + self.window] for i in range(0, len(shards), self.window)]

    @functools.lru_cache(maxsize=4)
    def _window_pairs(self, epoch: int, w: int) -> np.ndarray:
        shards = self._windows(epoch)[w]
        pairs = np.concatenate([np.stack([np.full(self.counts[s], s), np.arange(self.counts[s])], 1)
                                for s in shards]).astype(np.int64)
        rng = np.random.default_rng([self.seed, epoch, self.process_index, w])
        return pairs[rng.permutation(len(pairs))]

    @functools.lru_cache(maxsize=8)
    def _starts(self, epoch: int) -> list[int]:
        sizes = [sum(self.counts[s] for s in win) for win in self._windows(epoch)]
        return list(np.cumsum([0, *sizes]))

    def __call__(self, step: int) -> np.ndarray:
        """``(rows, 2)`` int64 ``(shard, row)`` pairs of step ``step``."""
        epoch, i = divmod(int(step), self.steps_per_epoch)
        starts = self._starts(epoch)
        out = []
        pos, end = i * self.rows, (i + 1) * self.rows
        while pos < end:
            w = bisect.bisect_right(starts, pos) - 1
            take = min(end, starts[w + 1]) - pos
            out.append(self._window_pairs(epoch, w)[pos - starts[w]: pos - starts[w] + take])
            pos += take
        return np.concatenate(out)


class Prefetch:
    """``fn(step)`` with ``fn(step + 1)`` computed in the background (``fn`` is pure in the step)."""

    def __init__(self, fn: Callable[[int], object]):
        self.fn = fn
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="muse-prefetch")
        self._next: tuple[int, concurrent.futures.Future] | None = None
        self._lock = threading.Lock()

    def __call__(self, step: int):
        with self._lock:
            pending, self._next = self._next, None
        result = pending[1].result() if pending is not None and pending[0] == step else self.fn(step)
        with self._lock:
            self._next = (step + 1, self._pool.submit(self.fn, step + 1))
        return result

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
