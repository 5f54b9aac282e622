"""Train-step throughput and MFU of the base masked transformer on ONE accelerator.

The step timed is the base stage's real one (:func:`muse_mini.training.losses.make_train_step`
with the loss of :func:`muse_mini.training.losses.stage_loss`: arccos masking §2.6, 10% text
dropout §2.7, masked-token cross-entropy §2.3), with the preset's optimiser,
on a synthetic batch of the preset's shapes (random tokens, random text
embeddings). The default target is the ``cc3m`` preset's base model: the 632M
base transformer of Muse Table 1 (§3.2, CC3M), computing in bfloat16 with
per-layer rematerialisation. On a CPU backend ``--preset toy`` is chosen
unless ``--preset`` is given, so the script runs unchanged on a laptop.

    python benchmarks/bench_train.py                         # cc3m on an accelerator, toy on CPU
    python benchmarks/bench_train.py --preset cc3m --batch 64 --steps 10 --repeats 3
    python benchmarks/bench_train.py --preset cc3m --batch 1 --lower-only   # compile + FLOPs + memory only
    python benchmarks/bench_train.py --preset toy base.depth=4              # config overrides

MFU (model FLOPs utilisation, as in PaLM, Chowdhery et al. 2022, App. B) is
the FLOPs the *model* needs per step divided by step time and the chip's
dense bf16 peak. Model FLOPs are counted analytically: every matrix product
of the forward pass (text projection, self- and cross-attention projections
and scores, MLP, output head) times 3 for forward + backward, the per-matmul
form of the ``6 · params · tokens`` rule (printed too, for comparison).
Rematerialisation recomputes the forward pass in the backward pass; that
work is real but is not model work, so it counts in HFU ("hardware FLOPs
utilisation"), computed from the compiled program's own FLOP count, and not
in MFU.

XLA's cost analysis counts the body of a while loop once, whatever its trip
count, and the transformer's layers run as one ``lax.scan``. So the compiled
count comes from two extra lowerings of the same step with the scan
unrolled, at 1 and 2 layers: ``C1 + (depth - 1) · (C2 - C1)`` (on toy at
4 layers, within 0.8% of compiling all 4 unrolled). The raw count
of the timed program (one layer) is in ``--json`` as ``xla_flops_scanned``.

The peak comes from a small table of datasheet bf16 dense peaks matched
against ``jax.devices()[0].device_kind``; ``--peak-tflops`` overrides it. On
CPU no peak is known, so only throughput is reported unless it is given.

The script sets no ``XLA_FLAGS``: GPU flags such as
``--xla_gpu_enable_latency_hiding_scheduler=true`` or the Triton GEMM
switches are left to the user's environment. Compilation is excluded from
the times (the program is compiled, then run once to warm up); each repeat
times ``--steps`` consecutive steps with the state donated, ended by
``jax.block_until_ready``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from muse_mini.config import get_preset  # noqa: E402
from muse_mini.models.build import build_base  # noqa: E402
from muse_mini.models.layers import count_params  # noqa: E402
from muse_mini.models.params import train_flops_per_example  # noqa: E402
from muse_mini.training.losses import init_train_state, make_train_step, stage_loss  # noqa: E402
from muse_mini.training.optim import make_optimizer  # noqa: E402

# Datasheet dense bf16 peaks (FLOP/s), most specific name first; matched
# case-insensitively as substrings of ``device_kind``.
PEAK_BF16 = (
    ("h100 pcie", 756e12),
    ("h100 nvl", 835e12),
    ("h100", 989e12),  # SXM
    ("h200 nvl", 835e12),
    ("h200", 989e12),
    ("a100", 312e12),
    ("v5 lite", 197e12),  # TPU v5e reports itself as "TPU v5 lite"
    ("v5e", 197e12),
    ("v5p", 459e12),
    ("tpu v5", 459e12),
    ("tpu v4", 275e12),
)
DEFAULT_BATCH = 64  # per chip, for the accelerator presets; toy uses its recipe's batch


def peak_flops(device_kind: str, override_tflops: float | None) -> tuple[float | None, str]:
    """The bf16 peak (FLOP/s) and where it came from."""
    if override_tflops is not None:
        return override_tflops * 1e12, "--peak-tflops"
    kind = device_kind.lower()
    for name, peak in PEAK_BF16:
        if name in kind:
            return peak, f"datasheet bf16 dense, matched {name!r}"
    return None, "unknown device"


def is_leaf_array(x) -> bool:
    """Arrays, real or abstract: the part of the train state that is traced."""
    return isinstance(x, (jax.Array, jax.ShapeDtypeStruct))


def make_state(cfg, optimizer, key, abstract: bool):
    """The base model's train state, real or as shapes only (``eqx.filter_eval_shape``)."""
    def init():
        return init_train_state(build_base(cfg, key), optimizer)

    return eqx.filter_eval_shape(init) if abstract else init()


