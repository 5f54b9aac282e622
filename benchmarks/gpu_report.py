"""One device call's speed report: text-to-image latency, train-step MFU and memory, beside aMUSEd (issue 22).

Muse's case is speed (§1, Table 3: 0.5 s for a 256 px image from the 3B model
on TPUv4), so this measures, in one run on one chip:

- **latency** of text-to-image at the preset's base resolution (256 px for
  ``cc3m``), random weights, batch 1 and 8: 12 and 24 base steps with
  classifier-free guidance (both passes in one batch, §2.7), the condition
  encoded once, the whole loop and the VQ decode in one compiled call; then
  base (12 steps) + super-res (8 steps, §2.4) + high-res decode; then the
  ``paper-3b`` base at 24 steps;
- the same generations by **aMUSEd-256** (diffusers, fp16 eager) in the same
  process, with the same steps, batch and guidance (``amused_latency.py``),
  and the ratio;
- **training** throughput and MFU of the base model in bf16 at several
  batches, with and without per-layer remat (``bench_train.py``'s step);
- **memory**: each compiled program's buffers (XLA's memory analysis:
  arguments + outputs + temporaries) and, for aMUSEd, torch's peak.

It writes a JSON file and prints a table. ``--time-budget`` stops starting new
rows once spent (they are listed as skipped), so the run fits one device call.

    python benchmarks/gpu_report.py --json runs/gpu_report.json      # on a GPU: cc3m, paper-3b, aMUSEd-256
    python benchmarks/gpu_report.py --quick --json /tmp/report.json   # CPU smoke: toy sizes (make test)

On a CPU backend the toy preset replaces ``cc3m`` and the ``paper-3b`` row is
skipped unless ``--large-preset`` is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import amused_latency  # noqa: E402
import bench_train  # noqa: E402
from bench_memory import machine  # noqa: E402
from muse_mini.amused import AMUSED_SAMPLER, AmusedCodec  # noqa: E402
from muse_mini.config import get_preset, tokenizer_stage_config  # noqa: E402
from muse_mini.decoding.guidance import decode_guided, guided_contexts, superres_pass  # noqa: E402
from muse_mini.models.build import build_base, build_superres  # noqa: E402
from muse_mini.models.codec import decode_token_batch  # noqa: E402
from muse_mini.models.layers import count_params  # noqa: E402
from muse_mini.models.vqgan import VQGAN  # noqa: E402

GOALS = {"cc3m_b1_12_ms": 40.0, "amused_ratio": 14.0, "paper3b_24_ms": 200.0, "mfu": 0.45}


class Budget:
    """Seconds left of ``--time-budget``; rows that would start after it are skipped."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> bool:
        return time.perf_counter() < self.end


def compile_call(fn, *args):
    """``(run, compiled)``: ``fn(*args)`` compiled once (arrays traced, the rest static), then called."""
    arrays, static = eqx.partition(args, eqx.is_array)
    compiled = jax.jit(lambda a: fn(*eqx.combine(a, static))).lower(arrays).compile()
    return (lambda: compiled(arrays)), compiled


def program_bytes(compiled) -> int | None:
    """Arguments + outputs + temporaries of a compiled program (XLA's memory analysis)."""
    stats = bench_train.memory_stats(compiled)
    return stats.get("peak_estimate_bytes")


def median_ms(run, repeats: int) -> tuple[float, float, float, tuple]:
    """Median, min and max milliseconds of ``run()`` after one warm-up call, and the output's shape."""
    shape = jax.block_until_ready(run()).shape  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run())
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times), min(times), max(times), tuple(shape)


def text_to_pixels(base, vqgan, context, uncond, key, sampler):
    """Guided parallel decoding (§2.7, §2.8) then the VQ decode (§2.2): prompt embedding → uint8 pixels."""
    tokens = decode_guided(base, context, uncond, key, sampler).tokens_BxN
    return decode_token_batch(vqgan, tokens)


def cascade_pixels(base, superres, vq_hi, context, uncond, key, samplers):
    """Base → super-res conditioned on its tokens (§2.4) → high-res decode, in one program."""
    k_base, k_sr = jax.random.split(key)
    low = decode_guided(base, context, uncond, k_base, samplers[0]).tokens_BxN
    high = superres_pass(superres, low, context, k_sr, samplers[1])
    return decode_token_batch(vq_hi, high.tokens_BxN)


