"""The notebook widgets respond in JupyterLab, driven in headless Chromium as a learner would.

One JupyterLab server (no token, a free local port) runs on a copy of ``notebooks/``; each test opens a
notebook, runs all its cells from the Run menu and then works its widgets. Notebooks run in smoke mode
(``MUSE_MINI_SMOKE=1``): it shrinks only the sweeps and training cells, not the widgets, and keeps the
file within a few minutes on a 2-core CPU. A widget whose state never reaches the page (a blank
MaskPainter board, a slider that moves but leaves its image) passes every headless test; only a
browser sees it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests._browser import Recorder, browser, evidence_on_failure, free_port  # noqa: F401  (browser: a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
JUPYTER = Path(sys.executable).with_name("jupyter")
START_TIMEOUT_S = 90
RUN_ALL_TIMEOUT_S = 360
REPLY_TIMEOUT_S = 30  # a slider or a click: the kernel draws one figure
GENERATE_TIMEOUT_S = 120  # a new prompt: one generation, possibly compiling
PRESSED_RGB = "rgb(255, 79, 163)"  # muse_mini.viz.edit_widgets.PRESSED_COLOUR
# Lab settings for a reproducible page: every cell attached to the DOM (the default windowing detaches
# off-screen cells and their widgets), and no news or update checks (requests to the internet, toasts).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}


class Lab:
    def __init__(self, url: str, log: Path):
        self.url, self.log = url, log

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _lab_env(tmp: Path) -> dict:
    config = tmp / "jupyter-config"
    for name, settings in LAB_SETTINGS.items():
        path = config / "lab" / "user-settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(config), JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
               MUSE_MINI_SCRATCH=str(tmp / "scratch"), MUSE_MINI_RUNS=str(tmp / "runs"), MUSE_MINI_SMOKE="1",
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env.pop("MPLBACKEND", None)  # figures drawn inline, as a learner sees them
    return env


def _wait_until_up(process, lab: Lab) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"jupyter lab exited with {process.returncode}; log tail:\n{lab.tail()}", pytrace=False)
        try:
            with urllib.request.urlopen(f"{lab.url}/api/status", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"jupyter lab did not answer within {START_TIMEOUT_S} s; log tail:\n{lab.tail()}", pytrace=False)


@pytest.fixture(scope="module")
def lab(browser, tmp_path_factory):  # noqa: F811  (browser first: without Chromium no server starts)
    """A JupyterLab server on a copy of the notebooks, with its own config, workspaces and scratch."""
    tmp = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "notebooks", tmp / "notebooks")
    port = free_port()
    lab = Lab(f"http://127.0.0.1:{port}", tmp / "lab.log")
    command = [str(JUPYTER), "lab", "--no-browser", "--allow-root", f"--port={port}", "--ip=127.0.0.1",
               "--ServerApp.token=", "--ServerApp.password=", f"--ServerApp.root_dir={tmp / 'notebooks'}",
               f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
               # window.jupyterapp: how Galata, JupyterLab's own Playwright suite, reads the kernel and cells
               "--LabApp.expose_app_in_browser=True"]
    with open(lab.log, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=_lab_env(tmp), cwd=tmp)
    try:
        _wait_until_up(process, lab)
        yield lab
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


NOTEBOOK_STATE = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const kernel = panel && panel.sessionContext && panel.sessionContext.session
    && panel.sessionContext.session.kernel;
  if (!kernel || !panel.content || !panel.content.model) return null;
  const cells = panel.content.model.cells, errors = [];
  let code = 0, counted = 0;
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== "code") continue;
    code += 1;
    if (cell.executionCount !== null) counted += 1;
    for (let j = 0; j < cell.outputs.length; j++) {
      const out = cell.outputs.get(j).toJSON();
      if (out.output_type === "error") errors.push(`cell ${i}: ${out.ename}: ${out.evalue}`);
    }
  }
  return {status: kernel.status, code, counted, errors};
}"""


def _state(page) -> dict:
    return page.evaluate(NOTEBOOK_STATE) or {"status": None, "code": 0, "counted": 0, "errors": []}


