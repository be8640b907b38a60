#!/usr/bin/env bash
# Issue 7's recipe comparison on one GPU: several training runs at once on the 4,000 real
# Kaggle photos (../shared/data/dogs-vs-cats-200px/train, or DATA=...), 100 epochs each,
# scored on the held-out validation split at the last epoch. About 4 minutes on one H100.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DATA=${DATA:-../shared/data/dogs-vs-cats-200px/train}
OUT=${RECIPES_OUT:-bench/out/recipes}
# JOBS: recipe:seed pairs (recipes in bench/recipes.py)
read -r -a jobs <<< "${JOBS:-mixup_tta_ema:0 gap_mixup_tta_ema:0 mixup_tta_ema:1 gap_mixup_tta_ema:1 mixup_tta_ema:2 gap_mixup_tta_ema:2}"
"$PYTHON" bench/recipes.py --data "$DATA" --out "$OUT" --parallel "${PARALLEL:-6}" --jobs "${jobs[@]}" -- \
  "trainer=gpu" "callbacks.model_checkpoint=null" "callbacks.last_checkpoint=null" "+trainer.enable_checkpointing=false" "$@"
