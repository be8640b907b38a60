#!/usr/bin/env bash
# What bench/gpu_photos.sh carries to a lent GPU, made here on the CPU before the lease starts
# (git-ignored; a fresh checkout has neither):
#   .whl/              the wheels of hydra-core, omegaconf and antlr4 (the device's Python lacks them;
#                      antlr4 4.9.3 ships only as an sdist, so it is built into a wheel here); in
#                      .whl/optional/ google-crc32c's, built for this Python: TensorBoard's checksums in C
#                      where the device's Python matches (catdog/event_checksums.py), else left out there
#   .gpu/d20k_N.tar    the 20,000 photos as three tars of about 58 MB, one per device call (a call
#                      carries 64 MiB at most); the first holds cat/dog.0-1999, the small step's photos
#   bash bench/gpu_prepare.sh [photos folder]     # default ../shared/data/dogs-vs-cats-200px/train-20k
set -euo pipefail
cd "$(dirname "$0")/.."
PHOTOS=${1:-../shared/data/dogs-vs-cats-200px/train-20k}
PY=${PY:-.venv/bin/python}
[ -d "$PHOTOS" ] || { echo "no photos at $PHOTOS: give the train-20k folder as the first argument" >&2; exit 2; }
# The versions the project runs with here, so the device runs the same ones.
versions=$("$PY" -c "from importlib.metadata import version as v
print(' '.join(f'{p}=={v(p)}' for p in ('hydra-core', 'omegaconf', 'antlr4-python3-runtime')))")
rm -rf .whl && "$PY" -m pip wheel --quiet --no-deps -w .whl $versions
"$PY" -m pip wheel --quiet --no-deps -w .whl/optional "google-crc32c==$("$PY" -c "from importlib.metadata import version; print(version('google-crc32c'))")"
mkdir -p .gpu && rm -f .gpu/d20k_*.tar .gpu/list*
"$PY" - "$PHOTOS" <<'PY'
import os, sys
root = sys.argv[1]
names = sorted(n for n in os.listdir(root) if n.endswith(".jpg"))
small = {f"{c}.{i}.jpg" for c in ("cat", "dog") for i in range(2000)}
ordered = [n for n in names if n in small] + [n for n in names if n not in small]
sizes = [os.path.getsize(os.path.join(root, n)) for n in ordered]
target, lists, done = sum(sizes) / 3, [[], [], []], 0
for name, size in zip(ordered, sizes):  # three runs of the order, of about a third of the bytes each
    lists[min(2, int(done // target))].append(name)
    done += size
for i, chunk in enumerate(lists):
    open(f".gpu/list{i}", "w").write("\n".join(chunk) + "\n")
PY
for i in 0 1 2; do tar -cf .gpu/d20k_$i.tar -C "$PHOTOS" -T .gpu/list$i && rm .gpu/list$i; done
ls -la .whl .gpu
