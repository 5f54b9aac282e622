"""Shared fixtures: one smoke-sized pipeline per test session."""

import os

import pytest


@pytest.fixture(scope="session")
def smoke_runs(tmp_path_factory):
    """A ``runs/`` directory whose ``smoke/`` holds every toy stage, trained for a few steps.

    The notebooks (in smoke mode) and the pipeline tests share it, so the
    pipeline is trained once per session.
    """
    from muse_mini.demo import run_demo
    from muse_mini.notebook import SMOKE_OVERRIDES

    runs = tmp_path_factory.mktemp("runs")
    run_demo("quick", runs / "smoke", progress=False, evaluate=False, overrides=SMOKE_OVERRIDES)
    return runs


# tests/multidevice/ needs 8 simulated devices from start-up: tests/test_multidevice.py
# runs it in its own process.
collect_ignore = [] if os.environ.get("MUSE_MULTIDEVICE") else ["multidevice"]
