"""Sphinx configuration of the muse_mini site: ``make docs`` (full) or ``make docs-smoke`` (CI).

The site is built from Markdown (MyST) and from the notebooks, which myst-nb executes with jupyter-cache: a
notebook whose code is unchanged is read from the cache instead of run again. Smoke mode
(``MUSE_MINI_SMOKE=1``) runs the notebooks with their tiny settings and keeps its own cache, so a smoke build
never shows up on a full site. Nothing here reaches the network: no intersphinx, no CDN scripts, MathJax served
from the site itself.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
SMOKE = os.environ.get("MUSE_MINI_SMOKE") == "1"

# The notebooks run on the shipped weights (never a `runs/demo` you trained), with a scratch directory of their own
# so that a model a notebook trains is trained in this build, not read back from an earlier one. Progress bars
# would be dead widgets on a static page; the cells print their own timings.
BUILD = DOCS / "_build" / ("smoke" if SMOKE else "full")
os.environ["MUSE_MINI_RUNS"] = str(BUILD / "no-runs")
BUILD.mkdir(parents=True, exist_ok=True)
SCRATCH = Path(tempfile.mkdtemp(prefix="scratch-", dir=BUILD))  # one per build, so two builds never share one
os.environ["MUSE_MINI_SCRATCH"] = str(SCRATCH)
os.environ["TQDM_DISABLE"] = "1"

project = "muse_mini"
author = "the muse_mini developers"
copyright = "2026, the muse_mini developers"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "sphinxarg.ext",
    "offline_math",
]

root_doc = "index"
exclude_patterns = [
    "_build", "**/.ipynb_checkpoints", "notebooks/solutions", "**/evaluate/samples", "Thumbs.db", ".DS_Store",
]
# The docs folder also holds measured results (JSON, raw figures) that are not pages.
suppress_warnings = []

# Every warning is an error (`-W` in the Makefile); links between pages are checked by MyST.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 4  # GitHub's slugs, so the README's `docs/results.md#time-budget` links resolve

# Notebooks: executed once, cached by their code. The cells print their own timings.
nb_execution_mode = "cache"
nb_execution_cache_path = str(BUILD / "jupyter_cache")
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
# The site is static: a widget shows the picture it was displaying (its image/png), not a dead placeholder that
# would fetch the widget manager from a CDN.
nb_ipywidgets_js = {}
nb_mime_priority_overrides = [
    ("html", "application/vnd.jupyter.widget-view+json", None),
    ("html", "application/vnd.jupyter.widget-state+json", None),
]

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_mock_imports = ["torch", "torchvision", "pytorch_fid", "open_clip"]

# Every cross-reference must resolve (a broken one fails the `-W` build). Types from other packages cannot:
# the build is offline, so there is no intersphinx inventory to link them to. jaxtyping's shape strings
# ('B N', '*B N V') are read as class names, and Sphinx leaves the short `Path`/`Mesh` of a class's
# constructor annotations unqualified.
nitpicky = True
nitpick_ignore_regex = [
    ("py:.*", r"(numpy|jax|jaxlib|jaxtyping|equinox|optax|datasets|PIL|matplotlib|ipywidgets)(\..+)?"),
    ("py:.*", r"(pathlib|os|collections\.abc|dataclasses|tarfile)(\..+)?"),
    ("py:class", r".*'.*"),
    ("py:class", r"Path|Mesh"),
]

html_theme = "sphinx_book_theme"
html_title = "muse_mini"
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": True,
    "navigation_with_keys": False,
}
# An explicit mode: with none stored, the theme logs "invalid theme mode" as a console error on every page.
html_context = {"default_mode": "light"}
html_static_path = []
html_last_updated_fmt = None


# The README is the landing page (docs/index.md includes it). Its links into docs/ are rewritten by the include's
# `relative-docs`; the few that point at files elsewhere in the repository go to the page that shows them.
README_LINKS = {"](muse_mini/pretrained/shapes/README.md)": "](model_card.md)"}


def _readme_links(app, relative_path, parent_docname, content):
    if relative_path.name == "README.md" and parent_docname == "index":
        for old, new in README_LINKS.items():
            content[0] = content[0].replace(old, new)


def _remove_scratch(app, exc):
    shutil.rmtree(SCRATCH, ignore_errors=True)


def setup(app):
    app.connect("include-read", _readme_links)
    app.connect("build-finished", _remove_scratch)
