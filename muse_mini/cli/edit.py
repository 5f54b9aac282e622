"""``muse-mini edit``: inpaint, outpaint or edit an image without a mask, with a trained pipeline (§3.3).

``--mode`` is ``inpaint`` with ``--mask``, ``outpaint`` with ``--extend``, else
``mask-free``. The mask's white pixels are regenerated. The output keeps the
input's size; with ``--extend`` it is ``--by`` pixels longer, at the high-res
size when the pipeline has super-res (unless ``--stage base``).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from muse_mini.cli.common import RUN_HELP, add_seed_argument
from muse_mini.config import EditConfig, check_seed

MODES = ("inpaint", "outpaint", "mask-free")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def add_parsers(sub) -> None:
    p = sub.add_parser("edit", help="inpaint, outpaint or mask-free edit an image with a trained pipeline (§3.3)")
    p.add_argument("--run", required=True, help=RUN_HELP)
    p.add_argument("--image", required=True, help="input image (PNG/JPEG) at the base or super-res size")
    p.add_argument("--prompt", required=True, help="what the edited image should show")
    p.add_argument("--out", required=True, help="output image file, e.g. edited.png")
    p.add_argument("--mask", default=None, help="PNG of the image's size; white = regenerate")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="inpaint (needs --mask), outpaint (--extend/--by, or --mask), mask-free (no mask)")
    p.add_argument("--extend", choices=["left", "right", "up", "down"], default=None,
                   help="outpaint past this edge of the frame")
    p.add_argument("--by", type=int, default=None, help="pixels to extend by (of the input's size)")
    p.add_argument("--iterations", type=int, default=None,
                   help="mask-free editing iterations (§3.3.2; default: the run's edit.iterations)")
    p.add_argument("--resample-fraction", type=float, default=None,
                   help="mask-free: fraction of tokens resampled per iteration (default: the run's)")
    p.add_argument("--top-k", type=int, default=None, help="sample each token from its k likeliest codes "
                   "(default: the run's edit.top_k for mask-free, its sampler's otherwise)")
    add_seed_argument(p)
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (default: the run's: "
                   "edit.guidance, constant, for mask-free; the sampler's, rising, otherwise)")
    p.add_argument("--steps", type=int, default=None, help="inpaint/outpaint decoding steps (default: the run's)")
    p.add_argument("--negative-prompt", default=None, help="text to steer away from (§2.7)")
    p.add_argument("--stage", choices=["base", "superres"], default=None,
                   help="base: the base model's size; superres: high-res (default: the input's size)")
    p.add_argument("--paste-back", action="store_true",
                   help="inpaint/outpaint: keep the input's own pixels outside the regenerated area")
    p.set_defaults(func=run)


def _mode(args) -> str:
    mode = args.mode or ("inpaint" if args.mask else "outpaint" if args.extend else "mask-free")
    if mode == "inpaint" and not args.mask:
        raise ValueError("--mask: --mode inpaint needs a mask PNG (white = regenerate)")
    if mode == "outpaint":
        if args.extend and args.mask:
            raise ValueError("--mask, --extend: outpaint either past the frame (--extend, --by) or around a "
                             "kept region (--mask), not both")
        if not args.extend and not args.mask:
            raise ValueError("--extend: --mode outpaint needs --extend DIRECTION --by PIXELS (or a --mask)")
    if args.extend and mode != "outpaint":
        raise ValueError(f"--extend: only --mode outpaint extends the frame, got --mode {mode}")
    if (args.extend is None) != (args.by is None):
        raise ValueError("--by: --extend DIRECTION and --by PIXELS go together")
    if mode == "mask-free" and args.mask:
        raise ValueError("--mask: --mode mask-free takes no mask")
    if mode == "mask-free" and args.paste_back:
        raise ValueError("--paste-back: --mode mask-free regenerates every pixel; paste back needs a mask or --extend")
    return mode


def _edit_settings(args) -> dict:
    """The mask-free settings given as flags, checked as the run's ``edit`` section checks them."""
    given = {"iterations": args.iterations, "resample_fraction": args.resample_fraction, "top_k": args.top_k,
             "guidance": args.guidance}
    settings = {k: v for k, v in given.items() if v is not None}
    EditConfig(**settings)
    return settings


def _check_out(path) -> Path:
    out = Path(path)
    if out.is_dir():
        raise ValueError(f"--out: {out} is a directory; expected an image file path such as {out / 'edited.png'}")
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"--out: expected a file ending in one of {IMAGE_SUFFIXES}, got {out.name!r}")
    if out.parent.exists() and not out.parent.is_dir():
        raise ValueError(f"--out: {out.parent} is a file, not a directory")
    return out


def run(args) -> None:
    mode = _mode(args)
    check_seed("--seed", args.seed)
    out = _check_out(args.out)
    for flag in ("image", "mask"):
        path = getattr(args, flag)
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"--{flag}: no such file {path}")
    try:
        with Image.open(args.image) as img:
            side = img.size[0]
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"--image: {args.image} is not a readable image ({type(e).__name__})") from None
    from muse_mini.editing.inputs import as_masks, check_extend

    settings = _edit_settings(args) if mode == "mask-free" else {}
    if args.extend:
        check_extend(args.extend, args.by, side)
    from muse_mini.amused import load_any  # after the cheap checks: loading JAX models is slow

    pipe = load_any(args.run, require_superres=args.stage == "superres")
    stage = args.stage
    if stage is None and not args.extend:  # the output keeps the input's size
        stage = "base" if side == pipe.tokenizer.image_size else None
    common = {"seed": args.seed, "stage": stage, "negative_prompt": args.negative_prompt}
    sampler = {k: v for k, v in {"steps": args.steps, "guidance": args.guidance, "top_k": args.top_k}.items()
               if v is not None}
    if mode != "mask-free":
        sampler["paste_back"] = args.paste_back
    if mode == "inpaint":
        result = pipe.inpaint(args.image, args.mask, args.prompt, **common, **sampler)
    elif mode == "outpaint" and args.extend:
        result = pipe.outpaint(args.image, args.prompt, extend=args.extend, by=args.by, **common, **sampler)
    elif mode == "outpaint":  # --mask marks what to regenerate, as for inpaint; outpaint keeps the rest
        keep = ~as_masks(args.mask, side)[0]
        result = pipe.outpaint(args.image, args.prompt, keep=keep, **common, **sampler)
    else:
        result = pipe.edit(args.image, args.prompt, **common, **settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(result.images[0]).save(out)
    h, w = result.images.shape[1:3]
    print(f"{mode}: wrote {out} ({w}×{h})")
