"""Will a config train on a given mesh? Compile its real train step and ask XLA.

:func:`plan` builds the base or super-res training state abstractly, shards it by
:mod:`muse_mini.parallel.rules`, compiles the trainer's own update, and reads per-device
bytes of parameters and optimiser state (shard shapes), temporaries (``memory_analysis``)
and FLOPs (``cost_analysis``, beside the analytic model FLOPs MFU is defined by). With
fewer devices than the mesh it runs in a child process with simulated CPU devices, so
temporaries are XLA:CPU's: an estimate. Muse trained the 3B base on 512-core TPUv4 (§4).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp

from muse_mini.config import MeshConfig, MuseConfig
from muse_mini.models.build import build_base, build_superres
from muse_mini.models.params import train_flops_per_example
from muse_mini.parallel.mesh import make_mesh
from muse_mini.parallel.rules import abstract_like, batch_sharding, check_batch_size, state_shardings
from muse_mini.training.keys import init_key
from muse_mini.training.loop import make_update
from muse_mini.training.losses import init_train_state, make_train_step, stage_loss
from muse_mini.training.optim import make_optimizer
from muse_mini.training.placement import Placement

__all__ = ["CHIPS", "Plan", "plan", "plan_in_subprocess", "format_plan", "format_table", "fits", "devices_needed"]

GiB = 2 ** 30
# Accelerator memory per chip (GiB) and dense bf16 peak (TFLOP/s), from the datasheets.
CHIPS = {"TPU v4": (32, 275), "TPU v5p": (95, 459), "H100": (80, 989), "H200": (141, 989)}


@dataclasses.dataclass(frozen=True)
class Plan:
    preset: str
    stage: str
    mesh: dict
    batch: int
    params: int
    param_bytes: int       # per device
    opt_bytes: int         # per device
    temp_bytes: int        # per device, from the compiled program
    batch_bytes: int       # per device: this device's rows of the batch
    compiled_flops: float  # per device per step, XLA's count (includes remat's recompute)
    model_flops: float     # whole step, analytic (MFU's numerator)
    compile_s: float

    @property
    def total_bytes(self) -> int:
        return self.param_bytes + self.opt_bytes + self.temp_bytes + self.batch_bytes

    def step_time(self, peak_tflops: float, mfu: float) -> float:
        devices = math.prod(self.mesh.values())
        return self.model_flops / (devices * peak_tflops * 1e12 * mfu)


def _stage(cfg: MuseConfig, stage: str):
    loss_fn = stage_loss(cfg, stage)  # refuses another stage
    return (build_base, loss_fn, cfg.base_train) if stage == "base" else (build_superres, loss_fn, cfg.superres_train)


def _abstract_batch(cfg: MuseConfig, stage: str, batch: int, mesh) -> dict:
    """The stage's batch as sharded ``ShapeDtypeStruct`` leaves (nothing is allocated)."""
    def spec(shape, dtype):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding(mesh, len(shape)))

    length, width = cfg.text.max_length, cfg.text.width
    out = {"tokens": spec((batch, cfg.tokenizer.grid ** 2), jnp.int32),
           "text": spec((batch, length, width), jnp.float32), "text_mask": spec((batch, length), jnp.bool_)}
    if stage == "superres":
        out["hr_tokens"] = spec((batch, cfg.highres_tokenizer.grid ** 2), jnp.int32)
    return out


def _per_device_bytes(tree, shardings) -> int:
    total = 0
    for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings), strict=True):
        total += math.prod(s.shard_shape(x.shape)) * jnp.dtype(x.dtype).itemsize
    return total


def _compile(update, step_fn, batch, state):
    """``jax.jit`` the trainer's update (``compile_step``'s function) on abstract inputs."""
    is_abstract = lambda x: isinstance(x, jax.ShapeDtypeStruct)  # noqa: E731
    arrays, static = eqx.partition(state, is_abstract)

    def step(batch, arrays, step):
        new_state, metrics = update(step_fn, batch, eqx.combine(arrays, static), step)
        return eqx.filter(new_state, eqx.is_array), metrics

    return jax.jit(step, donate_argnums=1).lower(batch, arrays, jax.ShapeDtypeStruct((), jnp.uint32)).compile()


def plan(cfg: MuseConfig, mesh_cfg: MeshConfig, batch: int, stage: str = "base") -> Plan:
    """Compile ``stage``'s train step for ``mesh_cfg`` and ``batch``; see the module docstring."""
    import time

    build, loss_fn, tc = _stage(cfg, stage)
    mesh = make_mesh(mesh_cfg)
    check_batch_size(batch, mesh, "--batch")
    optimizer = make_optimizer(tc)
    abstract = eqx.filter_eval_shape(lambda k: init_train_state(build(cfg, k), optimizer), init_key(0))
    shard = state_shardings(abstract, mesh)
    update = make_update(0, Placement(abstract, mesh))
    t0 = time.perf_counter()
    batch_abstract = _abstract_batch(cfg, stage, batch, mesh)
    compiled = _compile(update, make_train_step(loss_fn, optimizer), batch_abstract, abstract_like(abstract, shard))
    compile_s = time.perf_counter() - t0
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    arrays = lambda t: eqx.filter(t, lambda x: isinstance(x, jax.ShapeDtypeStruct))  # noqa: E731
    params = sum(math.prod(x.shape) for x in jax.tree.leaves(arrays(abstract.model)))
    return Plan(
        preset=cfg.name, stage=stage, mesh=dict(mesh.shape), batch=batch, params=params,
        param_bytes=_per_device_bytes(arrays(abstract.model), shard.model),
        opt_bytes=_per_device_bytes(arrays(abstract.opt_state), shard.opt_state),
        temp_bytes=int(memory.temp_size_in_bytes),
        batch_bytes=_per_device_bytes(batch_abstract, [x.sharding for x in jax.tree.leaves(batch_abstract)]),
        compiled_flops=float(cost.get("flops", float("nan"))),
        model_flops=batch * train_flops_per_example(cfg, stage),
        compile_s=compile_s,
    )


