"""``muse-mini sample``: text → images from a trained pipeline (§2), as ``OUT/{prompt:04d}_{sample}.png``
and ``OUT/index.jsonl`` (one line per image: file, prompt, sample index, seed)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from PIL import Image

from muse_mini.cli.common import RUN_HELP, add_seed_argument, check_out_dir
from muse_mini.config import check_seed
from muse_mini.parallel.mesh import make_mesh, parse_mesh


def add_parsers(sub) -> None:
    p = sub.add_parser("sample", help="generate images for prompts from a trained pipeline")
    p.add_argument("--run", required=True, help=RUN_HELP)
    p.add_argument("--prompts", default=None, help="text file (UTF-8), one prompt per line")
    p.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                   help="a prompt given inline (repeatable; with or instead of --prompts)")
    p.add_argument("--out", required=True, help="output directory for PNGs and index.jsonl")
    p.add_argument("--num-per-prompt", type=int, default=1, help="images per prompt (default 1)")
    add_seed_argument(p)
    p.add_argument("--steps", type=int, default=None, help="base decoding steps (§2.7; default: the run's)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale t (§2.7)")
    p.add_argument("--guidance-schedule", choices=["constant", "linear"], default=None,
                   help="guidance held constant or ramped up over the steps")
    p.add_argument("--temperature", type=float, default=None, help="token sampling temperature")
    p.add_argument("--top-k", type=int, default=None, help="sample each token from its k likeliest codes")
    p.add_argument("--choice-temperature", type=float, default=None,
                   help="noise on the confidences that pick which tokens to keep (MaskGIT)")
    p.add_argument("--choice-anneal", choices=["maskgit", "amused"], default=None,
                   help="how the choice noise falls to 0: MaskGIT's, or aMUSEd's (the default for aMUSEd weights)")
    p.add_argument("--negative-prompt", default=None, help="text to steer away from (§2.7)")
    p.add_argument("--superres-steps", type=int, default=None, help="super-res decoding steps (§2.4)")
    p.add_argument("--superres-guidance", type=float, default=None, help="super-res guidance scale")
    p.add_argument("--superres-temperature", type=float, default=None, help="super-res sampling temperature")
    p.add_argument("--stage", choices=["base", "superres"], default=None,
                   help="base: 32x32 base output; superres (default when trained): 64x64")
    p.add_argument("--ema", action="store_true",
                   help="use the base and super-res offline EMA weights (§3; write them with muse-mini ema)")
    p.add_argument("--mesh", default=None, metavar="AXES",
                   help="split the batch over a device mesh, e.g. data=8 or fsdp=-1 (same tokens as one device)")
    p.set_defaults(func=run)


def read_prompts(args) -> list[str]:
    """The prompts of ``--prompts FILE`` followed by each ``--prompt``."""
    prompts = []
    if args.prompts:
        path = Path(args.prompts)
        if not path.is_file():
            raise FileNotFoundError(f"--prompts: no such file {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"--prompts: {path} is not UTF-8 text ({e})") from None
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
        if not prompts:
            raise ValueError(f"--prompts: {path} holds no prompts (one per line expected)")
    for text in args.prompt:
        if not text.strip():
            raise ValueError("--prompt: expected a non-empty prompt")
        prompts.append(text.strip())
    if not prompts:
        raise ValueError("--prompts/--prompt: expected a prompts file or at least one --prompt TEXT")
    return prompts


def _chosen(pairs: dict) -> dict:
    return {k: v for k, v in pairs.items() if v is not None}


def run(args) -> None:
    prompts = read_prompts(args)
    check_seed("--seed", args.seed)
    out = check_out_dir(args.out)
    mesh_cfg = None if args.mesh is None else parse_mesh(args.mesh)
    from muse_mini.amused import load_any  # after the cheap checks: loading JAX models is slow

    overrides = _chosen({"steps": args.steps, "guidance": args.guidance, "top_k": args.top_k,
                         "guidance_schedule": args.guidance_schedule, "temperature": args.temperature,
                         "choice_temperature": args.choice_temperature, "choice_anneal": args.choice_anneal})
    sr = _chosen({"steps": args.superres_steps, "guidance": args.superres_guidance,
                  "temperature": args.superres_temperature})
    mesh = None if mesh_cfg is None else make_mesh(mesh_cfg)
    pipe = load_any(args.run, require_superres=args.stage == "superres", ema=args.ema, mesh=mesh)
    superres_sampler = dataclasses.replace(pipe.cfg.superres_sampler, **sr) if sr else None
    gen = pipe.generate(prompts, num_per_prompt=args.num_per_prompt, seed=args.seed, stage=args.stage,
                        negative_prompt=args.negative_prompt, superres_sampler=superres_sampler, **overrides)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, prompt in enumerate(prompts):
        for j in range(args.num_per_prompt):
            name = f"{i:04d}_{j}.png"
            Image.fromarray(gen.images[i * args.num_per_prompt + j]).save(out / name)
            lines.append(json.dumps({"file": name, "prompt": prompt, "sample": j, "seed": args.seed}) + "\n")
    (out / "index.jsonl").write_text("".join(lines), encoding="utf-8")
    print(f"wrote {len(gen.images)} images and index.jsonl to {out}")
