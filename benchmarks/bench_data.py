"""Input-pipeline throughput of ONE process on this machine: JPEG decode vs pre-tokenised shards.

Three figures, each printed with the machine it was measured on:

(a) **Decode path** (``data.feed=images``, and ``muse-mini tokenize``):
    images/s through :class:`muse_mini.data.image_shards.ImageBatches` —
    read from webdataset tar shards, JPEG decode, bicubic resize of the
    shorter side, centre crop to ``--image-size`` (256, the cc3m base
    tokenizer's input) — with ``workers=1`` and ``workers=os.cpu_count()``.
    The shards are written by the script itself
    (:func:`muse_mini.data.webdataset.write_webdataset`) from photographs:
    crops of scikit-image's bundled sample photos when ``skimage`` is
    importable, else random smooth images; JPEG quality 95 (img2dataset's
    default), ``--photo`` pixels (default 384×512, portrait and landscape).
    Rows are drawn by :class:`muse_mini.data.stream.ShardedOrder`, as in training.

(b) **Token-shard path** (``data.feed=shards``): examples/s and tokens/s
    through :meth:`muse_mini.data.token_shards.TokenShards.read` with a
    ``ShardedOrder``, ``--token-batch`` (512) rows per step, on shards the
    script writes with ``write_shard``/``write_manifest`` at the cc3m preset's
    sizes (base ids ``tokenizer.grid²``, high-res ids ``highres_tokenizer.grid²``,
    uint16). Three field sets: the base ids alone; base + high-res ids (the
    super-res stage's ids); and the base stage as it reads cc3m-sized data,
    whose 3.3M captions exceed ``data.text_cache_max`` so every row also
    carries its float16 T5-XXL embedding (``text`` 128×4096, ``text_mask``).
    The shards were just written, so they are in the page cache: this is the
    reader's CPU cost, not the disk's.

(c) **What the accelerators consume.** The cc3m base model on 8×H100 at
    45% MFU: ``8 × 989e12 × 0.45 / train_flops_per_example(cc3m, "base")``
    examples/s (:func:`muse_mini.models.params.train_flops_per_example`,
    analytic model FLOPs), and how many hosts' worth of cores (``--host-cores``,
    default 208: a 2-socket host with 104 vCPUs each, as an 8×H100 cloud VM
    such as GCP a3-highgpu-8g has) each path needs at its measured per-core rate.

    python benchmarks/bench_data.py                 # about 2 minutes on 2 cores
    python benchmarks/bench_data.py --quick         # smoke test, seconds
    python benchmarks/bench_data.py --json runs/bench_data.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import PIL  # noqa: E402
from PIL import Image, features  # noqa: E402

from muse_mini.config import get_preset  # noqa: E402
from muse_mini.data.image_shards import ImageBatches, WebDatasetImages  # noqa: E402
from muse_mini.data.stream import ShardedOrder  # noqa: E402
from muse_mini.data.token_shards import TokenShards, write_manifest, write_shard  # noqa: E402
from muse_mini.data.webdataset import write_webdataset  # noqa: E402
from muse_mini.models.params import train_flops_per_example  # noqa: E402

H100_BF16_PEAK = 989e12  # dense bf16, SXM datasheet (as in bench_train.py)
ISSUE_RATE = 3600  # images/s the issue quotes for the cc3m base on 8×H100 at 45% MFU, batch 512
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")


# --------------------------------------------------------------------------
# the machine


def machine() -> dict:
    """CPU model and cores, memory, and the versions that set the speed (Pillow's libjpeg)."""
    import jax

    model = platform.processor() or "unknown"
    extra = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "model name" and "model_name" not in extra:
                extra["model_name"] = value
            elif key in ("cpu family", "model") and key not in extra:
                extra[key] = value
            elif key == "flags" and "flags" not in extra:
                extra["flags"] = value.split()
    except OSError:
        pass
    model = extra.get("model_name", model)
    if "cpu family" in extra:
        model += f" (family {extra['cpu family']}, model {extra.get('model', '?')})"
    hypervisor = "hypervisor" in extra.get("flags", ())
    mem = None
    try:
        kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:"))
        mem = kb * 1024
    except (OSError, StopIteration, ValueError):
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": model, "virtual_machine": hypervisor, "cpu_count": os.cpu_count(), "usable_cores": usable,
        "memory_bytes": mem, "python": platform.python_version(), "jax": jax.__version__,
        "numpy": np.__version__, "pillow": PIL.__version__, "libjpeg": features.version("jpg"),
        "libjpeg_turbo": bool(features.check_feature("libjpeg_turbo")), "platform": platform.platform(),
    }


