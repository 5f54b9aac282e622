#!/usr/bin/env bash
# Wheels that gpu_report.py's aMUSEd rows need on a GPU machine that cannot reach a package index:
# diffusers (the version checked here: AmusedPipeline is deprecated upstream) and the one
# requirement of it such an image tends to lack. Not 0.33.1, the fixtures' reference: beside the
# image's transformers 5 it cannot import AmusedPipeline (FLAX_WEIGHTS_NAME is gone), and 0.42.1's
# UVit2DModel, VQModel and AmusedScheduler do the same maths (the same-weights row checks the logits
# in process). Run here (with network), then carry .whl to the GPU machine and install it there with
# the command docs/gpu.md gives.
#
#   bash benchmarks/device_wheels.sh            # into .whl/ (git-ignored)
#   bash benchmarks/device_wheels.sh DIR 3.11   # another folder, another Python version
set -euo pipefail
dest=${1:-.whl}
py=${2:-3.12}
mkdir -p "$dest"
# Pure-Python wheels: one file serves every platform.
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
  -d "$dest" "diffusers==0.42.1" "importlib_metadata==10.2.0"
ls -1 "$dest"
