"""A Kaggle-shaped JPEG set for speed measurements: flat cat.N.jpg / dog.N.jpg files of
200-500 px a side, 20-30 KB each, like Kaggle's train.zip (the shared 200-px sample is
uniform and small, so it would flatter decoding). Deterministic; reused when present.

    python bench/kaggle_like.py --out bench/out/kaggle-like-8000 --images 8000
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

VERSION = 1


def _photo_like(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Smooth colour fields plus texture: compresses like a photo (about 0.15-0.25 bits/pixel)."""
    coarse = Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    mid = Image.fromarray(rng.integers(0, 256, (height // 24 + 1, width // 24 + 1, 3), dtype=np.uint8))
    mid = mid.resize((width, height), Image.BICUBIC)
    picture = 0.7 * np.asarray(coarse, np.float32) + 0.3 * np.asarray(mid, np.float32)
    # Smaller images need finer texture to weigh 20-30 KB, as real small photos do.
    picture += rng.normal(0, float(np.clip(10 * (160_000 / (width * height)) ** 0.75, 3, 40)), (height, width, 3))
    return Image.fromarray(picture.clip(0, 255).astype(np.uint8))


def _write(job: tuple[str, int, int]) -> int:
    out, index, seed = job
    rng = np.random.default_rng([seed, index])
    width, height = (int(v) for v in rng.integers(200, 501, 2))
    image = _photo_like(rng, width, height)
    name = f"{'cat' if index % 2 == 0 else 'dog'}.{index // 2}.jpg"
    best = None
    for quality in (95, 90, 85, 80, 75, 70, 60, 50, 40):  # the quality closest to 25 KB
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=quality)
        if best is None or abs(buf.tell() - 25_000) < abs(best.tell() - 25_000):
            best = buf
    buf = best
    Path(out, name).write_bytes(buf.getvalue())
    return buf.tell()


def generate(out: str | Path, images: int, seed: int = 0, workers: int | None = None) -> Path:
    out = Path(out)
    params = {"images": images, "seed": seed, "version": VERSION}
    marker = out / "kaggle_like.json"
    if marker.exists() and json.loads(marker.read_text()) == params:
        return out
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with mp.get_context("fork").Pool(workers or os.cpu_count()) as pool:
        sizes = pool.map(_write, [(str(out), i, seed) for i in range(images)], chunksize=64)
    marker.write_text(json.dumps(params))
    print(f"wrote {images} JPEGs ({np.mean(sizes) / 1000:.1f} KB on average) to {out} in {time.perf_counter() - start:.1f} s")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench/out/kaggle-like")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    generate(args.out, args.images, args.seed)