def random_context(cfg, batch: int, key):
    text = jax.random.normal(key, (batch, cfg.text.max_length, cfg.text.width), jnp.float32)
    context = (text, jnp.ones((batch, cfg.text.max_length), bool))
    return guided_contexts(context)


def latency_row(cfg, models, *, batch: int, steps: int, guidance: float, repeats: int, sr_steps: int | None) -> dict:
    """One latency measurement: base only (``sr_steps`` None) or the whole cascade."""
    key = jax.random.key(0)
    context, uncond = random_context(cfg, batch, key)
    base_sampler = dataclasses.replace(cfg.sampler, steps=steps, guidance=guidance)
    if sr_steps is None:
        args = (models["base"], models["vq_lo"], context, uncond, key, base_sampler)
        run, compiled = compile_call(text_to_pixels, *args)
        size = cfg.tokenizer.image_size
    else:
        sr = models["superres"]
        sr_sampler = dataclasses.replace(cfg.superres_sampler, steps=sr_steps, guidance=guidance)
        args = (models["base"], sr, models["vq_hi"], context, uncond, key, (base_sampler, sr_sampler))
        run, compiled = compile_call(cascade_pixels, *args)
        size = cfg.highres_tokenizer.image_size
    ms, lo, hi, shape = median_ms(run, repeats)
    return {"ms": ms, "ms_min": lo, "ms_max": hi, "ms_per_image": ms / batch, "image_size": size,
            "program_bytes": program_bytes(compiled), "output_shape": list(shape)}


def in_compute_dtype(model, dtype: str):
    """The transformer's float weights stored in its compute dtype, cast once for inference: the
    fp32 masters are a training need, and reading them at every decoding step would cost bandwidth."""
    if dtype == "float32":
        return model
    dt = jnp.dtype(dtype)
    return jax.tree.map(lambda x: x.astype(dt) if eqx.is_inexact_array(x) else x, model)


def build_models(cfg, *, superres: bool) -> dict:
    """Random-weight models for the latency rows (latency does not depend on the values)."""
    key = jax.random.key(0)
    models = {"base": in_compute_dtype(build_base(cfg, key), cfg.base.dtype),
              "vq_lo": VQGAN(tokenizer_stage_config(cfg, "base"), key=key)}
    if superres:
        models["superres"] = in_compute_dtype(build_superres(cfg, key), cfg.superres.dtype)
        models["vq_hi"] = VQGAN(tokenizer_stage_config(cfg, "decoder" if cfg.decoder.enabled else "highres"), key=key)
    return models


def our_latency(args, name: str, plan: list[dict], budget: Budget, *, superres: bool) -> list[dict]:
    """The latency rows of preset ``name``; each ``plan`` entry gives batch, steps and sr_steps."""
    try:
        cfg = get_preset(name, args.overrides)
        models = build_models(cfg, superres=superres)
    except Exception as err:  # e.g. out of memory: the other sections still run
        return [{"what": "latency", "model": f"muse_mini {name}", **p, "status": _failed(err)} for p in plan]
    params = {k: count_params(m) for k, m in models.items()}
    rows = []
    for p in plan:
        row = {"what": "latency", "model": f"muse_mini {name}", "params": params, **p,
               "guidance_muse": args.guidance, "dtype": cfg.base.dtype, "weights": cfg.base.dtype,
               "attention": cfg.base.attention}
        if superres:
            row["superres_attention"] = cfg.superres.attention
        rows.append(_guarded(row, budget, lambda p=p: latency_row(
            cfg, models, batch=p["batch"], steps=p["steps"], guidance=args.guidance,
            repeats=args.repeats, sr_steps=p.get("sr_steps"))))
    return rows


def _guarded(row: dict, budget: Budget, measure) -> dict:
    """``row`` with the measurement, or with why there is none (time budget, out of memory)."""
    if not budget.left():
        return {**row, "status": "skipped: --time-budget spent"}
    try:
        return {**row, **measure(), "status": "ok"}
    except Exception as err:  # one row's failure (an OOM) must not lose the others
        return {**row, "status": _failed(err)}


def _failed(err: Exception) -> str:
    return f"failed: {type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"


