"""Generating images from a finished run needs no training code (optax, muse_mini.training)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys
from muse_mini.pipeline import Pipeline
gen = Pipeline.from_run(sys.argv[1]).generate(["a red circle"])
print(json.dumps({
    "shape": list(gen.images.shape),
    "optax": "optax" in sys.modules,
    "training": sorted(m for m in sys.modules if m == "muse_mini.training" or m.startswith("muse_mini.training.")),
}))
"""


def test_generate_from_a_run_imports_no_training_code(smoke_runs):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(smoke_runs / "smoke")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["shape"] == [1, 64, 64, 3]  # it really generated, through super-res
    assert report == {"shape": [1, 64, 64, 3], "optax": False, "training": []}
