"""``muse-mini export``: a trained run as a pretrained folder that ``Pipeline.from_pretrained`` and the
commands' ``--run`` load (safetensors and a config per stage, a model card)."""

from __future__ import annotations

from pathlib import Path

def add_parsers(sub) -> None:
    p = sub.add_parser("export", help="write a trained run's models as a pretrained folder with a model card")
    p.add_argument("--run", required=True, help="pipeline run directory, e.g. runs/demo")
    p.add_argument("--out", required=True, help="new folder for model_index.json, README.md and one folder per stage")
    p.add_argument("--report", default=None, help="report.json of `muse-mini evaluate` to put on the card")
    p.add_argument("--name", default=None, help="the name the card's example loads (default: the --out folder)")
    p.add_argument("--recipe", default=None, help="how the run was trained, for the card (e.g. 'full, seed 0')")
    p.add_argument("--commit", default=None, help="the muse_mini commit that trained the run, for the card")
    p.add_argument("--machine", default=None, help="the machine that trained the run, for the card")
    p.add_argument("--command", default=None, help="the command that trained the run, for the card")
    p.add_argument("--notes", default=None, help="a paragraph for the card's Notes section (limitations, caveats)")
    p.set_defaults(func=run)


def run(args) -> None:
    if not Path(args.run).is_dir():
        raise FileNotFoundError(f"--run: no such directory {args.run}")
    from muse_mini.runs.export import export_pipeline

    provenance = {k: v for k, v in {"name": args.name or args.out, "recipe": args.recipe, "commit": args.commit,
                                    "machine": args.machine, "command": args.command,
                                    "notes": args.notes}.items() if v}
    out = export_pipeline(args.run, args.out, report=args.report, provenance=provenance)
    print(f"wrote {out} (load it with Pipeline.from_pretrained({str(out)!r}) or --run {out})")
