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
# Default: the default recipe (issue 7's best measured) and it with MixUp, flip TTA and EMA, three seeds each.
read -r -a jobs <<< "${JOBS:-defaults:0 mixup_tta_ema:0 defaults:1 mixup_tta_ema:1 defaults:2 mixup_tta_ema:2}"
"$PYTHON" bench/recipes.py --data "$DATA" --out "$OUT" --parallel "${PARALLEL:-6}" --jobs "${jobs[@]}" -- \
  "trainer=gpu" "callbacks.model_checkpoint=null" "callbacks.last_checkpoint=null" "+trainer.enable_checkpointing=false" "$@"
