#!/bin/bash
# Runs sweep jobs 5 at a time on one GPU; results gathered into $OUT/all.json.
#   (device machine, repo root, gpuwork/ carried)  bash docs/archive/gpu_sweep/run.sh
# JOBS overrides the job list, LIMIT the wall-clock limit in seconds.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false HF_HUB_OFFLINE=1
R=/tmp/res; mkdir -p $R
nvidia-smi --query-gpu=name,memory.total --format=csv > $R/gpu.txt 2>&1
python3 -c "import jax, equinox, optax; print(jax.__version__, equinox.__version__, optax.__version__, jax.devices())" >> $R/gpu.txt 2>&1
cat $R/gpu.txt
JOBS=${JOBS:-"b_base s_base b_cb64 b_factpos s_depth4 b_x2 b_depth2 s_w192 b_cb128 b_w192 s_d3_lr2 b_bs16 b_cb64_factpos b_x4"}
echo $JOBS | tr ' ' '\n' | timeout ${LIMIT:-530} xargs -P ${PARALLEL:-5} -I{} sh -c "python3 docs/archive/gpu_sweep/sweep.py {} $R 2>$R/{}.err | tail -1"
python3 - <<'PY'
import json, glob, os
out = {"gpu": open("/tmp/res/gpu.txt").read()}
for f in sorted(glob.glob("/tmp/res/*.json")):
    out[os.path.basename(f)[:-5]] = json.load(open(f))
for f in sorted(glob.glob("/tmp/res/*.err")):
    name = os.path.basename(f)[:-4]
    if name not in out:
        out[name] = {"ok": False, "stderr_tail": open(f).read()[-2000:]}
json.dump(out, open(os.environ["OUT"] + "/all.json", "w"), indent=1)
print("gathered", len(out) - 1)
PY