def fits(p: Plan, headroom: float = 0.9) -> list[str]:
    """The chips whose memory holds ``p``'s per-device total with 10% to spare."""
    return [chip for chip, (gib, _) in CHIPS.items() if p.total_bytes <= headroom * gib * GiB]


def plan_in_subprocess(preset: str, overrides, mesh_cfg: MeshConfig, batch: int, stage: str,
                       devices: int) -> Plan:
    """:func:`plan` in a child process with ``devices`` simulated CPU devices."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"}
    args = json.dumps({"preset": preset, "overrides": list(overrides), "mesh": mesh_cfg.shape,
                       "batch": batch, "stage": stage})
    out = subprocess.run([sys.executable, "-m", "muse_mini.planner", args], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or [""])[-1]
        if last.startswith("ValueError: "):  # bad input, found in the child: the same one-line error
            raise ValueError(last.removeprefix("ValueError: "))
        raise RuntimeError(f"planner child failed:\n{out.stderr[-4000:]}")
    return Plan(**json.loads(out.stdout.strip().splitlines()[-1]))


def devices_needed(mesh_cfg: MeshConfig) -> int | None:
    """Devices a mesh with no ``-1`` axis needs (None: it takes whatever there is)."""
    sizes = mesh_cfg.shape.values()
    return None if -1 in sizes else math.prod(sizes)


def _size(n: float) -> str:
    return f"{n / GiB:.2f} GiB" if n >= GiB / 10 else f"{n / 2 ** 20:.1f} MiB"


def format_plan(p: Plan, peak_tflops: float | None = None, mfu: float = 0.5) -> str:
    mesh = " ".join(f"{k}={v}" for k, v in p.mesh.items())
    lines = [
        f"{p.preset} {p.stage}: {p.params / 1e6:,.1f}M parameters, global batch {p.batch}, mesh {mesh}",
        f"  per device: parameters {_size(p.param_bytes)}, optimiser state {_size(p.opt_bytes)}, "
        f"temporaries {_size(p.temp_bytes)} (compiled), batch {_size(p.batch_bytes)}, total {_size(p.total_bytes)}",
        f"  FLOPs per step: model {p.model_flops:.3g} (3 × forward matrix products); XLA's count "
        f"{p.compiled_flops * math.prod(p.mesh.values()):.3g} over all devices (it counts the layer loop's "
        "body once)",
        f"  fits (≤90% of memory): {', '.join(fits(p)) or 'none of ' + ', '.join(CHIPS)}",
    ]
    for chip, (_, peak) in ([("given peak", (0, peak_tflops))] if peak_tflops else CHIPS.items()):
        lines.append(f"  step time at {mfu:.0%} MFU on {chip} ({peak} TFLOP/s bf16): {p.step_time(peak, mfu):.2f} s")
    lines.append(f"  (compiled in {p.compile_s:.0f} s)")
    return "\n".join(lines)


def format_table(plans: list[Plan], mfu: float = 0.5) -> str:
    """A Markdown table: per-device GiB, the chips it fits, and H100 step time at ``mfu``."""
    rows = ["| preset | mesh | batch | params/dev | optimiser/dev | temporaries/dev | total/dev | fits "
            f"| step at {mfu:.0%} MFU (v4 / H100) |", "|---|---|---|---|---|---|---|---|---|"]
    for p in plans:
        mesh = ",".join(f"{k}={v}" for k, v in p.mesh.items() if v > 1) or "1 device"
        rows.append(f"| {p.preset} | {mesh} | {p.batch} | {_size(p.param_bytes)} | {_size(p.opt_bytes)} | "
                    f"{_size(p.temp_bytes)} | {_size(p.total_bytes)} | {', '.join(fits(p)) or 'none'} | "
                    f"{p.step_time(CHIPS['TPU v4'][1], mfu):.2f} s / {p.step_time(CHIPS['H100'][1], mfu):.2f} s |")
    return "\n".join(rows)


def _child(argument: str) -> None:
    from muse_mini.config import get_preset

    a = json.loads(argument)
    p = plan(get_preset(a["preset"], a["overrides"]), MeshConfig(**a["mesh"]), a["batch"], a["stage"])
    print(json.dumps(dataclasses.asdict(p)))


if __name__ == "__main__":
    _child(sys.argv[1])
