"""The mesh config, the rules table and the multi-process environment, on one device.

The 8-device behaviour (sharded = single-device steps, resume across meshes,
two processes) is in tests/multidevice/, run by tests/test_multidevice.py.
"""

from types import SimpleNamespace

import pytest
from jax.sharding import PartitionSpec as P

from muse_mini.config import MeshConfig, get_preset
from muse_mini.parallel.hosts import multi_process_env
from muse_mini.parallel.mesh import parse_mesh, resolve_mesh_shape
from muse_mini.parallel.rules import RULES, spec_for


def _mesh(**shape):
    return SimpleNamespace(shape={"data": 1, "fsdp": 1, "tensor": 1, **shape})


def test_minus_one_takes_the_remaining_devices():
    assert resolve_mesh_shape(MeshConfig(fsdp=-1), 8) == {"data": 1, "fsdp": 8, "tensor": 1}
    assert resolve_mesh_shape(MeshConfig(data=2, fsdp=-1, tensor=2), 16) == {"data": 2, "fsdp": 4, "tensor": 2}
    assert resolve_mesh_shape(MeshConfig(), 1) == {"data": 1, "fsdp": 1, "tensor": 1}


@pytest.mark.parametrize("cfg, devices, message", [
    (MeshConfig(data=3), 8, "data×fsdp×tensor = 3×1×1 = 3 devices, but this job has 8"),
    (MeshConfig(data=3, fsdp=-1), 8, "8 devices cannot be split"),
])
def test_a_mesh_that_does_not_fit_is_a_clear_error(cfg, devices, message):
    with pytest.raises(ValueError, match=message):
        resolve_mesh_shape(cfg, devices)


def test_mesh_config_checks_and_overrides():
    assert get_preset("toy", ["mesh.fsdp=-1", "mesh.tensor=2"]).mesh == MeshConfig(fsdp=-1, tensor=2)
    with pytest.raises(ValueError, match="mesh.tensor: expected a positive device count or -1"):
        MeshConfig(tensor=0)
    with pytest.raises(ValueError, match="at most one axis may be -1"):
        MeshConfig(data=-1, fsdp=-1)
    assert parse_mesh("data=2,fsdp=4") == MeshConfig(data=2, fsdp=4)
    assert parse_mesh("fsdp=-1") == MeshConfig(fsdp=-1)
    with pytest.raises(ValueError, match="--mesh: expected axis=size items"):
        parse_mesh("model=4")


def test_rules_split_by_name_keep_undivisible_dims_whole_and_use_an_axis_once():
    mesh = _mesh(fsdp=4, tensor=2)
    assert spec_for(("embed", "mlp"), (64, 128), mesh) == P("fsdp", "tensor")
    assert spec_for(("layers", "embed", "heads", "kv"), (2, 64, 4, 16), mesh) == P(None, "fsdp", "tensor", None)
    assert spec_for(("vocab", "embed"), (257, 64), mesh) == P(None, "fsdp")  # 257 rows: not divisible
    assert spec_for(("embed", "embed_out"), (64, 64), mesh) == P("fsdp", "tensor")
    assert spec_for(("embed", "embed"), (64, 64), mesh) == P("fsdp", None)  # fsdp only once per weight
    assert spec_for(("embed", "mlp"), (64, 128), _mesh()) == P(None, None)  # one device: nothing split
    assert spec_for(("batch", "seq"), (16, 64), _mesh(data=2, fsdp=4)) == P(("data", "fsdp"), None)


def test_every_logical_axis_the_models_use_has_a_rule():
    import equinox as eqx
    import jax

    from muse_mini.models.build import build_base, build_superres
    from muse_mini.models.layers import is_axes, logical_axes

    cfg = get_preset("toy", ["superres.lowres_input=pixels", "superres.lowres_skip=true"])
    used = set()
    for build in (build_base, build_superres):
        model = eqx.filter_eval_shape(build, cfg, jax.random.key(0))
        if getattr(model, "lowres_decoder", None) is not None:  # the frozen VQGAN decoder: unnamed, replicated
            model = eqx.tree_at(lambda m: m.lowres_decoder, model, None)
        used |= {n for names in jax.tree.leaves(logical_axes(model), is_leaf=is_axes) for n in names}
    assert {"patch", "children", "text_embed", "embed_out"} <= used
    assert used <= set(RULES), used - set(RULES)


def test_multi_process_environment():
    assert multi_process_env({}) is None
    assert multi_process_env({"SLURM_NTASKS": "16"}) is None  # an allocation: one process runs here
    assert multi_process_env({"SLURM_NTASKS": "16", "SLURM_STEP_NUM_TASKS": "16"}) == {}  # srun: JAX reads SLURM
    assert multi_process_env({"TPU_WORKER_HOSTNAMES": "a,b,c,d"}) == {}
    assert multi_process_env({"TPU_WORKER_HOSTNAMES": "a"}) is None  # a single-host TPU VM
    assert multi_process_env({"MUSE_DISTRIBUTED": "1"}) == {}  # asked for: JAX detects the cluster
    env = {"MUSE_COORDINATOR": "host0:1234", "MUSE_NUM_PROCESSES": "2", "MUSE_PROCESS_ID": "1"}
    assert multi_process_env(env) == {"coordinator_address": "host0:1234", "num_processes": 2, "process_id": 1}
    with pytest.raises(ValueError, match="MUSE_NUM_PROCESSES and MUSE_PROCESS_ID"):
        multi_process_env({"MUSE_COORDINATOR": "host0:1234"})
