"""``muse-mini plan``: will a preset train on a mesh? Per-device memory, FLOPs, step time."""

from __future__ import annotations

import jax

from muse_mini.cli.common import add_overrides_argument, add_preset_argument
from muse_mini.parallel.mesh import parse_mesh

# What the README's table compiles: the two paper configs on a node, a slice, a pod.
TABLE = (("cc3m", "data=8"), ("cc3m", "fsdp=8"), ("paper-3b", "data=8"), ("paper-3b", "fsdp=8"),
         ("paper-3b", "fsdp=64"), ("paper-3b", "fsdp=256"))


def add_parsers(sub) -> None:
    p = sub.add_parser("plan", help="compile a stage's train step for a device mesh; print memory and FLOPs")
    add_preset_argument(p)
    p.add_argument("--mesh", default="fsdp=8", help="mesh axes, e.g. fsdp=256 or data=2,fsdp=16,tensor=4")
    p.add_argument("--batch", type=int, default=512, help="global batch (Muse: 512)")
    p.add_argument("--stage", default="base", choices=("base", "superres"), help="which transformer's step")
    p.add_argument("--peak-tflops", type=float, default=None, help="chip bf16 peak (default: a table of chips)")
    p.add_argument("--mfu", type=float, default=0.5, help="model FLOPs utilisation assumed for step times")
    p.add_argument("--table", action="store_true", help="the README table: cc3m and paper-3b on several meshes")
    add_overrides_argument(p)
    p.set_defaults(func=run)


def _one(preset, overrides, mesh_text, batch, stage):
    from muse_mini.planner import devices_needed, plan, plan_in_subprocess

    from muse_mini.config import get_preset

    mesh = parse_mesh(mesh_text)
    cfg = get_preset(preset, overrides)  # bad overrides fail here, in this process
    needed = devices_needed(mesh)
    if needed is not None and needed > jax.device_count():
        return plan_in_subprocess(preset, overrides, mesh, batch, stage, needed)
    return plan(cfg, mesh, batch, stage)


def run(args) -> None:
    from muse_mini.planner import format_plan, format_table

    if not 0 < args.mfu <= 1:
        raise ValueError(f"--mfu: expected a fraction in (0, 1], got {args.mfu}")
    if args.batch < 1:
        raise ValueError(f"--batch: expected a positive global batch, got {args.batch}")
    if args.table:
        plans = [_one(preset, args.overrides, mesh, args.batch, args.stage) for preset, mesh in TABLE]
        print(format_table(plans, args.mfu))
        return
    print(format_plan(_one(args.preset, args.overrides, args.mesh, args.batch, args.stage), args.peak_tflops,
                      args.mfu))