def print_machine(m: dict) -> None:
    mem = f", {m['memory_bytes'] / 2**30:.0f} GiB RAM" if m["memory_bytes"] else ""
    print(f"machine: {m['cpu']}{' (virtual machine)' if m['virtual_machine'] else ''}, "
          f"{m['cpu_count']} cores ({m['usable_cores']} usable){mem}")
    print(f"versions: python {m['python']}, jax {m['jax']}, numpy {m['numpy']}, Pillow {m['pillow']} "
          f"(libjpeg {m['libjpeg']}{', turbo' if m['libjpeg_turbo'] else ''})")


# --------------------------------------------------------------------------
# (a) decode + resize + centre crop


def _photos() -> tuple[list[np.ndarray], str]:
    """Source photographs: scikit-image's bundled samples, else random smooth images."""
    try:
        import skimage.data
        photos = [np.asarray(getattr(skimage.data, name)()) for name in SKIMAGE_PHOTOS]
        return [p for p in photos if p.ndim == 3 and p.shape[2] == 3], (
            f"crops of scikit-image {skimage.__version__} sample photos ({', '.join(SKIMAGE_PHOTOS)})")
    except Exception:  # noqa: BLE001 - any failure: the synthetic fallback
        return [], "random smooth images (scikit-image is not importable)"


