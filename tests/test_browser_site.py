"""The built documentation site in headless Chromium: every page loads without an error and without the
network, and every notebook page shows its figures.

The site is ``docs/_build/html`` (``make docs``) or else ``docs/_build/smoke/html`` (``make docs-smoke``),
served from a local port. A request to any other host is aborted and fails the test: the site must work
offline. The same checks run first on two tiny hand-made sites, one clean and one broken, so a check that
cannot fail is caught here. ``scripts/install_browser.sh``, which provides the Chromium, is tested at the end.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests._browser import Recorder, browser, free_port, skip_or_fail  # noqa: F401  (browser: a fixture)

ROOT = Path(__file__).resolve().parents[1]
SITES = (ROOT / "docs" / "_build" / "html", ROOT / "docs" / "_build" / "smoke" / "html")
NOT_PAGES = {"_static", "_sources", "_images", "_downloads"}  # assets and copies of the sources
OUTPUT_IMAGES = ".cell_output img"  # myst-nb puts a cell's outputs in div.cell_output
FIGURES = """async (selector) => {
  const images = [...document.querySelectorAll(selector)];
  images.forEach(img => { img.loading = "eager"; });
  await Promise.all(images.map(img => img.decode().catch(() => null)));
  return images.map(img => ({src: img.getAttribute("src"), width: img.naturalWidth}));
}"""


def site_pages(site: Path) -> list[str]:
    """Every HTML page of ``site`` (paths relative to it), leaving out asset folders and hidden ones."""
    return sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html")
                  if not any(part in NOT_PAGES or part.startswith(".") for part in p.relative_to(site).parts))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def served(site: Path):
    """``site`` on a free local port, in a thread; the origin (``http://127.0.0.1:PORT``)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()),
                                             functools.partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _settle(recorder: Recorder, timeout_s: float = 5.0) -> None:
    """Wait until no request is in flight (what the page fetches after ``load``), without networkidle's 500 ms."""
    deadline = time.monotonic() + timeout_s
    while recorder.in_flight and time.monotonic() < deadline:
        recorder.page.wait_for_timeout(25)


def visit(browser, site: Path) -> dict[str, dict]:  # noqa: F811
    """Load every page of ``site``, each as a first visit (its local storage emptied before its scripts run);
    per page, its errors, its requests to other hosts and the images in its outputs."""
    reports = {}
    with served(site) as origin:
        recorder = Recorder(browser, only_origin=origin)
        recorder.context.add_init_script("try { localStorage.clear(); sessionStorage.clear(); } catch (e) {}")
        try:
            for name in site_pages(site):
                recorder.page.goto(f"{origin}/{name}", wait_until="load")
                _settle(recorder)
                figures = recorder.page.evaluate(FIGURES, OUTPUT_IMAGES)
                errors, outside = recorder.take()
                reports[name] = {"errors": errors, "outside": outside, "figures": figures}
        finally:
            recorder.close()
    return reports


def problems(reports: dict[str, dict]) -> dict[str, list[str]]:
    """What is wrong, by kind: errors (each message once, with the pages that showed it), requests off the
    site, notebook pages without their figures."""
    found = {"errors": [], "outside": [], "figures": []}
    pages_by_error: dict[str, list[str]] = {}
    for name, report in reports.items():
        for error in report["errors"]:
            pages_by_error.setdefault(error, []).append(name)
        found["outside"] += [f"{name}: {url}" for url in report["outside"]]
        if name.startswith("notebooks/"):
            figures = report["figures"]
            if not figures:
                found["figures"].append(f"{name}: no image in any output")
            found["figures"] += [f"{name}: {f['src']} does not load" for f in figures if not f["width"]]
    for error, pages in pages_by_error.items():
        more = f" and {len(pages) - 3} more" if len(pages) > 3 else ""
        found["errors"].append(f"{', '.join(pages[:3])}{more}: {error}")
    return found


@pytest.fixture(scope="module")
def site_problems(browser):  # noqa: F811
    site = next((s for s in SITES if (s / "index.html").exists()), None)
    if site is None:
        skip_or_fail(f"no built site in {' or '.join(str(s.relative_to(ROOT)) for s in SITES)}: "
                     f"run make docs-smoke first")
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    missing = [n for n in notebooks if not (site / "notebooks" / f"{n}.html").exists()]
    assert not missing, f"{site}: no page for notebooks {missing}"
    return problems(visit(browser, site))


@pytest.mark.browser
def test_every_page_loads_without_console_or_page_errors(site_problems):
    assert not site_problems["errors"], "\n".join(site_problems["errors"][:30])


@pytest.mark.browser
def test_no_page_requests_another_host(site_problems):
    assert not site_problems["outside"], "the site must work offline:\n" + "\n".join(site_problems["outside"][:30])


@pytest.mark.browser
def test_every_notebook_page_shows_its_figures(site_problems):
    assert not site_problems["figures"], "\n".join(site_problems["figures"][:30])


# --- the checks themselves, on hand-made sites -------------------------------------------------------------

# A 1x1 PNG.
PIXEL = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def _write(site: Path, pages: dict[str, str]) -> Path:
    for name, body in pages.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(f"<!doctype html><html><head><title>t</title></head><body>{body}</body></html>")
    (site / "_images").mkdir(exist_ok=True)
    (site / "_images" / "fig.png").write_bytes(PIXEL)
    return site


FIRST_VISIT = "<script>if (localStorage.getItem('seen')) console.error('seen'); localStorage.setItem('seen', 1)</script>"


@pytest.mark.browser
def test_a_clean_site_has_no_problems(browser, tmp_path):  # noqa: F811
    site = _write(tmp_path, {"index.html": f"{FIRST_VISIT}<a href='notebooks/a.html'>a</a>",
                             "notebooks/a.html": f"{FIRST_VISIT}<div class='cell_output'><img src='../_images/fig.png'>",
                             "_static/skipped.html": "<script>console.error('not a page')</script>"})
    reports = visit(browser, site)
    assert sorted(reports) == ["index.html", "notebooks/a.html"]
    assert reports["notebooks/a.html"]["figures"] == [{"src": "../_images/fig.png", "width": 1}]
    assert problems(reports) == {"errors": [], "outside": [], "figures": []}


@pytest.mark.browser
def test_a_broken_site_shows_every_kind_of_problem(browser, tmp_path):  # noqa: F811
    site = _write(tmp_path, {
        "index.html": "<script src='_static/boom.js'></script>",
        "again.html": "<script src='_static/boom.js'></script>",
        "thrown.html": "<script>throw new Error('uncaught')</script>",
        "cdn.html": "<script src='https://cdn.example.invalid/lib.js'></script>",
        "notebooks/none.html": "<div class='cell_output'><pre>text only</pre></div><img src='../_images/fig.png'>",
        "notebooks/broken.html": "<div class='cell_output'><img src='../_images/missing.png'></div>",
    })
    (site / "_static").mkdir()
    (site / "_static" / "boom.js").write_text("console.error('boom');")
    found = problems(visit(browser, site))
    boom = [e for e in found["errors"] if "boom" in e]
    assert len(boom) == 1 and boom[0].startswith("again.html, index.html: console error: boom (at "), found["errors"]
    assert any(e.startswith("thrown.html: page error:") and "uncaught" in e for e in found["errors"]), found["errors"]
    assert found["outside"] == ["cdn.html: https://cdn.example.invalid/lib.js"]
    assert "notebooks/none.html: no image in any output" in found["figures"]
    assert "notebooks/broken.html: ../_images/missing.png does not load" in found["figures"]


# --- scripts/install_browser.sh ----------------------------------------------------------------------------

INSTALL = ROOT / "scripts" / "install_browser.sh"
FAKE_APT = """#!/bin/bash
echo "$*" >> "{log}"
if [[ "$1" == install ]]; then
  for name in {installs}; do [[ " $* " == *" $name "* ]] && printf '#!/bin/sh\\n' > "{bin}/$name" && /bin/chmod +x "{bin}/$name" && exit 0; done
  exit 100
fi
"""


def _install(tmp_path: Path, installs: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the script with only a fake apt-get on PATH (installing ``installs``, names it can provide)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if installs is not None:
        apt = bin_dir / "apt-get"
        apt.write_text(FAKE_APT.format(log=tmp_path / "apt.log", installs=installs, bin=bin_dir))
        apt.chmod(0o755)
    env = {"PATH": str(bin_dir), **(env or {})}
    return subprocess.run(["/bin/bash", str(INSTALL)], env=env, capture_output=True, text=True, timeout=60)


def test_install_browser_finds_the_chromium_named_by_the_variable(tmp_path):
    chromium = tmp_path / "my-chromium"
    chromium.write_text("#!/bin/sh\n")
    chromium.chmod(0o755)
    done = _install(tmp_path, env={"MUSE_MINI_CHROMIUM": str(chromium)})
    assert (done.returncode, done.stdout.strip()) == (0, str(chromium)), done.stderr
    assert not (tmp_path / "apt.log").exists()
    done = _install(tmp_path, env={"MUSE_MINI_CHROMIUM": str(tmp_path / "absent")})
    assert done.returncode == 1 and "MUSE_MINI_CHROMIUM: expected an executable Chromium" in done.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the script installs with apt-get only as root")
@pytest.mark.parametrize("installs", ["chromium", "chromium-browser"])
def test_install_browser_installs_with_apt_as_root(tmp_path, installs):
    done = _install(tmp_path, installs=installs)
    assert (done.returncode, done.stdout.strip()) == (0, str(tmp_path / "bin" / installs)), done.stderr
    log = (tmp_path / "apt.log").read_text().splitlines()
    assert log[0] == "update -qq" and log[1] == "install -y -qq --no-install-recommends chromium"


def test_install_browser_says_how_without_apt(tmp_path):
    done = _install(tmp_path, installs=None)
    assert done.returncode == 1 and done.stdout == ""
    assert "no Chromium found" in done.stderr and "MUSE_MINI_CHROMIUM" in done.stderr
