"""The device mesh a run trains and samples on (MaxText's ``data``/``fsdp``/``tensor``).

The config's ``mesh`` section gives a size per axis (``-1``: the remaining devices);
the product is the job's device count. ``create_device_mesh`` keeps each process's
devices together, so its rows of the batch are one contiguous slice.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh

from muse_mini.config import MESH_AXES, MeshConfig

__all__ = ["MESH_AXES", "resolve_mesh_shape", "make_mesh", "mesh_size", "describe_mesh", "parse_mesh"]


def resolve_mesh_shape(cfg: MeshConfig, num_devices: int) -> dict[str, int]:
    """Axis sizes with ``-1`` filled in; a `ValueError` naming ``mesh`` when they cannot fit."""
    shape = cfg.shape
    fixed = math.prod(v for v in shape.values() if v != -1)
    free = [name for name, v in shape.items() if v == -1]
    if free:
        if num_devices % fixed:
            raise ValueError(f"mesh: {num_devices} devices cannot be split as {shape} "
                             f"({num_devices} is not a multiple of {fixed})")
        shape[free[0]] = num_devices // fixed
    if math.prod(shape.values()) != num_devices:
        raise ValueError(
            f"mesh: data×fsdp×tensor = {'×'.join(str(v) for v in shape.values())} = "
            f"{math.prod(shape.values())} devices, but this job has {num_devices} "
            f"({jax.default_backend()}); set one axis to -1 to use all of them"
        )
    return shape


def make_mesh(cfg: MeshConfig | None = None, devices=None) -> Mesh:
    """The ``(data, fsdp, tensor)`` mesh over ``devices`` (default: every device of the job for
    a ``-1`` axis, else the first that many of a one-process job, so 1×1×1 is one device)."""
    cfg = cfg or MeshConfig()
    if devices is None:
        devices = jax.devices()
        wanted = math.prod(cfg.shape.values())
        if wanted > 0 and jax.process_count() == 1:
            devices = devices[:wanted]
    devices = list(devices)
    shape = resolve_mesh_shape(cfg, len(devices))
    sizes = tuple(shape[name] for name in MESH_AXES)
    try:
        grid = mesh_utils.create_device_mesh(sizes, devices=devices, allow_split_physical_axes=True)
    except (AssertionError, ValueError, NotImplementedError):  # unusual topologies: plain order
        grid = np.asarray(devices, dtype=object).reshape(sizes)
    return Mesh(grid, MESH_AXES)


def mesh_size(mesh: Mesh, axes) -> int:
    """Devices along ``axes`` (a name, a tuple of names, or None)."""
    if axes is None:
        return 1
    names = (axes,) if isinstance(axes, str) else tuple(axes)
    return math.prod(mesh.shape[a] for a in names)


def describe_mesh(mesh: Mesh) -> str:
    """``"data=2 fsdp=2 tensor=2 (8 cpu devices, 1 process)"``."""
    axes = " ".join(f"{name}={size}" for name, size in mesh.shape.items())
    processes = len({d.process_index for d in mesh.devices.flat})
    return (f"{axes} ({mesh.devices.size} {mesh.devices.flat[0].platform} devices, "
            f"{processes} process{'es' if processes > 1 else ''})")


def parse_mesh(text: str) -> MeshConfig:
    """``"fsdp=256"`` or ``"data=2,fsdp=2,tensor=2"`` → `MeshConfig` (unnamed axes are 1)."""
    sizes = {}
    for part in filter(None, (p.strip() for p in text.replace(" ", ",").split(","))):
        name, _, value = part.partition("=")
        if name not in MESH_AXES or not value.lstrip("-").isdigit():
            raise ValueError(f"--mesh: expected axis=size items with axes {MESH_AXES}, got {part!r}")
        sizes[name] = int(value)
    return MeshConfig(**sizes)