def synthetic_batch(cfg, batch: int, key, abstract: bool):
    """Random tokens and text embeddings with the preset's shapes; every text position kept."""
    def draw():
        k_tok, k_text = jax.random.split(key)
        seq, length = cfg.tokenizer.grid ** 2, cfg.text.max_length
        return {
            "tokens": jax.random.randint(k_tok, (batch, seq), 0, cfg.tokenizer.codebook_size, jnp.int32),
            "text": jax.random.normal(k_text, (batch, length, cfg.text.width), jnp.float32),
            "text_mask": jnp.ones((batch, length), bool),
        }

    return jax.eval_shape(draw) if abstract else draw()


def jit_train_step(cfg, optimizer, static):
    """The base stage's train step, jitted over the state's arrays, which are donated.

    ``eqx.filter_jit`` would treat ``ShapeDtypeStruct`` leaves as static, so to
    lower an abstract state (``--lower-only``, the FLOP count) the state is split
    here instead; ``static`` is its non-array part.
    """
    step_fn = make_train_step(stage_loss(cfg, "base"), optimizer)

    def run(arrays, batch, key):
        state, metrics = step_fn(eqx.combine(arrays, static), batch, key)
        return eqx.filter(state, is_leaf_array), metrics

    return jax.jit(run, donate_argnums=0)


def compile_step(cfg, batch: int, key, abstract: bool):
    """``(compiled, arrays, batch, seconds to compile)``; arrays/batch abstract if asked."""
    optimizer = make_optimizer(cfg.base_train)
    arrays, static = eqx.partition(make_state(cfg, optimizer, key, abstract), is_leaf_array)
    data = synthetic_batch(cfg, batch, key, abstract)
    start = time.perf_counter()
    compiled = jit_train_step(cfg, optimizer, static).lower(arrays, data, key).compile()
    return compiled, arrays, data, time.perf_counter() - start


def xla_flops(compiled) -> float | None:
    """``flops`` from XLA's cost analysis (a dict in jax 0.10, a list of dicts before)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    flops = None if cost is None else cost.get("flops")
    return float(flops) if flops is not None and flops >= 0 else None


@contextlib.contextmanager
def unrolled_scans():
    """Every ``jax.lax.scan`` traced inside is fully unrolled (for counting FLOPs only)."""
    scan = jax.lax.scan
    jax.lax.scan = functools.partial(scan, unroll=True)
    try:
        yield
    finally:
        jax.lax.scan = scan


def counted_flops(cfg, batch: int, key) -> tuple[float | None, float | None]:
    """Compiled FLOPs of the full-depth step, and of one layer, from 1- and 2-layer unrolled lowerings."""
    counts = []
    for depth in (1, 2):
        small = dataclasses.replace(cfg, base=dataclasses.replace(cfg.base, depth=depth))
        with unrolled_scans():
            compiled, *_ = compile_step(small, batch, key, abstract=True)
        counts.append(xla_flops(compiled))
    if None in counts:
        return None, None
    per_layer = counts[1] - counts[0]
    if per_layer < 0.5 * batch * _analytic_layer_flops(cfg):  # the scan was not unrolled after all
        print("warning: could not unroll the layer scan to count its FLOPs; compiled count skipped")
        return None, None
    return counts[0] + (cfg.base.depth - 1) * per_layer, per_layer


def _analytic_layer_flops(cfg) -> float:
    one, two = (dataclasses.replace(cfg, base=dataclasses.replace(cfg.base, depth=d)) for d in (1, 2))
    return model_flops_per_example(two) - model_flops_per_example(one)


def model_flops_per_example(cfg) -> float:
    """Analytic training FLOPs of one example (`muse_mini.models.params.train_flops_per_example`)."""
    return train_flops_per_example(cfg, "base")


def time_steps(compiled, arrays, data, key, steps: int, repeats: int, progress: bool):
    """Seconds per step for each repeat (after one warm-up step), and the last metrics."""
    keys = list(jax.random.split(key, 1 + steps * repeats))  # drawn before any timing
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Some donated buffers were not usable")
        arrays, metrics = compiled(arrays, data, keys[0])
        jax.block_until_ready((arrays, metrics))
        times = []
        for r in _progress(range(repeats), progress):
            start = time.perf_counter()
            for i in range(steps):
                arrays, metrics = compiled(arrays, data, keys[1 + r * steps + i])
            jax.block_until_ready((arrays, metrics))
            times.append((time.perf_counter() - start) / steps)
    return times, {k: float(v) for k, v in metrics.items()}


def _progress(iterable, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc="repeats", leave=False)


MEMORY_FIELDS = (
    "argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
    "temp_size_in_bytes", "generated_code_size_in_bytes",
)


def memory_stats(compiled) -> dict:
    """The compiled program's memory analysis: the fields this backend reports, in bytes."""
    try:
        mem = compiled.memory_analysis()
    except Exception:
        return {}
    stats = {f: int(getattr(mem, f)) for f in MEMORY_FIELDS if getattr(mem, f, None) is not None}
    needed = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes")
    if all(f in stats for f in needed):  # donated (aliased) outputs reuse their argument's buffer
        a, o, al, t = (stats[f] for f in needed)
        stats["peak_estimate_bytes"] = a + o - al + t
    return stats


