#!/usr/bin/env bash
# What issues 4 and 7 still need from a GPU, as one script for a short lease on one H100
# (about 9 minutes in all). Each stage has its own time limit, so a slow one cannot starve
# the next; every result lands under $OUT (JSON, logs, and the recipes' TensorBoard logs
# with their Grad-CAM grids).
#
#   STAGES="speed recipes" DATA=../shared/data/dogs-vs-cats-200px/train bash bench/gpu_session.sh
#
# speed    bench/gpu_check.sh: EPOCHS (default 40) over IMAGES (default 25,000) JPEGs, ours stopped
#          after OURS_LIMIT s (default 120) with the epochs it finished; then bench/host_overhead.py
#          (ms/step of a bare loop, a minimal Lightning loop and ours: where host time goes)
# recipes  bench/gpu_recipes.sh on the real photos: JOBS recipe:seed pairs, PARALLEL at once
# DATA may be a folder or a .tar of one (as carried to a machine that has no ../shared).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-bench/out/gpu-session}
STAGES=${STAGES:-speed recipes}
DATA=${DATA:-../shared/data/dogs-vs-cats-200px/train}
mkdir -p "$OUT"
"$PYTHON" -c "import torch; print(torch.cuda.get_device_name(), torch.__version__)" | tee "$OUT/device.txt"

if [[ "$DATA" == *.tar ]]; then
  mkdir -p /tmp/catdog-data && tar -xf "$DATA" -C /tmp/catdog-data
  DATA=$(dirname "$(find /tmp/catdog-data -name 'cat.0.jpg' | head -1)")
fi

for stage in $STAGES; do
  case $stage in
    speed)
      timeout "${CHECK_LIMIT:-270}" env PYTHON="$PYTHON" BENCH_OUT="$OUT/gpu_check" EPOCHS="${EPOCHS:-40}" \
        IMAGES="${IMAGES:-25000}" OURS_LIMIT="${OURS_LIMIT:-120}" bash bench/gpu_check.sh 2>&1 | tail -30 | tee "$OUT/gpu_check.log"
      timeout "${HOST_LIMIT:-200}" "$PYTHON" bench/host_overhead.py --out "$OUT/host_overhead.json" 2>&1 \
        | tail -20 | tee "$OUT/host_overhead.log"
      # JPEGs, caches and checkpoints: too big to bring back
      rm -rf "$OUT"/gpu_check/kaggle-like-* "$OUT"/gpu_check/cache-* "$OUT"/gpu_check/ours-run/checkpoints
      ;;
    recipes)
      timeout "${RECIPES_LIMIT:-300}" env PYTHON="$PYTHON" DATA="$DATA" RECIPES_OUT="$OUT/recipes" \
        bash bench/gpu_recipes.sh 2>&1 | tail -40 | tee "$OUT/recipes.log"
      rm -rf "$OUT"/recipes/cache
      ;;
    *) echo "unknown stage: $stage (speed | recipes)" >&2; exit 2 ;;
  esac
done
