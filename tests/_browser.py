"""Headless Chromium driven by Playwright, for the tests marked ``browser``.

Chromium comes from the OS (``scripts/install_browser.sh``) and Playwright from PyPI; Playwright is
pointed at that Chromium with ``executable_path`` and never downloads a browser. Without either, the
tests skip, unless ``MUSE_MINI_REQUIRE_BROWSER=1`` (CI), where they fail with the reason.

Test modules import the fixture they use: ``from tests._browser import browser  # noqa: F401``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM_ENV = "MUSE_MINI_CHROMIUM"
REQUIRE_ENV = "MUSE_MINI_REQUIRE_BROWSER"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
INSTALL_HINT = "bash scripts/install_browser.sh (Chromium) and pip install -e '.[test]' (playwright)"
# A container has no GPU, a small /dev/shm and often runs as root (no sandbox); nothing may reach the network.
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-default-apps", "--no-first-run")


def chromium_path() -> str | None:
    """The Chromium to drive: ``$MUSE_MINI_CHROMIUM``, else the first of ``CHROMIUM_NAMES`` on PATH, else None."""
    given = os.environ.get(CHROMIUM_ENV)
    if given:
        found = shutil.which(given)
        if found is None:
            raise ValueError(f"{CHROMIUM_ENV}: expected an executable Chromium, got {given!r}")
        return found
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def why_no_browser() -> str | None:
    """What is missing for the browser tests, in one line, or None when they can run."""
    try:
        chromium = chromium_path()
    except ValueError as error:
        return str(error)
    if chromium is None:
        return f"no Chromium on PATH ({', '.join(CHROMIUM_NAMES)}) and {CHROMIUM_ENV} unset; install: {INSTALL_HINT}"
    if importlib.util.find_spec("playwright") is None:
        return f"the playwright package is not installed; install: {INSTALL_HINT}"
    return None


def skip_or_fail(reason: str) -> None:
    """Skip with ``reason``, or fail with it when ``MUSE_MINI_REQUIRE_BROWSER=1`` says the tests must run."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: browser tests may not skip)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module (skipped, or failed under ``MUSE_MINI_REQUIRE_BROWSER=1``, if missing).

    Module scope, because each module imports this fixture as its own: a session-scoped one would start a second
    Playwright while the first one's event loop still runs, which Playwright's sync API refuses."""
    missing = why_no_browser()
    if missing:
        skip_or_fail(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path(), args=list(CHROMIUM_ARGS))
        yield chromium
        chromium.close()


class Recorder:
    """A page that records its console errors, uncaught exceptions and requests to any other origin.

    With ``only_origin`` set, a request elsewhere is aborted and listed in ``outside``: the site must
    work offline. Console messages containing one of ``benign`` are not errors.
    """

    def __init__(self, browser, *, only_origin: str | None = None, benign: tuple[str, ...] = (),
                 viewport=(1300, 1000)):
        self.context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.outside: list[str] = []
        self.benign, self.only_origin = benign, only_origin
        self.in_flight = 0  # requests sent and not yet answered
        self.page.on("request", lambda _: self._count(1))
        for done in ("requestfinished", "requestfailed"):
            self.page.on(done, lambda _: self._count(-1))
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        if only_origin:
            self.context.route("**/*", self._route)

    def _count(self, change: int) -> None:
        self.in_flight += change

    def _console(self, message) -> None:
        if message.type == "error" and not any(b in message.text for b in self.benign):
            where = message.location.get("url") or "?"
            self.errors.append(f"console error: {message.text} (at {where})")

    def _route(self, route) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" == self.only_origin:
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def take(self) -> tuple[list[str], list[str]]:
        """The errors and outside requests so far, clearing both (to tell one page's from the next's)."""
        taken = self.errors, self.outside
        self.errors, self.outside = [], []
        return taken

    def close(self) -> None:
        self.context.close()


@contextlib.contextmanager
def evidence_on_failure(page, folder: Path, *logs: Path):
    """On a failure inside the block, save a screenshot (and copy ``logs``) into ``folder``; the message names them."""
    try:
        yield
    except (Exception, pytest.fail.Exception) as failure:
        folder.mkdir(parents=True, exist_ok=True)
        shot = folder / "failure.png"
        try:
            page.screenshot(path=str(shot), full_page=True)
        except Exception as error:  # noqa: BLE001  (a dead page must not hide the real failure)
            shot = f"no screenshot ({type(error).__name__}: {error})"
        kept = [shutil.copy(log, folder / log.name) for log in logs if log.exists()]
        names = ", ".join(str(k) for k in kept) or "none"
        raise AssertionError(f"{failure}\n  screenshot: {shot}\n  logs: {names}") from failure


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