def choose_preset(requested: str | None, backend: str) -> tuple[str, str]:
    """The preset to run and why: toy on a CPU backend unless one was asked for."""
    if requested is not None:
        return requested, "--preset"
    if backend == "cpu":
        return "toy", "chosen automatically on the CPU backend; --preset overrides"
    return "cc3m", "the default on an accelerator"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default=None, help="toy, cc3m or paper-3b (default: cc3m; toy on CPU)")
    parser.add_argument("--batch", type=int, default=None,
                        help=f"examples per step (default: {DEFAULT_BATCH}; toy: its recipe's batch)")
    parser.add_argument("--steps", type=int, default=10, help="steps timed per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the chip's bf16 peak, TFLOP/s")
    parser.add_argument("--lower-only", action="store_true",
                        help="lower and compile only: print FLOPs and memory analysis, run nothing")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("overrides", nargs="*", metavar="section.field=value",
                        help="config overrides, e.g. base.depth=4 base.remat=false")
    args = parser.parse_args(argv)
    if min(args.steps, args.repeats) < 1 or (args.batch is not None and args.batch < 1):
        parser.error("--batch, --steps and --repeats must be positive")
    return args


def describe(cfg, preset_reason: str, batch: int) -> dict:
    """What is measured, before measuring: device, model size, analytic FLOPs."""
    device = jax.devices()[0]
    model = eqx.filter_eval_shape(build_base, cfg, jax.random.key(0))
    params, seq = count_params(model), cfg.tokenizer.grid ** 2
    return {
        "device_kind": device.device_kind, "backend": jax.default_backend(), "jax": jax.__version__,
        "preset": cfg.name, "preset_reason": preset_reason, "dtype": cfg.base.dtype,
        "remat": cfg.base.remat, "depth": cfg.base.depth, "width": cfg.base.width,
        "optimizer": cfg.base_train.optimizer, "params": params, "batch": batch, "seq_len": seq,
        "text_len": cfg.text.max_length, "tokens_per_step": batch * seq,
        "model_flops_per_step": batch * model_flops_per_example(cfg),
        "rule_6nt_flops_per_step": 6.0 * params * batch * seq,
    }


def add_timing(r: dict, times: list[float], peak: float | None) -> None:
    """Throughput and utilisation from the per-step times (median over repeats)."""
    med = statistics.median(times)
    r.update(step_s_median=med, step_s_min=min(times), step_s_max=max(times), step_s_all=times,
             examples_per_s=r["batch"] / med, tokens_per_s=r["tokens_per_step"] / med,
             model_flops_per_s=r["model_flops_per_step"] / med)
    if r.get("compiled_flops_per_step"):
        r["hardware_flops_per_s"] = r["compiled_flops_per_step"] / med
    if peak:
        r["mfu"] = r["model_flops_per_s"] / peak
        if "hardware_flops_per_s" in r:
            r["hfu"] = r["hardware_flops_per_s"] / peak


