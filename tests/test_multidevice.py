"""Runs tests/multidevice/ in a pytest process of its own with 8 simulated CPU devices.

JAX fixes its device count when it starts, and this process runs on one CPU
device, so the mesh tests (sharded = single-device steps, Orbax kill and
resume across mesh shapes, two processes = one) need a fresh interpreter.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.slow
def test_multidevice_suite(tmp_path):
    env = {**os.environ, "MUSE_MULTIDEVICE": "1", "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                          f"--basetemp={tmp_path / 'mesh'}", str(HERE / "multidevice")],
                         env=env, capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