def _smooth(rng, h: int, w: int) -> np.ndarray:
    """Photo-like noise: a coarse random field upsampled bicubically, plus fine grain."""
    coarse = rng.integers(0, 256, (max(2, h // 32), max(2, w // 32), 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), np.int16)
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def make_jpegs(n: int, photo_hw: tuple[int, int], seed: int):
    """``n`` ``(jpeg_bytes, caption, meta)`` samples of ``photo_hw`` pixels (every other one portrait)."""
    rng = np.random.default_rng(seed)
    photos, kind = _photos()
    short, long = sorted(photo_hw)
    samples, sizes = [], []
    for i in range(n):
        h, w = (short, long) if i % 2 == 0 else (long, short)
        if photos:
            src = Image.fromarray(photos[i % len(photos)])
            scale = max(h / src.height, w / src.width) * rng.uniform(1.0, 1.3)  # crop, never pad
            src = src.resize((max(w, round(src.width * scale)), max(h, round(src.height * scale))),
                             Image.Resampling.BICUBIC)
            top, left = rng.integers(0, src.height - h + 1), rng.integers(0, src.width - w + 1)
            img = src.crop((left, top, left + w, top + h))
            if rng.random() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        else:
            img = Image.fromarray(_smooth(rng, h, w))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=95)
        samples.append((buf.getvalue(), f"photo {i}", {"width": w, "height": h}))
        sizes.append(len(samples[-1][0]))
    return samples, kind, float(np.mean(sizes))


def bench_decode(root: Path, args, workers_list) -> dict:
    samples, kind, mean_bytes = make_jpegs(args.images, args.photo, args.seed)
    paths = write_webdataset(samples, root / "wds", shard_size=args.shard_size)
    del samples
    source = WebDatasetImages(root / "wds")
    order = ShardedOrder(source.counts, args.batch, seed=args.seed, window=len(source.counts))
    r = {"images": args.images, "photo_hw": list(args.photo), "photo_kind": kind, "jpeg_quality": 95,
         "mean_jpeg_bytes": mean_bytes, "shards": len(paths), "image_size": args.image_size,
         "batch": args.batch, "steps_per_pass": order.steps_per_epoch, "runs": []}
    print(f"\n(a) decode + resize + centre crop to {args.image_size}px through ImageBatches")
    print(f"    {args.images} JPEGs ({args.photo[0]}×{args.photo[1]} and {args.photo[1]}×{args.photo[0]}, "
          f"quality 95, mean {mean_bytes / 1024:.0f} KiB): {kind}")
    print(f"    {len(paths)} webdataset shards of {args.shard_size}; batches of {args.batch} drawn by "
          f"ShardedOrder; {args.repeats} pass(es) of {order.steps_per_epoch} batches per setting")
    for workers in workers_list:
        reader = ImageBatches(source, order, args.image_size, workers=workers, on_error="raise")
        for s in range(len(source.counts)):  # index every shard, start the threads: not timed
            reader.read([(s, 0)], fill=False)
        times, cpu = [], []
        for rep in range(args.repeats):
            for step in range(order.steps_per_epoch):
                pairs = order(rep * order.steps_per_epoch + step)
                t0, c0 = time.perf_counter(), time.process_time()
                images, _ = reader.read(pairs, fill=False)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                assert images.shape == (len(pairs), args.image_size, args.image_size, 3)
        reader.close()
        n, wall, cpu_s = args.batch * len(times), sum(times), sum(cpu)
        run = {"workers": workers, "images_per_s": n / wall,
               "images_per_s_median_batch": args.batch / statistics.median(times),
               "images_per_s_per_core": n / wall / workers, "images_per_cpu_s": n / cpu_s,
               "cpu_utilisation": cpu_s / wall, "batches": len(times), "wall_s": wall}
        r["runs"].append(run)
        print(f"    workers={workers}: {run['images_per_s']:7.1f} images/s = {run['images_per_s_per_core']:6.1f} "
              f"images/s per core  ({run['images_per_cpu_s']:.1f} images per CPU-second, "
              f"{run['cpu_utilisation']:.2f} cores busy, {wall:.1f} s)")
    one, many = r["runs"][0], r["runs"][-1]
    if len(r["runs"]) > 1:
        print(f"    scaling: workers={many['workers']} is {many['images_per_s'] / one['images_per_s']:.2f}× "
              f"workers=1 ({many['images_per_s_per_core'] / one['images_per_s_per_core']:.2f}× per core)")
    # the per-core rate used for sizing hosts: the all-cores run (threads contending, as in training)
    r["per_core_for_sizing"] = many["images_per_s_per_core"]
    return r


# --------------------------------------------------------------------------
# (b) token shards


def _write_token_shards(root: Path, shards: int, rows: int, fields: dict, seed: int) -> int:
    """``shards`` shards of ``rows`` rows, each field ``name -> (row shape, dtype, high)``; bytes written."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    total = 0
    for s in range(shards):
        arrays = {}
        for name, (shape, dtype, high) in fields.items():
            dtype = np.dtype(dtype)
            if dtype.kind == "u":
                arrays[name] = rng.integers(0, high, (rows, *shape), dtype=dtype)
            elif dtype.kind == "f":
                arrays[name] = rng.standard_normal((rows, *shape), dtype=np.float32).astype(dtype)
            elif dtype.kind == "b":
                arrays[name] = np.ones((rows, *shape), bool)
            else:  # captions
                arrays[name] = np.array([f"a photo of example {s * rows + i}" for i in range(rows)], dtype)
            total += arrays[name].nbytes
        write_shard(root, s, arrays)
        del arrays
    write_manifest(root, {"source": "bench_data synthetic", "text": {"mode": "shards" if "text" in fields
                                                                    else "cache"}})
    return total


def _time_reads(shards: TokenShards, order: ShardedOrder, fields, steps: int, to_float32: bool):
    shards.read(order(0), fields)  # open every header once: not timed
    times = []
    for step in range(steps):
        pairs = order(step + 1)
        t0 = time.perf_counter()
        got = shards.read(pairs, fields)
        if to_float32 and "text" in got:  # shard_feed's own conversion
            got["text"] = got["text"].astype(np.float32)
        times.append(time.perf_counter() - t0)
    return times, got


def bench_tokens(root: Path, args, cfg) -> dict:
    base_t, hr_t = cfg.tokenizer.grid ** 2, cfg.highres_tokenizer.grid ** 2
    base_v, hr_v = cfg.tokenizer.codebook_size, cfg.highres_tokenizer.codebook_size
    L, D = cfg.text.max_length, cfg.text.width
    dtype = np.uint16 if max(base_v, hr_v) <= 2 ** 16 else np.int32
    rows, n_shards, batch = args.token_rows_per_shard, args.token_shards, args.token_batch
    ids = {"tokens": ((base_t,), dtype, base_v), "hr_tokens": ((hr_t,), dtype, hr_v), "captions": ((), "<U32", 0)}
    written = _write_token_shards(root / "tokens", n_shards, rows, ids, args.seed)
    shards = TokenShards(root / "tokens")
    order = ShardedOrder(shards.counts, batch, seed=args.seed, window=args.window)
    steps = min(args.token_steps, order.steps_per_epoch - 1)
    print(f"\n(b) token-shard reader (TokenShards.read, ShardedOrder, {batch} rows per step, window "
          f"{args.window} shards)")
    print(f"    cc3m sizes: base ids {cfg.tokenizer.grid}×{cfg.tokenizer.grid} = {base_t}, high-res ids "
          f"{cfg.highres_tokenizer.grid}×{cfg.highres_tokenizer.grid} = {hr_t}, {np.dtype(dtype).name}; "
          f"{n_shards} shards × {rows:,} rows ({written / 2**20:.0f} MiB); {steps} steps timed; page cache warm")
    r = {"base_tokens": base_t, "hr_tokens": hr_t, "dtype": np.dtype(dtype).name, "batch": batch,
         "shards": n_shards, "rows_per_shard": rows, "window": args.window, "runs": []}

    def report(name, tokens_per_row, times, bytes_per_row, shard_set, note=""):
        n, wall = batch * len(times), sum(times)
        run = {"fields": name, "examples_per_s": n / wall, "tokens_per_s": n * tokens_per_row / wall,
               "MiB_per_s": n * bytes_per_row / wall / 2**20, "bytes_per_row": bytes_per_row,
               "step_ms_median": 1e3 * statistics.median(times), "steps": len(times), "note": note,
               "rows_written": shard_set}
        r["runs"].append(run)
        print(f"    {name:<34} {run['examples_per_s']:>9,.0f} examples/s  {run['tokens_per_s']:>12,.0f} tokens/s  "
              f"{run['MiB_per_s']:>7,.0f} MiB/s  ({run['step_ms_median']:.1f} ms/step){note}")
        return run

    itemsize = np.dtype(dtype).itemsize
    times, got = _time_reads(shards, order, ["tokens"], steps, False)
    assert got["tokens"].shape == (batch, base_t)
    report("base ids (tokens)", base_t, times, base_t * itemsize, n_shards * rows)
    times, _ = _time_reads(shards, order, ["tokens", "hr_tokens"], steps, False)
    report("base + high-res ids (super-res)", base_t + hr_t, times, (base_t + hr_t) * itemsize,
           n_shards * rows, note="  tokens/s counts both")

    if args.text_rows:
        text_rows = max(args.text_rows, batch)
        per_shard = min(text_rows, args.token_rows_per_shard)
        n_text = -(-text_rows // per_shard)
        fields = {"tokens": ((base_t,), dtype, base_v), "text": ((L, D), np.float16, 0),
                  "text_mask": ((L,), bool, 0), "captions": ((), "<U32", 0)}
        written = _write_token_shards(root / "text", n_text, per_shard, fields, args.seed)
        tshards = TokenShards(root / "text")
        torder = ShardedOrder(tshards.counts, batch, seed=args.seed, window=args.window)
        tsteps = max(1, min(args.text_steps, torder.steps_per_epoch - 1))
        print(f"    base stage at cc3m scale also reads the T5-XXL embedding of every row (text {L}×{D} float16 "
              f"+ mask: {n_text} shards × {per_shard} rows, {written / 2**30:.2f} GiB):")
        row_bytes = base_t * itemsize + L * D * 2 + L
        times, got = _time_reads(tshards, torder, ["tokens", "text", "text_mask"], tsteps, False)
        assert got["text"].shape == (batch, L, D)
        r["text"] = {"rows": n_text * per_shard, "text_shape": [L, D]}
        report("base ids + text + text_mask", base_t, times, row_bytes, n_text * per_shard)
        times, _ = _time_reads(tshards, torder, ["tokens", "text", "text_mask"], tsteps, True)
        report("  ... + float32 cast (shard_feed)", base_t, times, row_bytes, n_text * per_shard)
    return r


# --------------------------------------------------------------------------
# (c) what 8×H100 consume, and the cores each path needs


def bench_demand(args, cfg, decode: dict, tokens: dict, m: dict) -> dict:
    flops = train_flops_per_example(cfg, "base")
    peak = args.chips * args.peak_tflops * 1e12 * args.mfu
    rate = peak / flops
    step_s = args.global_batch / rate
    seq = cfg.tokenizer.grid ** 2
    r = {"train_flops_per_example": flops, "cluster_flops_per_s": peak, "chips": args.chips,
         "peak_tflops": args.peak_tflops, "mfu": args.mfu, "examples_per_s": rate, "global_batch": args.global_batch,
         "step_s": step_s, "issue_examples_per_s": ISSUE_RATE, "vs_issue": rate / ISSUE_RATE,
         "base_tokens_per_s": rate * seq, "host_cores": args.host_cores}
    print(f"\n(c) what the cc3m base ({cfg.base.depth} layers × {cfg.base.width}) consumes on {args.chips}×H100 at "
          f"{100 * args.mfu:.0f}% MFU")
    print(f"    train_flops_per_example(cc3m, 'base') = {flops / 1e9:,.1f} GFLOP (analytic, 3 × forward matmuls)")
    print(f"    {args.chips} × {args.peak_tflops:g} TFLOP/s × {args.mfu} = {peak / 1e12:,.1f} TFLOP/s "
          f"→ {rate:,.0f} examples/s = {rate * seq / 1e6:.2f} M base tokens/s; a batch of {args.global_batch} "
          f"every {1e3 * step_s:.0f} ms")
    print(f"    the issue's figure: about {ISSUE_RATE:,} images/s; computed here {rate:,.0f} "
          f"({100 * (rate / ISSUE_RATE - 1):+.1f}%)")
    print(f"    cores to keep up, at the per-core rates measured above on this machine "
          f"(a host = {args.host_cores} cores):")
    rows = []
    d_core = decode["per_core_for_sizing"]
    rows.append(("decode path (JPEG → 256px)", d_core, "images/s/core"))
    for run in tokens["runs"]:
        # the reader is one thread (shard_feed prefetches in one): its rate is one core's
        rows.append((f"token shards: {run['fields'].strip()}", run["examples_per_s"], "examples/s/core"))
    r["paths"] = []
    for name, per_core, unit in rows:
        cores = rate / per_core
        hosts = cores / args.host_cores
        r["paths"].append({"path": name, "per_core": per_core, "cores_needed": cores, "hosts_needed": hosts})
        print(f"      {name:<44} {per_core:>9,.0f} {unit:<15} → {cores:>8,.2f} cores = "
              f"{hosts:>7.4f} hosts")
    slow = [(name, per_core) for name, per_core, _ in rows[1:] if per_core < rate]
    for name, per_core in slow:
        print(f"    note: shard_feed reads with one prefetch thread per process, so '{name.split(': ', 1)[1].strip()}' "
              f"keeps up only with >= {rate / per_core:.1f} processes per {args.chips} chips "
              f"(one per chip: {rate / args.chips:,.0f} examples/s each)")
    r["one_thread_short"] = [name for name, _ in slow]
    ratio = (rows[1][1] / d_core)
    r["token_vs_decode_per_core"] = ratio
    print(f"    per core the token-shard reader (base ids) moves {ratio:,.0f}× the examples the decode path does")
    if "text" in tokens:
        text_run = next(x for x in tokens["runs"] if x["fields"].startswith("base ids + text"))
        gib = rate * text_run["bytes_per_row"] / 2**30
        r["text_GiB_per_s"] = gib
        print(f"    with stored T5-XXL embeddings the base stage reads {text_run['bytes_per_row'] / 2**20:.2f} MiB "
              f"per example: {gib:.1f} GiB/s from storage at {rate:,.0f} examples/s")
    print(f"    (cores are this machine's: {m['cpu']}; the decode-path figure is wall time / workers with "
          f"all {decode['runs'][-1]['workers']} workers busy)")
    if decode["image_size"] != cfg.highres_tokenizer.image_size:
        print(f"    caveat: at cc3m, tokenize and data.feed=images decode to highres_tokenizer.image_size = "
              f"{cfg.highres_tokenizer.image_size} px, not {decode['image_size']}: measure that with "
              f"--image-size {cfg.highres_tokenizer.image_size} --photo {cfg.highres_tokenizer.image_size} "
              f"{cfg.highres_tokenizer.image_size * 4 // 3}")
    return r


# --------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke test (seconds)")
    p.add_argument("--images", type=int, default=None, help="JPEGs to write (default 2048; quick 64)")
    p.add_argument("--photo", type=int, nargs=2, default=(384, 512), metavar=("SHORT", "LONG"),
                   help="JPEG size in pixels (default 384 512)")
    p.add_argument("--shard-size", type=int, default=None, help="samples per webdataset shard (default 512)")
    p.add_argument("--image-size", type=int, default=256, help="decode target (default 256)")
    p.add_argument("--batch", type=int, default=None, help="images per decode batch (default 256)")
    p.add_argument("--repeats", type=int, default=None, help="passes over the JPEGs per setting (default 2)")
    p.add_argument("--workers", type=int, nargs="+", default=None,
                   help=f"decode thread counts to measure (default: 1 and os.cpu_count()={os.cpu_count()})")
    p.add_argument("--token-shards", type=int, default=None, help="token shards to write (default 8)")
    p.add_argument("--token-rows-per-shard", type=int, default=None,
                   help="rows per token shard (default 10000, img2dataset's shard size)")
    p.add_argument("--token-batch", type=int, default=512, help="rows read per step (default 512)")
    p.add_argument("--token-steps", type=int, default=None, help="steps timed per field set (default 100)")
    p.add_argument("--text-rows", type=int, default=None,
                   help="rows written with T5-XXL-sized embeddings, 1 MiB each (default 2560; 0 skips)")
    p.add_argument("--text-steps", type=int, default=None, help="steps timed with embeddings (default 4)")
    p.add_argument("--window", type=int, default=8, help="ShardedOrder window, in shards (data.shuffle_shards)")
    p.add_argument("--chips", type=int, default=8)
    p.add_argument("--peak-tflops", type=float, default=H100_BF16_PEAK / 1e12, help="per chip, bf16 dense")
    p.add_argument("--mfu", type=float, default=0.45)
    p.add_argument("--global-batch", type=int, default=512)
    p.add_argument("--host-cores", type=int, default=208,
                   help="cores (vCPUs) per host for the sizing (default 208 = 2 × 104)")
    p.add_argument("--tmp", type=Path, default=None, help="where to write the shards (default: a temp dir)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {"images": (2048, 64), "shard_size": (512, 16), "batch": (256, 16), "repeats": (2, 1),
                "token_shards": (8, 4), "token_rows_per_shard": (10_000, 300), "token_steps": (100, 4),
                "text_rows": (2560, 32), "text_steps": (4, 1)}
    for name, (full, small) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    if quick and args.token_batch == 512:
        args.token_batch = 32
    args.photo = tuple(args.photo)
    if min(args.photo) < args.image_size:
        p.error("--photo: both sides should be at least --image-size (photos are downscaled, not upscaled)")
    if args.images < args.batch:
        p.error("--images must be at least --batch")
    if args.token_shards * args.token_rows_per_shard < 2 * args.token_batch:
        p.error("token shards must hold at least two batches")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    m = machine()
    print_machine(m)
    cfg = get_preset("cc3m")
    workers = args.workers or sorted({1, os.cpu_count() or 1})
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_data-", dir=args.tmp) as tmp:
        decode = bench_decode(Path(tmp), args, workers)
        tokens = bench_tokens(Path(tmp), args, cfg)
    demand = bench_demand(args, cfg, decode, tokens, m)
    r = {"machine": m, "quick": args.quick, "decode": decode, "tokens": tokens, "demand": demand,
         "wall_s": time.perf_counter() - start}
    print(f"\n(total {r['wall_s']:.0f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(r, indent=2) + "\n")
        print(f"wrote {args.json}")
    return r


if __name__ == "__main__":
    main()