def _bytes(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def print_sizes(r: dict) -> None:
    print(f"device: {r['device_kind']} (backend {r['backend']}, jax {r['jax']})")
    print(f"preset: {r['preset']} ({r['preset_reason']}); base {r['depth']} layers × width {r['width']}, "
          f"{r['dtype']}, remat={r['remat']}, {r['optimizer']}")
    print(f"params: {r['params']:,} ({r['params'] / 1e6:.1f}M)")
    print(f"batch: {r['batch']} × {r['seq_len']} image tokens (+ {r['text_len']} text positions) "
          f"= {r['tokens_per_step']:,} tokens/step")
    print(f"model FLOPs/step (analytic, 3 × forward matmuls, no remat): "
          f"{r['model_flops_per_step'] / 1e9:,.2f} GFLOP")
    print(f"  for comparison, the 6·N·T rule (6 × params × image tokens): "
          f"{r['rule_6nt_flops_per_step'] / 1e9:,.2f} GFLOP")
    if r.get("compiled_flops_per_step"):
        print(f"compiled FLOPs/step (XLA cost analysis, with remat recompute): "
              f"{r['compiled_flops_per_step'] / 1e9:,.2f} GFLOP "
              f"= {r['compiled_flops_per_step'] / r['model_flops_per_step']:.2f} × model FLOPs "
              f"[{r['compiled_flops_per_layer'] / 1e9:,.2f} GFLOP/layer; the scanned program's raw "
              f"count, one loop body: {(r['xla_flops_scanned'] or 0) / 1e9:,.2f}]")
        if r["compiled_flops_per_step"] < 0.9 * r["model_flops_per_step"]:
            print("  warning: below the analytic model FLOPs; this backend's cost analysis "
                  "probably misses some ops (custom calls)")
    else:
        print("compiled FLOPs/step: not reported by this backend's cost analysis")
    print(f"compile: {r['compile_s']:.1f} s")
    for name, value in r.get("memory", {}).items():
        print(f"  memory {name}: {_bytes(value)}")


def print_timing(r: dict) -> None:
    med, lo, hi = r["step_s_median"], r["step_s_min"], r["step_s_max"]
    print(f"step time: median {1e3 * med:.2f} ms (min {1e3 * lo:.2f}, max {1e3 * hi:.2f}, "
          f"spread {100 * (hi - lo) / med:.1f}%) over {r['repeats']} repeats × {r['steps']} steps")
    print(f"throughput: {r['examples_per_s']:,.1f} examples/s, {r['tokens_per_s']:,.0f} tokens/s")
    print(f"achieved: {r['model_flops_per_s'] / 1e12:.3f} model TFLOP/s"
          + (f", {r['hardware_flops_per_s'] / 1e12:.3f} hardware TFLOP/s" if "hardware_flops_per_s" in r else ""))
    if "mfu" in r:
        print(f"peak: {r['peak_flops'] / 1e12:.0f} TFLOP/s ({r['peak_source']})")
        print(f"MFU: {100 * r['mfu']:.2f}%" + (f"   HFU: {100 * r['hfu']:.2f}%" if "hfu" in r else ""))
    else:
        print(f"MFU: not defined: no bf16 peak known for {r['device_kind']!r}; pass --peak-tflops")
    print(f"last step: loss {r['metrics']['loss']:.3f}, grad norm {r['metrics']['grad_norm']:.3f}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    name, reason = choose_preset(args.preset, jax.default_backend())
    cfg = get_preset(name, args.overrides)
    batch = args.batch or (cfg.base_train.batch_size if name == "toy" else DEFAULT_BATCH)
    r = describe(cfg, reason, batch)
    r["peak_flops"], r["peak_source"] = peak_flops(r["device_kind"], args.peak_tflops)
    key = jax.random.key(args.seed)
    r["compiled_flops_per_step"], r["compiled_flops_per_layer"] = counted_flops(cfg, batch, key)
    compiled, arrays, data, r["compile_s"] = compile_step(cfg, batch, key, abstract=args.lower_only)
    r["xla_flops_scanned"], r["memory"] = xla_flops(compiled), memory_stats(compiled)
    print_sizes(r)
    if not args.lower_only:
        times, r["metrics"] = time_steps(compiled, arrays, data, key, args.steps, args.repeats,
                                         progress=not args.no_progress)
        r.update(steps=args.steps, repeats=args.repeats)
        add_timing(r, times, r["peak_flops"])
        print_timing(r)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(r, indent=2) + "\n")
        print(f"wrote {args.json}")
    return r


if __name__ == "__main__":
    main()
