"""A built-in, labelled cats-vs-dogs data set of real JPEG files, so the demo and tests need no download.

Files come in the Kaggle "Dogs vs. Cats" flat layout (``cat.0.jpg``, ``dog.0.jpg``, ...) with a
``boxes.csv`` giving each animal head's bounding box (ears included), so Grad-CAM can be scored.

Each image is a cluttered background (smooth gradient plus ellipses, rectangles and lines, never
triangles) with one outlined cartoon head on top, with the same eyes and nose for both classes.
Position, size and colours are drawn from the same distributions for both classes; only the ears
differ: a cat has two pointed triangles on top, a dog two long ellipses drooping down the sides.
So the class is in the shape of the ears and nowhere else (a classifier on mean colour is at chance).

Every image has its own generator seeded from (seed, class, index): the same seed gives
byte-identical files, and a small run is a prefix of a larger one.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageStat

from catdog.atomic_write import write_atomic
from catdog.data.boxes import BOX_HEADER
from catdog.errors import UserError

CLASSES = ("cat", "dog")
VERSION = 2  # bump whenever the drawing changes, so cached data sets are regenerated
SUPERSAMPLE = 3  # draw at 3x and downsample with LANCZOS: anti-aliased edges
HEAD_DIAMETER = (0.30, 0.55)  # of the image side
# Extent of head + ears around the head centre, in head radii, taken over BOTH classes so the
# head's position distribution does not depend on the class.
EXTENT_SIDE, EXTENT_TOP, EXTENT_BOTTOM = 1.45, 1.75, 1.2
BASE_ANGLES = (math.radians(8), math.radians(68))  # a cat ear's base on the head circle, from vertical
MIN_CONTRAST = 100.0  # RGB distance between head colour and the background it covers
NOISE_SIGMA = 4.0


def generate(
    out_dir: str | os.PathLike, n_per_class: int = 1000, size: int = 96, seed: int = 0, quality: int = 90
) -> Path:
    """Write ``n_per_class`` cats and dogs plus ``boxes.csv`` into ``out_dir``; return ``out_dir``.

    Does nothing if ``out_dir`` already holds a complete set made with the same parameters.
    """
    out = Path(out_dir)
    params = _params(n_per_class, size, seed, quality)
    if is_complete(out, params):
        return out
    _prepare(out, n_per_class)
    (out / "synthetic.json").write_text(json.dumps(params) + "\n")
    jobs = [(label, index) for label in range(len(CLASSES)) for index in range(n_per_class)]
    # Threads, not processes: Pillow and NumPy release the GIL for the heavy parts, and threads are
    # safe to start from inside a training process that already runs torch's thread pools.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        rows = list(pool.map(lambda job: _write_image(out, *job, size, seed, quality), jobs))
    _write_boxes(out, rows)
    return out


def is_complete(out_dir: str | os.PathLike, params: dict) -> bool:
    """True if ``out_dir`` holds a finished set made with ``params`` (boxes.csv is written last)."""
    out = Path(out_dir)
    try:
        stored = json.loads((out / "synthetic.json").read_text())
    except (OSError, ValueError):
        return False
    return stored == params and (out / "boxes.csv").is_file()


def _params(n_per_class: int, size: int, seed: int, quality: int) -> dict:
    if n_per_class < 1:
        raise UserError(f"n_per_class={n_per_class} must be at least 1")
    if size < 16:
        raise UserError(f"size={size} must be at least 16 pixels")
    if not 1 <= quality <= 100:
        raise UserError(f"quality={quality} must be between 1 and 100")
    return {"n_per_class": n_per_class, "size": size, "seed": seed, "quality": quality, "version": VERSION}


def _prepare(out: Path, n_per_class: int) -> None:
    """Invalidate any previous set before writing, so an interrupted run is never taken as complete."""
    out.mkdir(parents=True, exist_ok=True)
    ours = (out / "synthetic.json").exists()
    if not ours and any(out.glob("*.jpg")):
        # Never mix with (or overwrite) someone's real photos.
        raise UserError(f"{out} already holds JPEG files that this generator did not write; pick an empty folder")
    (out / "boxes.csv").unlink(missing_ok=True)
    for name in CLASSES:  # drop images left over from a larger earlier run
        for path in out.glob(f"{name}.*.jpg"):
            index = path.name.split(".")[1]
            if not index.isdigit() or int(index) >= n_per_class:
                path.unlink()


def _write_boxes(out: Path, rows: list[tuple]) -> None:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(BOX_HEADER)
    writer.writerows(rows)
    write_atomic(out / "boxes.csv", text.getvalue())


def _write_image(out: Path, label: int, index: int, size: int, seed: int, quality: int) -> tuple:
    name = f"{CLASSES[label]}.{index}.jpg"
    image, box = render(np.random.default_rng([seed, label, index]), label, size)
    image.save(out / name, "JPEG", quality=quality)
    return (name, *box, size, size)


def render(rng: np.random.Generator, label: int, size: int) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Draw one image of class ``label`` (0 cat, 1 dog); return it and its head box in output pixels."""
    side = size * SUPERSAMPLE
    canvas = _gradient(rng, side)
    draw = ImageDraw.Draw(canvas)
    _clutter(rng, draw, side)
    silhouette, face, line = _head_shapes(rng, label, side)
    mask = Image.new("L", (side, side))
    _draw_silhouette(ImageDraw.Draw(mask), silhouette, (255, 255, 255), line)
    colour = _head_colour(rng, ImageStat.Stat(canvas, mask).mean)
    ink = (25, 25, 25) if sum(colour) > 330 else (235, 235, 235)  # outline, eyes, nose show on any head
    shade = tuple((c + i) // 2 for c, i in zip(colour, ink))
    _draw_silhouette(draw, silhouette, (colour, shade, ink), line)
    for box in face:
        draw.ellipse(box, fill=ink)
    image = canvas.resize((size, size), Image.LANCZOS)
    return _add_noise(rng, image), _shrink_box(mask.getbbox(), size)


def _gradient(rng: np.random.Generator, side: int) -> Image.Image:
    """A linear blend between two random colours along a random direction."""
    start, end = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    # Smooth, so computing it on a coarse grid and upsampling loses nothing and saves most of the time.
    ramp = np.linspace(-1.0, 1.0, 32, dtype=np.float32)
    t = (math.cos(angle) * ramp[None, :] + math.sin(angle) * ramp[:, None]) / (2 * math.sqrt(2)) + 0.5
    pixels = start + t[..., None] * (end - start)
    return Image.fromarray(pixels.astype(np.uint8), "RGB").resize((side, side), Image.BILINEAR)


def _clutter(rng: np.random.Generator, draw: ImageDraw.ImageDraw, side: int) -> None:
    """About a dozen ellipses, rectangles and lines; no triangles, which would look like cat ears."""
    for _ in range(rng.integers(10, 15)):
        kind = rng.integers(3)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = rng.uniform(-0.1, 1.1, 2) * side
        w, h = rng.uniform(0.04, 0.25, 2) * side
        if kind == 0:
            draw.ellipse((x - w / 2, y - h / 2, x + w / 2, y + h / 2), fill=colour)
        elif kind == 1:
            draw.rectangle((x - w / 2, y - h / 2, x + w / 2, y + h / 2), fill=colour)
        else:
            width = int(rng.uniform(0.01, 0.035) * side) + 1
            draw.line((x - w, y - h, x + w, y + h) if rng.random() < 0.5 else (x - w, y + h, x + w, y - h),
                      fill=colour, width=width)


def _head_shapes(rng: np.random.Generator, label: int, side: int) -> tuple[list, list, int]:
    """The silhouette (head + ears) as (kind, coords, inner) shapes, the eye and nose boxes, the line width."""
    r = rng.uniform(*HEAD_DIAMETER) * side / 2
    cx = rng.uniform(EXTENT_SIDE * r, side - EXTENT_SIDE * r)
    cy = rng.uniform(EXTENT_TOP * r, side - EXTENT_BOTTOM * r)
    ears = _cat_ears(rng, cx, cy, r) if label == 0 else _dog_ears(rng, cx, cy, r)
    head = ("ellipse", (cx - r, cy - r, cx + r, cy + r), False)
    eye_dx, eye_y, eye_r = 0.38 * r, cy - 0.1 * r, 0.13 * r
    face = [
        (cx - eye_dx - eye_r, eye_y - eye_r, cx - eye_dx + eye_r, eye_y + eye_r),
        (cx + eye_dx - eye_r, eye_y - eye_r, cx + eye_dx + eye_r, eye_y + eye_r),
        (cx - 0.16 * r, cy + 0.25 * r, cx + 0.16 * r, cy + 0.42 * r),
    ]
    # Cat ears stand behind the head, dog ears hang in front of it.
    return ([*ears, head] if label == 0 else [head, *ears]), face, max(1, round(0.07 * r))


def _cat_ears(rng: np.random.Generator, cx: float, cy: float, r: float) -> list:
    """Two pointed triangles whose base sits on the top of the head."""
    length = rng.uniform(1.65, 1.95)  # apex distance from the centre, in radii
    tilt = math.radians(rng.uniform(28, 40))  # apex direction from vertical
    outer, inner = [], []
    for s in (-1, 1):
        b0, b1 = (np.array((cx + s * r * math.sin(a), cy - r * math.cos(a))) for a in BASE_ANGLES)
        apex = np.array((cx + s * length * r * math.sin(tilt), cy - length * r * math.cos(tilt)))
        outer.append(("polygon", [tuple(b0), tuple(apex), tuple(b1), (cx, cy)], False))
        # An inner ear, shaded towards the outline colour; the head hides its lower part.
        mid = (b0 + b1 + apex) / 3
        inner.append(("polygon", [tuple(mid + 0.6 * (p - mid)) for p in (b0, apex, b1)], True))
    return outer + inner


def _dog_ears(rng: np.random.Generator, cx: float, cy: float, r: float) -> list:
    """Two long ellipses hanging from the top of the head down its sides, flaring slightly outwards."""
    half_len = r * rng.uniform(0.9, 1.0)
    half_wid = r * rng.uniform(0.3, 0.38)
    tilt = math.radians(rng.uniform(5, 15))
    t = np.linspace(0, 2 * math.pi, 32, endpoint=False)
    ears = []
    for s in (-1, 1):
        ex, ey = cx + s * 0.95 * r, cy + 0.15 * r
        x, y = half_wid * np.cos(t), half_len * np.sin(t)
        # Rotate so the lower end (y > 0) swings outwards, away from the head.
        cos, sin = math.cos(tilt), s * math.sin(tilt)
        xr, yr = ex + x * cos + y * sin, ey - x * sin + y * cos
        ears.append(("polygon", list(zip(xr.tolist(), yr.tolist())), False))
    return ears


def _draw_silhouette(draw: ImageDraw.ImageDraw, shapes: list, inks: tuple, width: int) -> None:
    """Draw in order, each shape outlined: cartoon edges that set the head apart from the clutter.

    ``inks`` is (fill, inner fill, outline); inner shapes (the cats' inner ears) get no outline.
    """
    fill, inner_fill, outline = inks
    for kind, coords, inner in shapes:
        if inner:
            getattr(draw, kind)(coords, fill=inner_fill)
        else:
            getattr(draw, kind)(coords, fill=fill, outline=outline, width=width)


def _head_colour(rng: np.random.Generator, background: list[float]) -> tuple[int, int, int]:
    """A uniform random colour, redrawn until it stands out from the mean ``background`` it will cover."""
    background = np.asarray(background)
    best, best_dist = None, -1.0
    for _ in range(50):
        colour = rng.integers(0, 256, 3)
        dist = float(np.linalg.norm(colour - background))
        if dist >= MIN_CONTRAST:
            return tuple(int(c) for c in colour)
        if dist > best_dist:
            best, best_dist = colour, dist
    return tuple(int(c) for c in best)


def _add_noise(rng: np.random.Generator, image: Image.Image) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, NOISE_SIGMA, (image.height, image.width, 3))
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), "RGB")


def _shrink_box(box: tuple[int, int, int, int], size: int) -> tuple[int, int, int, int]:
    """Canvas box to output pixels, rounded outwards so every touched pixel is inside."""
    x0, y0, x1, y1 = box
    k = SUPERSAMPLE
    return x0 // k, y0 // k, min(size, -(-x1 // k)), min(size, -(-y1 // k))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder to write the images and boxes.csv into")
    parser.add_argument("--n-per-class", type=int, default=1000)
    parser.add_argument("--size", type=int, default=96, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality")
    args = parser.parse_args(argv)
    try:
        cached = is_complete(args.out, _params(args.n_per_class, args.size, args.seed, args.quality))
        out = generate(args.out, args.n_per_class, args.size, args.seed, args.quality)
    except UserError as err:
        parser.error(str(err))  # one line and exit code 2, no traceback
    verb = "kept the existing" if cached else "wrote"
    print(f"{verb} {2 * args.n_per_class} synthetic cat/dog images ({args.size} px, seed {args.seed}) in {out}")


if __name__ == "__main__":
    main()