def amused_latency_rows(args, plan: list[dict], budget: Budget) -> list[dict]:
    size = "tiny" if args.quick else "amused-256"
    why = amused_latency.unavailable()
    if why:
        return [{"what": "latency", "model": f"aMUSEd {size}", **p, "status": f"skipped: {why}"} for p in plan]
    if not budget.left():
        return [{"what": "latency", "model": f"aMUSEd {size}", **p, "status": "skipped: --time-budget spent"}
                for p in plan]
    try:
        pipe, facts = amused_latency.build(size)
    except Exception as err:  # diffusers' lazy imports fail late, as RuntimeError
        return [{"what": "latency", "model": f"aMUSEd {size}", **p, "status": _failed(err)} for p in plan]
    rows = []
    for p in plan:
        row = {"what": "latency", "model": f"aMUSEd {size}", **p, "guidance_diffusers": args.guidance + 1, **facts}
        rows.append(_guarded(row, budget, lambda p=p: amused_latency.time_generation(
            pipe, size, batch=p["batch"], steps=p["steps"], guidance=args.guidance + 1, repeats=args.repeats)))
    return rows


SAME_WEIGHTS = ("muse_mini JAX, compiled", "diffusers eager", "diffusers torch.compile")


def same_weights_rows(args, budget: Budget) -> list[dict]:
    """aMUSEd's U-ViT + VQ with ONE set of random weights, built in torch and converted in process, timed in JAX
    (``decode_guided`` with ``AMUSED_SAMPLER``, then the VQ decode, one compiled program) and in diffusers, eager
    and ``torch.compile``d: batch 1, the first ``--steps``, precomputed text embeddings (issue 39)."""
    size = "tiny" if args.quick else "amused-256"
    rows = [{"what": "same weights", "model": f"aMUSEd {size}: {side}", "batch": 1, "steps": args.steps[0],
             "guidance_muse": args.guidance} for side in SAME_WEIGHTS]
    why = amused_latency.unavailable() or (None if budget.left() else "--time-budget spent")
    if why:
        return [{**r, "status": f"skipped: {why}"} for r in rows]
    try:  # fp32 first: the logits check compares the same computation
        pipe, facts = amused_latency.build(size, dtype="float32")
        uvit, vq = amused_latency.to_jax(pipe)
        gap = amused_latency.logits_gap(pipe, uvit, size)
        context, uncond = amused_latency.jax_inputs(pipe, size)
    except Exception as err:  # diffusers' lazy imports fail late, as RuntimeError
        return [{**r, "status": _failed(err)} for r in rows]
    dtype = "float32" if jax.default_backend() == "cpu" else "bfloat16"
    sampler = dataclasses.replace(AMUSED_SAMPLER, steps=args.steps[0], guidance=args.guidance)
    codec = AmusedCodec(in_compute_dtype(vq, dtype), facts["image_size"])

    def ours():
        run, compiled = compile_call(text_to_pixels, in_compute_dtype(uvit, dtype), codec, context, uncond,
                                     jax.random.key(0), sampler)
        ms, lo, hi, shape = median_ms(run, args.repeats)
        return {"ms": ms, "ms_min": lo, "ms_max": hi, "program_bytes": program_bytes(compiled),
                "output_shape": list(shape)}

    rows[0] = _guarded({**rows[0], **facts, **gap, "dtype": dtype}, budget, ours)
    pipe = amused_latency.in_serving_dtype(pipe)
    facts = {**facts, "dtype": str(pipe.transformer.dtype).removeprefix("torch."),
             "guidance_diffusers": args.guidance + 1}
    timing = dict(size=size, batch=1, steps=args.steps[0], guidance=args.guidance + 1, repeats=args.repeats)
    rows[1] = _guarded({**rows[1], **facts}, budget, lambda: amused_latency.time_generation(pipe, **timing))
    rows[2] = _guarded({**rows[2], **facts, "torch_compile_mode": args.torch_compile_mode}, budget,
                       lambda: amused_latency.time_generation(amused_latency.compile_pipe(
                           pipe, args.torch_compile_mode), **timing, warmup=3))
    return rows


def training_rows(args, name: str, budget: Budget) -> list[dict]:
    """Train-step throughput and MFU (``bench_train.py``) for each batch, with and without remat."""
    rows = []
    for batch in args.train_batches:  # one MFU figure per remat setting as early as possible
        for remat in (True, False):
            row = {"what": "train", "model": f"muse_mini {name} base", "batch": batch, "remat": remat}
            rows.append(_guarded(row, budget, lambda b=batch, r=remat: train_row(args, name, b, r)))
    return rows


