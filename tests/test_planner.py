"""The planner: compiled memory and FLOPs of a stage's real train step (muse-mini plan)."""

import dataclasses
import subprocess
import sys

import equinox as eqx
import jax
import pytest

from muse_mini.config import MeshConfig, get_recipe
from muse_mini.models.build import build_base
from muse_mini.models.params import train_flops_per_example
from muse_mini.planner import fits, format_plan, plan

SMALL = ["base.depth=1", "base.width=64", "base.mlp_dim=128", "base.num_heads=4", "base.remat=false"]


@pytest.fixture(scope="module")
def toy_plan():
    return plan(get_recipe("smoke", SMALL), MeshConfig(), 16)


def test_plan_sizes_come_from_the_real_state(toy_plan):
    cfg = get_recipe("smoke", SMALL)
    model = eqx.filter_eval_shape(build_base, cfg, jax.random.key(0))
    params = sum(x.size for x in jax.tree.leaves(model) if isinstance(x, jax.ShapeDtypeStruct))
    assert toy_plan.params == params
    assert toy_plan.param_bytes == 4 * params  # fp32 weights, all on the one device
    assert 0 < toy_plan.opt_bytes < 3 * toy_plan.param_bytes  # Adafactor: momentum + factored moments
    assert toy_plan.temp_bytes > 0
    assert fits(toy_plan) == ["TPU v4", "TPU v5p", "H100", "H200"]
    assert "temporaries" in format_plan(toy_plan) and "MFU" in format_plan(toy_plan)


def test_model_flops_match_xla_for_one_unscanned_layer(toy_plan):
    """With one layer (XLA counts a loop body once, so here it counts everything) and no remat,
    XLA's count of the compiled step is the analytic matrix-product count plus a little
    elementwise work."""
    cfg = get_recipe("smoke", SMALL)
    assert toy_plan.model_flops == 16 * train_flops_per_example(cfg, "base")
    assert 1.0 <= toy_plan.compiled_flops / toy_plan.model_flops < 1.6


def test_superres_flops_grow_with_the_lowres_encoder():
    cfg = get_recipe("smoke", ["superres.lowres_depth=1"])
    deeper = dataclasses.replace(cfg, superres=dataclasses.replace(cfg.superres, lowres_depth=3))
    assert train_flops_per_example(deeper, "superres") > train_flops_per_example(cfg, "superres")
    with pytest.raises(ValueError, match="stage: expected 'base' or 'superres'"):
        train_flops_per_example(cfg, "decoder")


def test_cli_plans_a_bigger_mesh_in_a_child_with_simulated_devices(tmp_path):
    """This process has one device; `plan --mesh fsdp=4` runs in a child with 4 simulated ones."""
    out = subprocess.run([sys.executable, "-m", "muse_mini", "plan", "--preset", "toy", "--mesh", "fsdp=4",
                          "--batch", "16", *SMALL], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "mesh data=1 fsdp=4 tensor=1" in out.stdout and "per device: parameters" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "muse_mini", "plan", "--preset", "toy", "--mesh", "fsdp=4",
                          "--batch", "6"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--batch: the batch of 6 does not split" in bad.stderr
