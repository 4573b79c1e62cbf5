#!/usr/bin/env bash
# GPU check on a machine with CUDA (run by hand; see bench/gpu_check.py):
#   bench/gpu_check.sh                 # 10M-events aws-hrnn FULL + the batch figure, on cuda
#   DEVICE=cpu EVENTS=20000 BATCH_USERS=600 BATCH_ITEMS=300 BATCH_LINES=2000 bench/gpu_check.sh   # smoke test
# Uses the machine's python3 (with torch) and the repository on PYTHONPATH; pandas 3 comes
# from a wheel in .whl/ when the machine's pandas is older. Results: $OUT/gpu_check.json.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys, pandas; sys.exit(int(pandas.__version__.split(".")[0]) < 3)' 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/pandas-*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" -c 'import torch, numpy, pandas, pyarrow; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "numpy", numpy.__version__, "pandas", pandas.__version__, "pyarrow", pyarrow.__version__)'
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
"$PY" bench/gpu_check.py --device "${DEVICE:-cuda}" --events "${EVENTS:-10000000}" --batch-users "${BATCH_USERS:-33333}" \
  --batch-items "${BATCH_ITEMS:-10000}" --batch-lines "${BATCH_LINES:-200000}" --stages "${STAGES:-batch,full}" --out "$OUT/gpu_check.json"
cat "$OUT/gpu_check.json"
