"""One job of the GPU sweep behind docs/results.md ("What limits the quick base model").

    python docs/archive/gpu_sweep/sweep.py JOB OUTDIR      # writes OUTDIR/JOB.json

Base jobs (``b_*``, ``d*``) train the toy base model on the quick recipe's
data with the preset's optimiser, changing one thing (``BASE_JOBS``), and
report the evaluator's caption accuracy on 48 in-distribution and 16 hold-out
canonical prompts × 4 samples for three sampler settings. Super-res jobs
(``s_*``) train the full recipe's super-res model with one change
(``SR_JOBS``) and report the PSNR on 500 hold-out scenes, decoded from the
true low-res tokens, against bicubic. The loop is a plain jitted step (no
checkpoints), so runs are only comparable with each other. ``SCALE=0.005``
shrinks every step count for a CPU smoke run. Inputs come from
``docs/archive/gpu_sweep/prep.py``; ``docs/archive/gpu_sweep/run.sh`` runs a batch.
"""
import dataclasses, json, os, sys, time
from pathlib import Path
import equinox as eqx, jax, jax.numpy as jnp, numpy as np

from muse_mini.config import get_preset
from muse_mini.config import RECIPES
from muse_mini.data.shapes import generate, downsample, canonical_prompts
from muse_mini.runs.load import load_tokenizer
from muse_mini.models.codec import encode_images, decode_tokens
from muse_mini.training.tokenizer import train_tokenizer
from muse_mini.training.optim import make_optimizer, init_train_state, make_train_step
from muse_mini.training.keys import epoch_batch_indices, step_key, init_key
from muse_mini.data.evaluator import caption_accuracy
from muse_mini.decoding.guidance import unconditional_context
from muse_mini.pipeline import decode_with_sampler

SCALE = float(os.environ.get("SCALE", "1"))
G = Path(os.environ.get("SWEEP_DATA", "gpuwork"))
T = np.load(G / "data/text.npz")
CAPIDX = {c: i for i, c in enumerate(T["captions"].tolist())}
TEXT, MASK = T["text"].astype(np.float32), T["mask"]


def text_for(captions):
    idx = np.array([CAPIDX[c] for c in captions])
    return TEXT[idx], MASK[idx]


class FactorPos(eqx.Module):
    row: jax.Array
    col: jax.Array
    grid: int = eqx.field(static=True)

    def __call__(self, dtype):
        return (self.row[:, None] + self.col[None, :]).reshape(self.grid ** 2, -1).astype(dtype)


def train_loop(model, loss_fn, tc, batch_fn):
    opt = make_optimizer(tc)
    state = init_train_state(model, opt)
    step = eqx.filter_jit(make_train_step(loss_fn, opt), donate="all")
    losses, t0 = [], time.time()
    steps = max(2, int(tc.steps * SCALE))
    for s in range(steps):
        state, m = step(state, batch_fn(s), step_key(tc.seed, s))
        if s % 50 == 0 or s >= steps - 100:
            losses.append((s, float(m["loss"]), float(m["accuracy"])))
    return state.model, losses, time.time() - t0


