"""``muse-mini sample``: text → images from a trained pipeline directory (§2)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from muse_mini.pipeline import Pipeline


def add_parsers(sub) -> None:
    p = sub.add_parser("sample", help="generate images for prompts from a trained pipeline")
    p.add_argument("--run", required=True, help="pipeline directory, e.g. runs/demo")
    p.add_argument("--prompts", required=True, help="text file, one prompt per line")
    p.add_argument("--out", required=True, help="output directory for PNGs")
    p.add_argument("--num-per-prompt", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--guidance-schedule", choices=["constant", "linear"], default=None)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--stage", choices=["base", "superres"], default=None,
                   help="base: 32x32 base output; superres (default when trained): 64x64")
    p.set_defaults(func=run)


def run(args) -> None:
    path = Path(args.prompts)
    if not path.is_file():
        raise FileNotFoundError(f"--prompts: no such file {path}")
    prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"--prompts: {path} holds no prompts (one per line expected)")
    overrides = {k: v for k, v in {
        "steps": args.steps, "guidance": args.guidance,
        "guidance_schedule": args.guidance_schedule, "temperature": args.temperature,
    }.items() if v is not None}
    pipe = Pipeline.from_run(args.run, require_superres=args.stage == "superres")
    gen = pipe.generate(prompts, num_per_prompt=args.num_per_prompt, seed=args.seed,
                        stage=args.stage, negative_prompt=args.negative_prompt, **overrides)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(len(prompts)):
        for j in range(args.num_per_prompt):
            Image.fromarray(gen.images[i * args.num_per_prompt + j]).save(out / f"{i:04d}_{j}.png")
    print(f"wrote {len(gen.images)} images to {out}")
