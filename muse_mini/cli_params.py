"""``muse-mini params``: parameter counts per component, no weights allocated."""

from __future__ import annotations

import time


def add_parsers(sub) -> None:
    from muse_mini.cli import add_overrides_argument
    from muse_mini.config import PRESETS

    p = sub.add_parser("params", help="print each component's parameter count (no allocation)")
    p.add_argument("--preset", default="toy", choices=sorted(PRESETS))
    add_overrides_argument(p)
    p.set_defaults(func=run)


def run(args) -> None:
    from muse_mini.config import get_preset
    from muse_mini.params import count_params, format_counts

    start = time.perf_counter()
    cfg = get_preset(args.preset, args.overrides)
    counts = count_params(cfg)
    print(f"preset {cfg.name}")
    print(format_counts(counts))
    print(f"(counted abstractly with eqx.filter_eval_shape in {time.perf_counter() - start:.1f}s)")
