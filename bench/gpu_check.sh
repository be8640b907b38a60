#!/usr/bin/env bash
# Issue 4's GPU targets in one go, on a machine with one CUDA GPU (under 5 minutes on an H100):
# 25,000 Kaggle-shaped JPEGs at 224 px, batch 64; (a) the original pipeline, (c) the compiled
# compute ceiling, and (b) src/train.py trainer=gpu for 40 epochs from an empty cache: its wall
# time (cache build and compilation included) and its steady-state images/s. OURS_LIMIT (s):
# stop (b) then and report the epochs it finished, so a short lease still gets the rate. The
# ceiling takes a one-second turn after each of (b)'s epochs (bench/epoch_gate.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${BENCH_OUT:-bench/out/gpu}
IMAGES=${IMAGES:-25000}
EPOCHS=${EPOCHS:-40}
"$PYTHON" bench/throughput.py --images "$IMAGES" --epochs "$EPOCHS" --original-steps 30 --ceiling-steps 20 --ceiling-round-s 1 --networks default \
  ${OURS_LIMIT:+--ours-limit "$OURS_LIMIT"} --skip cache --out "$OUT" trainer=gpu "$@"
