"""The documentation site covers the project: every notebook, guide and public module has a page, and the built
site's internal links all land on a page and an anchor that exist.

The source checks read ``docs/`` and need no Sphinx. The built-site checks read ``docs/_build/html`` (``make
docs``) or ``docs/_build/smoke/html`` (``make docs-smoke``, what CI builds first); without either they are
skipped, unless ``MUSE_MINI_REQUIRE_SITE=1``.
"""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGE = ROOT / "muse_mini"


def toctree_entries(page: Path) -> list[str]:
    """The documents a MyST page's ``{toctree}`` blocks list, relative to ``docs/``."""
    entries = []
    for block in re.findall(r"```\{toctree\}\n(.*?)```", page.read_text(), flags=re.S):
        base = page.parent.relative_to(DOCS)
        entries += [str(base / line.strip()) for line in block.splitlines()
                    if line.strip() and not line.strip().startswith(":")]
    return [e.removeprefix("./").removesuffix(".ipynb").removesuffix(".md") for e in entries]


def site_documents() -> set[str]:
    """Every document reachable from the landing page's table of contents."""
    seen, todo = set(), ["index"]
    while todo:
        doc = todo.pop()
        if doc in seen:
            continue
        seen.add(doc)
        page = DOCS / f"{doc}.md"
        if page.exists():
            todo += toctree_entries(page)
    return seen


def public_modules() -> list[str]:
    """``muse_mini`` modules a user imports: not private, not the CLI's per-command modules (the CLI page)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(p.startswith("_") for p in parts) or parts[:2] == ("muse_mini", "cli") or len(parts) == 1:
            continue
        names.append(".".join(parts))
    return names


def documented_modules() -> set[str]:
    return {m for page in (DOCS / "api").glob("*.md") for m in re.findall(r"automodule:: ([\w.]+)", page.read_text())}


def test_every_notebook_has_a_page():
    notebooks = {f"notebooks/{p.stem}" for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert notebooks and notebooks <= site_documents(), sorted(notebooks - site_documents())
    assert (DOCS / "notebooks").resolve() == (ROOT / "notebooks").resolve()  # the site reads the notebooks themselves


def test_every_guide_in_docs_has_a_page():
    guides = {str(p.relative_to(DOCS).with_suffix("")) for p in DOCS.rglob("*.md")
              if "_build" not in p.parts and p.parents[0] != DOCS / "notebooks"}
    assert {"course", "design", "results", "api/index", "cli"} <= guides
    assert guides <= site_documents(), sorted(guides - site_documents())


def test_every_public_module_has_an_api_page_and_every_page_names_a_real_module():
    modules = set(public_modules())
    assert {"muse_mini.pipeline", "muse_mini.config.presets", "muse_mini.decoding.sampler",
            "muse_mini.training.loop", "muse_mini.evaluation.fid"} <= modules
    documented = documented_modules()
    assert modules <= documented, f"modules with no API page: {sorted(modules - documented)}"
    assert documented <= modules | {"muse_mini"}, f"API pages name unknown modules: {sorted(documented - modules)}"
    assert {f"api/{p.stem}" for p in (DOCS / "api").glob("*.md")} <= site_documents()


def test_the_cli_page_is_generated_from_the_parser_that_runs():
    from muse_mini.cli import build_parser

    page = (DOCS / "cli.md").read_text()
    assert ":module: muse_mini.cli" in page and ":func: build_parser" in page
    assert build_parser().prog == re.search(r":prog: (\S+)", page).group(1)


# --- the built site ---------------------------------------------------------------------------------------------

def built_site() -> Path:
    for candidate in (DOCS / "_build" / "html", DOCS / "_build" / "smoke" / "html"):
        if (candidate / "index.html").exists():
            return candidate
    if os.environ.get("MUSE_MINI_REQUIRE_SITE") == "1":
        pytest.fail("no built site: run `make docs-smoke` (or `make docs`) first")
    pytest.skip("no built site: run `make docs-smoke` (or `make docs`) first")


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        for key in ("href", "src"):
            if attrs.get(key) and not (tag == "link" and attrs.get("rel") == "canonical"):
                self.links.append(attrs[key])


def parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(errors="replace"))
    return parser


def broken_links(site: Path) -> list[str]:
    """``page: link`` for each internal link whose file or ``#anchor`` is missing."""
    pages = [p for p in site.rglob("*.html") if "_static" not in p.parts]
    parsed = {p: parse(p) for p in pages}
    broken = []
    for page, links in parsed.items():
        for link in links.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("mailto:", "javascript:")):
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.relative_to(site)}: {link}")
            elif parts.fragment and target.suffix == ".html":
                ids = parsed[target].ids if target in parsed else parse(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{page.relative_to(site)}: {link} (no such anchor)")
    return broken


def test_broken_link_finder_finds_missing_pages_and_anchors(tmp_path):
    (tmp_path / "a.html").write_text('<h1 id="top">A</h1><a href="b.html#there">b</a><a href="a.html#top">a</a>'
                                     '<a href="c.html">c</a><a href="https://example.org/x">out</a>')
    (tmp_path / "b.html").write_text('<h1 id="here">B</h1><img src="missing.png">')
    assert sorted(broken_links(tmp_path)) == ["a.html: b.html#there (no such anchor)", "a.html: c.html",
                                              "b.html: missing.png"]


def test_the_built_site_has_every_page_and_no_broken_internal_link():
    site = built_site()
    for doc in site_documents():
        assert (site / f"{doc}.html").exists(), f"{doc} has no page in {site}"
    api_ids = set().union(*(parse(p).ids for p in (site / "api").glob("*.html")))
    missing = {m for m in public_modules() if f"module-{m}" not in api_ids}
    assert not missing, f"modules whose API page came out empty: {sorted(missing)}"
    assert not broken_links(site), "\n".join(broken_links(site)[:20])


def test_every_notebook_page_shows_its_outputs():
    site = built_site()
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        page = (site / "notebooks" / f"{notebook.stem}.html").read_text()
        assert "cell_output" in page, f"{notebook.name}: the page shows no executed outputs"
        assert "<img" in page, f"{notebook.name}: the page shows no figure"
        assert "Traceback" not in page, f"{notebook.name}: an output holds a traceback"
