"""Object boxes beside a data set: ``boxes.csv`` (file, x0, y0, x1, y1, width, height in pixels;
x1 and y1 exclusive), written by the built-in data's generator and read for the map scores."""

from __future__ import annotations

import csv
import os
from pathlib import Path

BOX_HEADER = ("file", "x0", "y0", "x1", "y1", "width", "height")


def read_boxes(root: str | os.PathLike) -> dict[str, tuple[float, float, float, float]]:
    """File name -> its box as fractions of the image's width and height; {} without boxes.csv.
    Fractions, so a box holds at any size the images are resized to."""
    path = Path(root) / "boxes.csv"
    if not path.is_file():
        return {}
    boxes = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            w, h = float(row["width"]), float(row["height"])
            boxes[row["file"]] = (float(row["x0"]) / w, float(row["y0"]) / h, float(row["x1"]) / w, float(row["y1"]) / h)
    return boxes