# The sweep's reference: the quick recipe's base model when it ran (4 layers,
# 1800 steps; the preset now has 2 layers and 3600). Job overrides come after.
SWEEP_BASE = ["base.depth=4", "base_train.steps=1800"]
BASE_JOBS = {  # name: (overrides, options)
    "b_base": ([], {}),
    "b_x2": (["base_train.steps=3600"], {}),
    "b_x4": (["base_train.steps=7200"], {}),
    "b_factpos": ([], {"factpos": True}),
    "b_depth2": (["base.depth=2"], {}),
    "b_w192": (["base.width=192", "base.mlp_dim=768"], {}),
    "b_bs16": (["base_train.batch_size=16", "base_train.steps=3600", "base_train.warmup_steps=300"], {}),
    "b_bs64": (["base_train.batch_size=64", "base_train.steps=900", "base_train.lr=3e-3", "base_train.warmup_steps=75"], {}),
    "b_cb64": (["tokenizer.codebook_size=64"], {"tok": True}),
    "b_cb128": (["tokenizer.codebook_size=128"], {"tok": True}),
    "b_cb64_factpos": (["tokenizer.codebook_size=64"], {"tok": True, "factpos": True}),
    "b_nowd": (["base_train.weight_decay=0"], {}),
    "d2_x2": (["base.depth=2", "base_train.steps=3600"], {}),
    "d2_x3": (["base.depth=2", "base_train.steps=5400"], {}),
    "d1_x3": (["base.depth=1", "base_train.steps=5400"], {}),
    "d2m256_x3": (["base.depth=2", "base.mlp_dim=256", "base_train.steps=5400"], {}),
    "d4_x3": (["base_train.steps=5400"], {}),
    "d2_x3_fp": (["base.depth=2", "base_train.steps=5400"], {"factpos": True}),
}
SAMPLERS = {
    "default": {},
    "const2": {"guidance_schedule": "constant"},
    "s24_ct45_const2": {"steps": 24, "choice_temperature": 4.5, "guidance_schedule": "constant"},
}
if os.environ.get("FEW_SAMPLERS"):
    SAMPLERS.pop("s24_ct45_const2")


def evaluate_base(model, cfg, tok):
    res = {}
    for sname, ch in SAMPLERS.items():
        sampler = dataclasses.replace(cfg.sampler, **ch)
        r = {}
        for split, n in (("train", 48), ("holdout", 16)):
            prompts = [p for p in canonical_prompts(split, n=n) for _ in range(4)]
            text, mask = text_for(prompts)
            ctx = (jnp.asarray(text), jnp.asarray(mask))
            traj = decode_with_sampler(model, ctx, unconditional_context(ctx), jax.random.key(0), sampler)
            imgs = decode_tokens(tok, np.asarray(traj.tokens_BxN))
            a = caption_accuracy(imgs, prompts)
            r[split] = {"acc": a["accuracy"], "kinds": {k: v["accuracy"] for k, v in a["per_kind"].items()}}
        res[sname] = r
    return res


def run_base(name, outdir):
    from muse_mini.models.build import build_base
    from muse_mini.training.base import _base_loss
    over, opt = BASE_JOBS[name]
    over = [*SWEEP_BASE, *over]
    cfg = get_preset("toy", over)
    info = {}
    if opt.get("tok"):
        t0 = time.time()
        tcfg = cfg if SCALE == 1 else get_preset("toy", over + [f"tokenizer_train.steps={max(2, int(2400*SCALE))}"])
        tok = train_tokenizer(tcfg, "base", Path("/tmp") / f"tok-{name}", progress=False)
        info["tok_time"] = time.time() - t0
    else:
        tok = load_tokenizer(G / "tok-demo")
    images, caps, _ = generate(cfg.data.num_examples, seed=0, split="train")
    tokens = encode_images(tok, downsample(images, 2)).reshape(len(images), -1).astype(np.int32)
    text, mask = text_for(caps)
    tokens_d, text_d, mask_d = jnp.asarray(tokens), jnp.asarray(text), jnp.asarray(mask)
    tc = cfg.base_train

    def batch_fn(s):
        i = jnp.asarray(epoch_batch_indices(len(tokens), tc.batch_size, tc.seed, s))
        return {"tokens": tokens_d[i], "text": text_d[i], "text_mask": mask_d[i]}

    model = build_base(cfg, init_key(tc.seed))
    if opt.get("factpos"):
        g = cfg.tokenizer.grid
        k1, k2 = jax.random.split(jax.random.key(7))
        fp = FactorPos(0.02 * jax.random.normal(k1, (g, cfg.base.width)), 0.02 * jax.random.normal(k2, (g, cfg.base.width)), g)
        model = eqx.tree_at(lambda m: m.decoder.pos_embed, model, fp)
    model, losses, ttime = train_loop(model, _base_loss(cfg), tc, batch_fn)
    info.update(train_time=ttime, losses=losses[-3:], curve=losses[::4])
    info["eval"] = evaluate_base(model, cfg, tok)
    return info