def train_row(args, name: str, batch: int, remat: bool) -> dict:
    cfg = get_preset(name, [*args.overrides, f"base.remat={remat}"])
    r = bench_train.describe(cfg, "gpu_report", batch)
    r["peak_flops"], r["peak_source"] = bench_train.peak_flops(r["device_kind"], args.peak_tflops)
    key = jax.random.key(0)
    compiled, arrays, data, r["compile_s"] = bench_train.compile_step(cfg, batch, key, abstract=False)
    r["program_bytes"] = bench_train.memory_stats(compiled).get("peak_estimate_bytes")
    times, r["metrics"] = bench_train.time_steps(compiled, arrays, data, key, args.train_steps, args.repeats,
                                                 progress=False)
    r.update(steps=args.train_steps, repeats=args.repeats)
    bench_train.add_timing(r, times, r["peak_flops"])
    return {k: r[k] for k in ("params", "dtype", "tokens_per_step", "model_flops_per_step", "compile_s",
                              "step_s_median", "examples_per_s", "model_flops_per_s", "program_bytes",
                              "peak_flops", "peak_source") if k in r} | {"mfu": r.get("mfu")}


def latency_plan(args) -> list[dict]:
    """Base-only rows: every batch × every step count."""
    return [{"batch": b, "steps": t} for b in args.batches for t in args.steps]


def goals(rows: list[dict], preset: str) -> dict:
    """The issue's targets against what was measured (None where a row is missing)."""
    def find(model, batch, steps, sr=None):
        return next((r for r in rows if r["what"] == "latency" and r["model"].startswith(model)
                     and r["batch"] == batch and r["steps"] == steps and r.get("sr_steps") == sr
                     and r["status"] == "ok"), None)

    ours, amused = find(f"muse_mini {preset}", 1, 12), find("aMUSEd", 1, 12)
    large = next((r for r in rows if r["what"] == "latency" and r.get("large") and r["status"] == "ok"), None)
    mfus = [r["mfu"] for r in rows if r["what"] == "train" and r["status"] == "ok" and r.get("mfu") is not None]
    out = {
        "base_b1_12_ms": ours and ours["ms"],
        "amused_b1_12_ms": amused and amused["ms"],
        "amused_ratio": ours and amused and amused["ms"] / ours["ms"],
        "large_24_ms": large and large["ms"],
        "best_mfu": max(mfus) if mfus else None,
    }
    out["met"] = {
        "base_b1_12_ms<=40": out["base_b1_12_ms"] is not None and out["base_b1_12_ms"] <= GOALS["cc3m_b1_12_ms"],
        "amused_ratio>=14": out["amused_ratio"] is not None and out["amused_ratio"] >= GOALS["amused_ratio"],
        "paper3b_24_ms<=200": out["large_24_ms"] is not None and out["large_24_ms"] <= GOALS["paper3b_24_ms"],
        "mfu>=0.45": out["best_mfu"] is not None and out["best_mfu"] >= GOALS["mfu"],
    }
    return out


