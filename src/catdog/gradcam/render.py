"""Pictures of class activation maps: heatmaps, overlays, and titled grids.

Grids are composed with tensor operations on the maps' device and titled with Pillow, not
drawn with matplotlib: a matplotlib figure costs a good part of a second, which would be
most of an epoch on a fast GPU, every epoch. (matplotlib's colormap is still the palette.)
"""

from __future__ import annotations

import functools
import io
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from catdog.errors import UserError
from catdog.model.evaluation import positive_class

TITLE_HEIGHT = 16
CELL = 128  # small training images are enlarged for display, by the whole factor that comes nearest this size


@functools.cache
def palette(name: str = "jet") -> np.ndarray:
    """matplotlib's colormap ``name`` as 256 RGB rows; an unknown name is a user's typo, said in one line."""
    from matplotlib import colormaps

    if name not in colormaps:
        raise UserError(f"colormap={name} is not one of matplotlib's colormaps: try jet, viridis, inferno or turbo")
    return (colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


def heatmap(cams: torch.Tensor, colormap: str = "jet") -> torch.Tensor:
    """(N, H, W) maps in [0, 1] -> (N, 3, H, W) uint8 colour images."""
    lut = torch.from_numpy(palette(colormap)).to(cams.device)
    idx = (cams.clamp(0, 1) * 255).round().long()
    return lut[idx].permute(0, 3, 1, 2).contiguous()


def overlay(images: torch.Tensor, cams: torch.Tensor, alpha: float = 0.5, colormap: str = "jet") -> torch.Tensor:
    """Blend the heatmap over uint8 (N, 3, H, W) images."""
    mixed = (1 - alpha) * images.float() + alpha * heatmap(cams, colormap).float()
    return mixed.round().clamp(0, 255).to(torch.uint8)


@dataclass
class Row:
    """One image of a grid: its picture, its map, and the words above it."""

    image: torch.Tensor  # uint8 (3, H, W)
    cam: torch.Tensor  # (H, W) in [0, 1]
    title: str
    box: tuple[float, float, float, float] | None = None  # fractions of width and height
    outline: torch.Tensor | None = None  # (H, W) bool: the object's pixels, outlined on the overlay


def titled_rows(images: torch.Tensor, labels: torch.Tensor, cams: torch.Tensor, probs: torch.Tensor,
                classes: list[str], boxes: torch.Tensor | None = None) -> list[Row]:
    """One row per image, titled "true -> predicted  P(dog)=..."."""
    dog = positive_class(classes)
    rows = []
    for i in range(len(cams)):
        true, pred = classes[int(labels[i])], classes[int(probs[i].argmax())]
        title = f"{true} -> {pred}  P({classes[dog]})={float(probs[i, dog]):.2f}"
        rows.append(Row(images[i], cams[i], title, tuple(boxes[i].tolist()) if boxes is not None else None))
    return rows


def title_font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _cell(size: int) -> int:
    """The side a ``size`` px image is shown at: a whole multiple, so that each pixel stays a square."""
    return size * max(1, round(CELL / size))


def _upscale(x: torch.Tensor, cell: int) -> torch.Tensor:
    # Each pixel repeated, not interpolated: the picture shows what the network saw, and as PNG (the
    # commands' pictures) it encodes 2-3x faster at half the size (bench/RESULTS.md; JPEG: the same).
    k = cell // x.shape[-1]
    return x if k == 1 else x.repeat_interleave(k, dim=-1).repeat_interleave(k, dim=-2)


def _edges(masks: torch.Tensor, cell: int) -> torch.Tensor:
    """(N, H, W) bool masks enlarged to ``cell`` px as the panels are -> (N, cell, cell) bool: their one-pixel outline."""
    m = _upscale(masks[:, None], cell).float()
    inner = -F.max_pool2d(-m, 3, stride=1, padding=1)  # erosion
    return (m > inner)[:, 0]


def _outlined(panel: torch.Tensor, rows: list[Row], cell: int) -> torch.Tensor:
    """The overlay panel with each row's outline, if any, drawn in white."""
    if all(r.outline is None for r in rows):
        return panel
    blank = torch.zeros(rows[0].cam.shape, dtype=torch.bool)
    masks = torch.stack([(r.outline if r.outline is not None else blank).bool().to(panel.device) for r in rows])
    return torch.where(_edges(masks, cell)[:, None], torch.full_like(panel, 255), panel)


def cam_grid(rows: list[Row], colormap: str = "jet") -> np.ndarray:
    """One row per image: image | heatmap | overlay, titled; returns (H, W, 3) uint8."""
    images = torch.stack([r.image for r in rows])
    cams = torch.stack([r.cam for r in rows]).float()
    cell = _cell(images.shape[-1])
    panels = [_upscale(p, cell) for p in (images, heatmap(cams, colormap), overlay(images, cams, colormap=colormap))]
    panels[2] = _outlined(panels[2], rows, cell)
    strip = torch.cat(panels, dim=3)  # (N, 3, cell, 3 * cell)
    # Each row's pictures below a white title band, laid out as one array: Pillow converts it
    # once, not once per row (the callback draws two grids every epoch).
    layout = np.full((len(rows), TITLE_HEIGHT + cell, 3 * cell, 3), 255, dtype=np.uint8)
    layout[:, TITLE_HEIGHT:] = strip.permute(0, 2, 3, 1).cpu().numpy()
    canvas = Image.fromarray(layout.reshape(-1, 3 * cell, 3))
    draw, font = ImageDraw.Draw(canvas), title_font()
    for i, row in enumerate(rows):
        top = i * (cell + TITLE_HEIGHT)
        draw.text((4, top + 1), row.title, fill=(0, 0, 0), font=font)  # within its band: its glyphs end 15 px down
        if row.box is not None:  # the object's box on the overlay, to judge the map by eye
            x0, y0, x1, y1 = row.box
            draw.rectangle((2 * cell + x0 * cell, top + TITLE_HEIGHT + y0 * cell,
                            2 * cell + x1 * cell - 1, top + TITLE_HEIGHT + y1 * cell - 1), outline=(255, 255, 255), width=2)
    return np.asarray(canvas)


def png_bytes(picture: np.ndarray) -> bytes:
    """(H, W, 3) uint8 as PNG, for charts and the commands' pictures. zlib level 1: a grid encodes
    about 4x faster than at Pillow's default 6 for a fifth more bytes; and zlib's run-length strategy,
    meant for PNG's filtered rows: on every grid tried, 64-224 px, another 15-20% faster and 3-8%
    smaller (bench/RESULTS.md, session 41)."""
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG", compress_level=1, compress_type=zlib.Z_RLE)
    return buffer.getvalue()


def jpeg_bytes(picture: np.ndarray) -> bytes:
    """(H, W, 3) uint8 as JPEG, for the training callback's pictures of photos and heatmaps, encoded
    every epoch beside training: 5x faster than ``png_bytes`` and a fifth smaller, at 45 dB PSNR
    (quality 95, colour at full resolution: no visible change; bench/RESULTS.md, session 49)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(picture)).save(buffer, format="JPEG", quality=95, subsampling=0)
    return buffer.getvalue()


def save_picture(picture: np.ndarray | bytes, path) -> None:
    """``picture``: (H, W, 3) uint8, saved as PNG, or bytes already encoded (``png_bytes``, ``jpeg_bytes``)."""
    Path(path).write_bytes(picture if isinstance(picture, bytes) else png_bytes(picture))
