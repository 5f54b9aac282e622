"""Serve MathJax from the site itself, so pages with equations render with no network.

The files come from the PyPI package ``sphinx-mathjax-offline`` (MathJax 3), whose own Sphinx hook cannot be
imported (its folder name has hyphens); this extension copies the same files and points Sphinx at them.
"""

from importlib import metadata
from pathlib import Path

from sphinx.util.fileutil import copy_asset

DIST = "sphinx-mathjax-offline"


def mathjax_files() -> Path:
    try:
        folder = Path(metadata.distribution(DIST).locate_file("sphinx-mathjax-offline/static/mathjax"))
    except metadata.PackageNotFoundError:
        raise RuntimeError(f"the docs need the package {DIST}: pip install -e '.[docs]'") from None
    if not (folder / "tex-chtml.js").is_file():
        raise RuntimeError(f"{DIST} is installed but has no MathJax files in {folder}")
    return folder


def copy_mathjax(app, exc):
    if exc is None:
        copy_asset(str(mathjax_files()), str(Path(app.outdir) / "_static" / "mathjax"))


def setup(app):
    mathjax_files()
    app.config.mathjax_path = "mathjax/tex-chtml.js"
    app.connect("build-finished", copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