def _mib(n) -> str:
    return "" if n is None else f"{n / 2**20:,.0f} MiB"


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    lines = ["| what | model | batch | steps | result | memory | status |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        steps = "" if r["what"] == "train" else str(r["steps"])
        steps += f" + {r['sr_steps']} SR" if r.get("sr_steps") else ""
        if r["status"] != "ok":
            result = ""
        elif r["what"] == "train":
            mfu = "" if r.get("mfu") is None else f", MFU {100 * r['mfu']:.1f}%"
            result = f"{1e3 * r['step_s_median']:.1f} ms/step, {r['examples_per_s']:,.0f} ex/s{mfu}"
        else:
            result = f"{r['ms']:.1f} ms ({r['ms'] / r['batch']:.1f} ms/img)"
            if r.get("logits_max_abs_diff") is not None:
                result += f", fp32 logits max abs diff {r['logits_max_abs_diff']:.1e}"
        model = r["model"] + (f" (remat={r['remat']})" if r["what"] == "train" else "")
        memory = _mib(r.get("program_bytes") or r.get("peak_memory_bytes"))
        lines.append(f"| {r['what']} | {model} | {r['batch']} | {steps} | {result} | {memory} | {r['status']} |")
    return "\n".join(lines)


# Defaults of the flags: one device call on a GPU, and the CPU smoke test (--quick).
FULL = {"batches": [1, 8], "steps": [12, 24], "superres_steps": 8, "cascade_steps": 12,
        "train_batches": [64, 256, 512], "train_steps": 5, "repeats": 5}
QUICK = {"batches": [1, 2], "steps": [2], "superres_steps": 2, "cascade_steps": 2,
         "train_batches": [4], "train_steps": 2, "repeats": 2}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default=None, help="the model timed (default cc3m; toy on CPU)")
    parser.add_argument("--large-preset", default=None, help="the 24-step large row (default paper-3b; none on CPU)")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="latency batches (1 8; --quick 1 2)")
    parser.add_argument("--steps", type=int, nargs="+", default=None, help="base decoding steps (12 24; --quick 2)")
    parser.add_argument("--superres-steps", type=int, default=None, help="super-res steps of the cascade rows")
    parser.add_argument("--cascade-steps", type=int, default=None, help="base steps of the cascade rows")
    parser.add_argument("--guidance", type=float, default=3.0,
                        help="Muse's guidance t (logits (1+t)·c − t·u); aMUSEd gets diffusers' s = t + 1")
    parser.add_argument("--train-batches", type=int, nargs="+", default=None,
                        help="train-step batches (64 256 512; --quick 4)")
    parser.add_argument("--train-steps", type=int, default=None, help="steps per timed repeat (5)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats, median reported (5)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the chip's bf16 peak (default: datasheet)")
    parser.add_argument("--time-budget", type=float, default=360.0,
                        help="seconds; rows that would start later are skipped (default 360)")
    parser.add_argument("--no-amused", action="store_true", help="skip the diffusers comparisons")
    parser.add_argument("--only-same-weights", action="store_true",
                        help="run only the same-weights rows (aMUSEd in JAX and in diffusers, issue 39)")
    parser.add_argument("--torch-compile-mode", default="reduce-overhead",
                        help="torch.compile's mode for the compiled diffusers row (reduce-overhead: CUDA graphs)")
    parser.add_argument("--quick", action="store_true", help="toy sizes, few repeats: the CPU smoke test")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", metavar="section.field=value",
                        help="config overrides for every muse_mini row, e.g. base.attention=cudnn; put them "
                             "before flags that take several values (--batches, --steps, --train-batches)")
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():  # what was not given
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.guidance <= 0:
        parser.error(f"--guidance: expected > 0, so that both sides run both guidance passes, got {args.guidance}")
    for name in ("batches", "steps", "train_batches", "superres_steps", "cascade_steps", "train_steps", "repeats"):
        values = getattr(args, name)
        if any(v < 1 for v in (values if isinstance(values, list) else [values])):
            parser.error(f"--{name.replace('_', '-')}: expected positive integers, got {values}")
    return args


def run(args, save=lambda report: None) -> dict:
    """Every section, the issue's goal rows first; ``save(report)`` after each one (a partial report)."""
    cpu = jax.default_backend() == "cpu"
    preset = args.preset or ("toy" if cpu or args.quick else "cc3m")
    large = args.large_preset or (None if cpu or args.quick else "paper-3b")
    budget = Budget(args.time_budget)
    plan = latency_plan(args)
    device = jax.devices()[0]
    report = {"device_kind": device.device_kind, "backend": jax.default_backend(), "jax": jax.__version__,
              "equinox": eqx.__version__, "machine": machine(), "preset": preset, "large_preset": large,
              "argv": sys.argv[1:], "rows": []}
    sections = [lambda: our_latency(args, preset, plan, budget, superres=False)]
    if not args.no_amused:
        sections.append(lambda: amused_latency_rows(args, plan, budget))
    if large:
        sections.append(lambda: [{**r, "large": True} for r in our_latency(
            args, large, [{"batch": 1, "steps": 24}], budget, superres=False)])
    sections.append(lambda: training_rows(args, preset, budget))
    sections.append(lambda: our_latency(args, preset, [{"batch": b, "steps": args.cascade_steps,
                                                          "sr_steps": args.superres_steps} for b in args.batches],
                                        budget, superres=True))
    if args.only_same_weights:
        sections = []
    if args.only_same_weights or not args.no_amused:
        sections.append(lambda: same_weights_rows(args, budget))
    for section in sections:
        rows = section()
        report["rows"] += rows
        report["goals"] = goals(report["rows"], preset)
        print(table(rows), flush=True)
        save(report)
    return report


def main(argv=None) -> dict:
    args = parse_args(argv)

    def save(report):
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")

    report = run(args, save)
    host = report["machine"]
    print(f"device: {report['device_kind']} ({report['backend']}), jax {report['jax']}, preset {report['preset']}; "
          f"host {host['cpu']}, {host['cpu_count']} cores")
    print(table(report["rows"]))
    print("goals:", json.dumps(report["goals"], indent=1))
    if args.json:
        print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