SR_JOBS = {
    "s_base": [],
    "s_depth4": ["superres.depth=4"],
    "s_w192": ["superres.width=192", "superres.mlp_dim=768"],
    "s_d3_lr2": ["superres.depth=3", "superres.lowres_depth=2"],
    "s_x2": ["superres_train.steps=7000"],
}


def run_sr(name, outdir):
    from muse_mini.models.build import build_superres
    from muse_mini.training.superres import _superres_loss
    from muse_mini.models.superres import lowres_condition
    from muse_mini.models.vqgan import psnr
    from muse_mini import viz
    cfg = get_preset("toy", [*RECIPES["full"][2], *SR_JOBS[name]])
    tok, hrtok = load_tokenizer(G / "tok-full-base"), load_tokenizer(G / "tok-full-hr")
    n = cfg.data.num_examples if SCALE == 1 else 2000
    hr, caps, _ = generate(n, seed=0, split="train")
    lo = downsample(hr, 2)
    tokens = encode_images(tok, lo).reshape(n, -1).astype(np.int32)
    hrt = encode_images(hrtok, hr).reshape(n, -1).astype(np.int32)
    lowimg = decode_tokens(tok, tokens)
    text, mask = text_for(caps)
    D = {k: jnp.asarray(v) for k, v in dict(tokens=tokens, hr_tokens=hrt, lowres_images=lowimg, text=text, text_mask=mask).items()}
    tc = cfg.superres_train

    def batch_fn(s):
        i = jnp.asarray(epoch_batch_indices(n, tc.batch_size, tc.seed, s))
        return {k: v[i] for k, v in D.items()}

    model, losses, ttime = train_loop(build_superres(cfg, init_key(tc.seed)), _superres_loss(cfg), tc, batch_fn)
    H, hcaps, _ = generate(500, seed=0, split="holdout")
    L = downsample(H, 2)
    sr_p, bi_p = [], []
    for s in range(0, 500, 100):
        lt = encode_images(tok, L[s:s+100]).reshape(100, -1)
        dec = decode_tokens(tok, lt)
        text, mask = text_for(hcaps[s:s+100])
        ctx = (lowres_condition(model, jnp.asarray(lt), images=dec), jnp.asarray(text), jnp.asarray(mask))
        traj = decode_with_sampler(model, ctx, unconditional_context(ctx), jax.random.key(s), cfg.superres_sampler)
        sr = decode_tokens(hrtok, np.asarray(traj.tokens_BxN))
        sr_p += [psnr(a, b) for a, b in zip(sr, H[s:s+100])]
        bi_p += [psnr(a, b) for a, b in zip(viz.bicubic_upsample(dec, 2), H[s:s+100])]
    return {"train_time": ttime, "losses": losses[-3:], "curve": losses[::8],
            "sr_psnr": float(np.mean(sr_p)), "bicubic_psnr": float(np.mean(bi_p))}


if __name__ == "__main__":
    name, outdir = sys.argv[1], Path(sys.argv[2])
    t0 = time.time()
    try:
        info = run_base(name, outdir) if not name.startswith("s_") else run_sr(name, outdir)
        info["ok"] = True
    except Exception as e:  # keep the sweep going
        import traceback
        info = {"ok": False, "error": traceback.format_exc()[-3000:]}
    info["wall"] = time.time() - t0
    info["device"] = str(jax.devices()[0])
    (outdir / f"{name}.json").write_text(json.dumps(info, indent=1))
    print(name, "done", round(info["wall"]), "s", "ok" if info["ok"] else info["error"][-300:], flush=True)
