#!/usr/bin/env bash
# Issue 14's 224 px runs on one lent GPU (session 24, an H200), where the 20,000 photos (160 MB)
# cannot travel in one device call (64 MiB): they go as three tars in .gpu/ (git-ignored), one per
# call, on one warm machine; each call unpacks its tar into /tmp/d20k, which the machine keeps
# while it stays warm (30 s between calls). Make the tars and the hydra wheels first, on the CPU:
#   bash bench/gpu_prepare.sh         # .gpu/d20k_{0,1,2}.tar (~58 MB each; the first holds cat/dog.0-1999,
#                                     # the small step's photos) and .whl/ (hydra-core, omegaconf, antlr4)
# (the headers and the working tree fill the rest of a call's 64 MiB). Then, with each call
# carrying [.whl, .gpu/d20k_N.tar] (the tree travels anyway):
#   STEP=none bash bench/gpu_photos.sh      # unpack only: send the first tars back to back, quickly
#   STEP=small bash bench/gpu_photos.sh     # the small-data command at 224 px on cat/dog.0-1999, 3 seeds at once
#   STEP=full bash bench/gpu_photos.sh      # the default recipe at 224 px, 40 epochs, 16,000 / 4,000, 3 seeds at once
#                                           # (JOBS="recipe:seed ...": bench/recipes.py's recipes instead, all at once;
#                                           # EPOCHS=N: N epochs instead of 40; KEEP=recipe_seedS: that run's last.ckpt
#                                           # comes back too, for its maps on the CPU);
#                                           # then each last.ckpt scored on the held-out 4,000 at eval_zoom 1 and 0.875
#   TEST=1 ...                              # first the GPU-marked tests (pytest -m gpu), 90 s at most
# Results (each run's metrics.csv, the recipes' JSON lines, the logs) come back in $OUT/results_STEP.tgz.
# LIMIT (s) bounds the training; the runs' metrics.csv still come back when it ends them.
set -uo pipefail
export PYTHONUNBUFFERED=1
W=/tmp/gpu_photos
mkdir -p $W /tmp/d20k
if [ ! -d /tmp/site/hydra ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/optional/*.whl 2>/dev/null \
    || echo "google-crc32c's wheel does not fit this Python: TensorBoard checksums in Python here"
fi
export PYTHONPATH=/tmp/site:$PWD/src
for t in .gpu/*.tar; do [ -f "$t" ] && tar -xf "$t" -C /tmp/d20k && rm -f "$t" && echo "unpacked $t"; done
echo "photos in /tmp/d20k: $(ls /tmp/d20k | wc -l)"
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
python3 -c "import torch, lightning; print(torch.__version__, lightning.__version__)"
COMMON=(trainer=gpu logger=many callbacks.model_checkpoint=null)
if [ -n "${TEST:-}" ]; then
  timeout 90 python3 -m pytest -m gpu -q -p no:cacheprovider tests 2>&1 | tail -n 5
fi

pack() {  # metrics.csv of each run, the recipes' JSON lines and logs, flat enough to come back
  (cd $W && find . \( -name metrics.csv -o -name 'recipes*.json*' -o -name '*.log' -o -name 'metrics.json' -o -name result.json \) \
     -not -path '*/cache/*' -print0 | tar -czf "$OUT/results_$STEP.tgz" --null -T -) 2>/dev/null
  ls -la "$OUT"
  python3 - "$W" <<'PY'
import csv, glob, sys
for f in sorted(glob.glob(sys.argv[1] + "/*/*/csv/metrics.csv")):
    rows = list(csv.DictReader(open(f)))
    last = lambda k: next((r[k] for r in reversed(rows) if r.get(k)), None)
    print(f.split("/")[-3], "epoch", last("epoch"), "ips", last("perf/train_images_per_s"),
          "val/acc", last("val/acc"), "val/loss", last("val/loss"))
PY
}

case $STEP in
  small)
    mkdir -p /tmp/d4k
    ln -sf /tmp/d20k/{cat,dog}.{0..1999}.jpg /tmp/d4k/
    echo "photos in /tmp/d4k: $(ls /tmp/d4k | wc -l)"
    timeout "${LIMIT:-200}" python3 bench/recipes.py --data /tmp/d4k --out $W/small224 --parallel 3 \
      --jobs cpu_150_mixup:0 cpu_150_mixup:1 cpu_150_mixup:2 -- "${COMMON[@]}" data.image_size=224 \
      callbacks.last_checkpoint=null +trainer.enable_checkpointing=false 2>&1 | tee $W/small224.log
    pack ;;
  none) ;;
  full)
    [ "$(ls /tmp/d20k | wc -l)" = 20000 ] || { echo "not all 20,000 photos are here"; exit 4; }
    JOBS=(${JOBS:-defaults:0 defaults:1 defaults:2})
    timeout "${LIMIT:-330}" python3 bench/recipes.py --data /tmp/d20k --out $W/full224 --parallel ${#JOBS[@]} \
      --jobs "${JOBS[@]}" -- "${COMMON[@]}" trainer.max_epochs=${EPOCHS:-40} data.image_size=224 2>&1 | tee $W/full224.log
    # without its optimizer state (three times the weights), so that it fits what comes back (16 MiB a file)
    [ -n "${KEEP:-}" ] && python3 -c "import sys, torch; c = torch.load(sys.argv[1], map_location='cpu', weights_only=False)
c.pop('optimizer_states', None); torch.save(c, sys.argv[2])" $W/full224/$KEEP/checkpoints/last.ckpt "$OUT/$KEEP.ckpt"
    python3 bench/val_split.py --data /tmp/d20k --size 224 --cache-dir $W/full224/cache --out /tmp/val20k 2>&1 | tail -2
    for ck in $W/full224/*/checkpoints/last.ckpt; do for z in 1.0 0.875; do  # each run scored whole and on its centre
      r=$(basename $(dirname $(dirname $ck)))
      [ -f $ck ] && (timeout 75 python3 src/eval.py ckpt_path=$ck data.root=/tmp/val20k data.cache_dir=$W/evalcache \
        eval_zoom=$z hydra.run.dir=$W/eval/${r}_z$z > $W/eval_${r}_z$z.log 2>&1) &
    done; done; wait
    tail -n 4 $W/eval_*.log
    pack ;;
esac