def _wait_for_kernel_idle(page, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while _state(page)["status"] != "idle":
        if time.monotonic() > deadline:
            raise AssertionError(f"the kernel did not become idle within {timeout_s:.0f} s: {_state(page)}")
        time.sleep(0.5)


def _run_all_cells(page, name: str) -> None:
    """Run → Run All Cells, then wait until every code cell has an execution count and the kernel is idle."""
    _wait_for_kernel_idle(page)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    start = time.monotonic()
    state = _state(page)
    while not (state["status"] == "idle" and state["code"] and state["counted"] == state["code"]):
        assert not state["errors"], f"{name}: a cell raised: {state['errors']}"
        if time.monotonic() - start > RUN_ALL_TIMEOUT_S:
            raise AssertionError(f"{name}: Run All did not finish within {RUN_ALL_TIMEOUT_S} s: {state}")
        time.sleep(1)
        state = _state(page)
    assert not state["errors"], f"{name}: a cell raised: {state['errors']}"


def _assert_page_clean(page, recorder: Recorder, name: str) -> None:
    """No console error, page error, widget that failed to display, or traceback anywhere in the outputs."""
    assert not recorder.errors, f"{name}: the page reported errors: {recorder.errors}"
    broken = page.get_by_text("Error displaying widget").count()
    assert not broken, f"{name}: {broken} output(s) say 'Error displaying widget'"
    tracebacks = page.locator(".jp-OutputArea-output", has_text="Traceback").all_inner_texts()
    assert not tracebacks, f"{name}: traceback in an output: {tracebacks[0][:500]}"


@contextlib.contextmanager
def executed_notebook(browser, lab: Lab, name: str, evidence: Path):  # noqa: F811
    """A page showing notebook ``name`` with every cell run; the page must stay clean through the block."""
    recorder = Recorder(browser)
    page = recorder.page
    page.set_default_timeout(30_000)
    try:
        with evidence_on_failure(page, evidence, lab.log):
            page.goto(f"{lab.url}/lab/tree/{name}?reset")
            page.locator(".jp-Notebook").wait_for(timeout=90_000)
            _run_all_cells(page, name)
            _assert_page_clean(page, recorder, name)
            yield page
            _assert_page_clean(page, recorder, name)
    finally:
        recorder.close()


def code_cell(page, source: str):
    """The notebook's code cell whose source contains ``source``."""
    cell = page.locator(".jp-CodeCell").filter(has=page.locator(".jp-InputArea", has_text=source))
    assert cell.count() == 1, f"expected one code cell containing {source!r}, found {cell.count()}"
    cell.scroll_into_view_if_needed()
    return cell


def slider(area, label: str):
    """The slider widget whose description is exactly ``label``."""
    found = area.locator(".widget-slider").filter(
        has=area.page.locator(".widget-label", has_text=re.compile(f"^{re.escape(label)}$")))
    assert found.count() == 1, f"expected one slider labelled {label!r}, found {found.count()}"
    return found


def drag_to(widget, fraction: float) -> None:
    """Drag the slider's handle with the mouse to ``fraction`` of its track."""
    page = widget.page
    handle, track = widget.locator(".noUi-handle"), widget.locator(".noUi-target")
    handle.scroll_into_view_if_needed()
    hbox, tbox = handle.bounding_box(), track.bounding_box()
    y = hbox["y"] + hbox["height"] / 2
    page.mouse.move(hbox["x"] + hbox["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(tbox["x"] + fraction * tbox["width"], y, steps=10)
    page.mouse.up()


def readout(widget) -> str:
    return widget.locator(".widget-readout").inner_text().strip()


def wait_until(check, timeout_s: float, failure):
    """Poll ``check()`` until it is truthy and return it; fail with ``failure()`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        if time.monotonic() > deadline:
            pytest.fail(failure(), pytrace=False)
        time.sleep(0.25)
    return value


def new_picture(image, old_src: str | None, what: str, timeout_s: float = REPLY_TIMEOUT_S) -> str:
    """Wait for the kernel to send the image widget a new, non-empty picture, then for one that decodes; its ``src``.

    A drag sends several values, so a picture can be replaced (its blob URL revoked) while it decodes: the check
    waits for a picture that stays long enough to decode, and fails if none does within ``timeout_s``."""
    wait_until(lambda: image.count() and image.get_attribute("src") not in (None, "", old_src),
               timeout_s, lambda: f"{what}: the image did not change within {timeout_s:.0f} s")

    def decoded():
        src = image.get_attribute("src")
        width = image.evaluate("img => img.decode().then(() => img.naturalWidth, () => 0)")
        return src if width > 0 and image.get_attribute("src") == src else None

    return wait_until(decoded, timeout_s, lambda: f"{what}: the new image does not decode")


def background(locator) -> str:
    return locator.evaluate("el => getComputedStyle(el).backgroundColor")


def test_decoding_viewer_and_prompt_explorer_respond(browser, lab, tmp_path):  # noqa: F811
    """Notebook 03: the step slider changes the picture (§2.8's trajectory); Enter in the prompt box generates."""
    with executed_notebook(browser, lab, "03_decoding.ipynb", tmp_path) as page:
        viewer = code_cell(page, "DecodingViewer(frames")
        step, image = slider(viewer, "step"), viewer.locator(".widget-image")
        last, src = readout(step), image.get_attribute("src")
        drag_to(step, 0.25)
        # The "step k/T" title is drawn inside the picture; the readout is the k the slider sent.
        assert 1 <= int(readout(step)) < int(last), f"dragging the step slider from {last} left it at {readout(step)}"
        new_picture(image, src, f"DecodingViewer dragged from step {last} to {readout(step)}")

        explorer = code_cell(page, "PromptExplorer(generate_fn")
        box = explorer.locator(".widget-text").filter(has=page.locator(".widget-label", has_text="prompt"))
        picture = explorer.locator(".widget-image")
        assert picture.count() == 0, "PromptExplorer shows an image before anything was generated"
        src = None
        for prompt in ("a red circle", "a blue square above a green triangle"):
            box.locator("input").fill(prompt)
            box.locator("input").press("Enter")
            labels = explorer.locator(".widget-label")
            status = wait_until(
                lambda: next((t for t in labels.all_inner_texts() if t.startswith((f"{prompt!r}:", "error:"))), None),
                GENERATE_TIMEOUT_S, lambda: f"PromptExplorer: no result for {prompt!r}: {labels.all_inner_texts()}")
            assert status.startswith(f"{prompt!r}: guidance"), f"PromptExplorer after {prompt!r}: {status}"
            src = new_picture(picture, src, f"PromptExplorer after {prompt!r}")


def test_mask_painter_and_edit_viewer_respond(browser, lab, tmp_path):  # noqa: F811
    """Notebook 05: the painter's cells carry the image's colours and a click marks one (§3.3); the edit slider works."""
    with executed_notebook(browser, lab, "05_editing.ipynb", tmp_path) as page:
        painter = code_cell(page, "MaskPainter(image, grid)")
        cells = painter.locator(".widget-gridbox button")
        assert cells.count() > 1, "the MaskPainter board has no cells"
        colours = set(cells.evaluate_all("bs => bs.map(b => getComputedStyle(b).backgroundColor)")) - {PRESSED_RGB}
        assert len(colours) > 2, f"the MaskPainter board is not coloured like the image: {sorted(colours)}"
        cells.filter(has_not_text="×").first.evaluate("b => { b.dataset.probe = 'clicked'; }")
        clicked = painter.locator("button[data-probe='clicked']")  # the "×" filter stops matching it once marked
        before = background(clicked)
        clicked.click()
        after = wait_until(lambda: background(clicked) != before and background(clicked), REPLY_TIMEOUT_S,
                           lambda: f"a clicked MaskPainter cell kept its colour {before}")
        assert after == PRESSED_RGB, f"a clicked MaskPainter cell turned {after}, expected {PRESSED_RGB}"

        viewer = code_cell(page, "EditViewer.from_result(edit)")
        iteration, image = slider(viewer, "iteration"), viewer.locator(".widget-image")
        last, src = readout(iteration), image.get_attribute("src")
        drag_to(iteration, 0.1)
        assert int(readout(iteration)) < int(last), f"dragging the iteration slider from {last} left it at " \
                                                    f"{readout(iteration)}"
        new_picture(image, src, f"EditViewer dragged from iteration {last} to {readout(iteration)}")
