"""The documentation matches the repository: paths it names exist, settings it must list are listed."""

import itertools
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATH_RE = re.compile(r"(?<![\w/.])((?:docs|scripts|notebooks|benchmarks|muse_mini|tests)/[\w./{},*-]*[\w}*])")
CURRENT_DOCS = [ROOT / "README.md", ROOT / "scripts" / "README.md", ROOT / "docs" / "archive" / "README.md",
                *sorted((ROOT / "docs").glob("*.md"))]


def _expand(path: str) -> list[str]:
    """``a/{b,c}.png`` -> ``a/b.png``, ``a/c.png``."""
    parts = re.split(r"\{([^}]*)\}", path)
    choices = [p.split(",") if i % 2 else [p] for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def _exists(path: str) -> bool:
    return any(any(ROOT.glob(p)) if "*" in p else (ROOT / p).exists() for p in _expand(path))


def named_paths(text: str) -> list[str]:
    """Repository paths a text names; ``docs/_build/...`` is what ``make docs`` writes, not a file of the repo."""
    return [m.rstrip(".") for m in PATH_RE.findall(text) if not m.startswith("docs/_build")]


def test_path_finder_reads_braces_globs_and_sentence_ends():
    assert named_paths("see `docs/a_{x,y}.png`, and docs/results.md.") == ["docs/a_{x,y}.png", "docs/results.md"]
    assert named_paths("built into `docs/_build/smoke/html`") == []
    assert _expand("docs/a_{x,y}.png") == ["docs/a_x.png", "docs/a_y.png"]
    assert not _exists("docs/no-such-file.md") and _exists("docs/recipe_seeds_*.json")


def test_every_path_the_current_docs_name_exists():
    missing = [f"{doc.relative_to(ROOT)}: {p}" for doc in CURRENT_DOCS
               for p in named_paths(doc.read_text()) if not _exists(p)]
    assert not missing, "\n".join(missing)


def test_every_module_the_docs_name_by_its_package_path_exists():
    """``decoding/sampler.py`` in a table means ``muse_mini/decoding/sampler.py``."""
    missing = [f"{doc.relative_to(ROOT)}: {p}" for doc in CURRENT_DOCS
               for p in re.findall(r"`((?:[a-z_]+/)+[a-z_0-9]+\.py)`", doc.read_text())
               if not (ROOT / p).exists() and not (ROOT / "muse_mini" / p).exists()]
    assert not missing, "\n".join(missing)


def test_every_environment_variable_the_package_reads_is_in_the_readme():
    read = {name for path in (ROOT / "muse_mini").rglob("*.py")
            for name in re.findall(r"\b(MUSE_[A-Z_]+)\b", path.read_text())}
    assert {"MUSE_MINI_RUNS", "MUSE_MINI_SMOKE"} <= read
    readme = (ROOT / "README.md").read_text()
    assert not [name for name in sorted(read) if name not in readme]


def test_scripts_readme_lists_every_script():
    listed = (ROOT / "scripts" / "README.md").read_text()
    assert not [p.name for p in (ROOT / "scripts").glob("*.py") if f"`{p.name}`" not in listed]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_anchor_a_link_names_is_a_heading_of_its_page():
    assert _slug("Full recipe (`muse-mini demo --recipe full`)") == "full-recipe-muse-mini-demo---recipe-full"
    broken = []
    for doc in CURRENT_DOCS:
        for target, anchor in re.findall(r"\]\(([^)#\s]+\.md)#([^)\s]+)\)", doc.read_text()):
            page = (doc.parent / target).read_text()
            if anchor not in {_slug(h) for h in re.findall(r"^#+ (.*)$", page, re.M)}:
                broken.append(f"{doc.relative_to(ROOT)}: {target}#{anchor}")
    assert not broken, broken


def test_the_package_map_names_every_subpackage_and_module():
    import muse_mini

    names = {p.stem if p.is_file() else p.name for p in (ROOT / "muse_mini").iterdir()
             if (p.suffix == ".py" and not p.name.startswith("__")) or (p / "__init__.py").is_file()}
    assert {"decoding", "parallel", "editing", "evaluation", "planner"} <= names
    assert not [n for n in sorted(names) if f"``{n}``" not in muse_mini.__doc__]


def test_every_file_a_command_help_names_exists():
    from muse_mini.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    helps = {name: p.format_help() for name, p in sub.choices.items()}
    assert "docs/shapes.md" in helps["shapes"]
    missing = [f"muse-mini {name}: {path}" for name, text in helps.items()
               for path in re.findall(r"[\w.-]+/[\w./-]*\w\.(?:md|py|json|eqx)\b", text) if not _exists(path)]
    assert not missing, missing
