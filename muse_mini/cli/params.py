"""``muse-mini params``: parameter counts per component, no weights allocated."""

from __future__ import annotations

import time

from muse_mini.cli.common import add_overrides_argument, add_preset_argument
from muse_mini.config import get_preset
from muse_mini.models.params import count_params, format_counts


def add_parsers(sub) -> None:
    p = sub.add_parser("params", help="print each component's parameter count (no allocation)")
    add_preset_argument(p)
    add_overrides_argument(p)
    p.set_defaults(func=run)


def run(args) -> None:
    start = time.perf_counter()
    cfg = get_preset(args.preset, args.overrides)
    print(f"preset {cfg.name}")
    print(format_counts(count_params(cfg)))
    print(f"(counted abstractly with eqx.filter_eval_shape in {time.perf_counter() - start:.1f}s)")
