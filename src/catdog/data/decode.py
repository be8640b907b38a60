"""Decode one image file into an RGB uint8 array, or say in a few words why it cannot be used.

Pillow opens files by their content, so a PNG named ``.jpg`` is read as the PNG it is.
EXIF orientation is applied; grayscale, CMYK, palette and RGBA images become RGB.
"""

from __future__ import annotations

import os
import struct
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# A truncated file must fail loudly here, never be padded with grey and trained on.
ImageFile.LOAD_TRUNCATED_IMAGES = False

MAX_PIXELS = 100_000_000  # 10k x 10k: far above any photo, far below a decompression bomb's size
# What Pillow's format parsers raise on damaged or hostile bytes (found by tests/test_fuzz.py).
_PARSE_ERRORS = (SyntaxError, ValueError, TypeError, KeyError, IndexError, EOFError, struct.error)


class BadImage(Exception):
    """A file that is not a usable image; the message is the reason shown in the report."""


def _open(path: str, max_pixels: int) -> Image.Image:
    try:
        if os.path.getsize(path) == 0:
            raise BadImage("empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage("not an image (unrecognised content)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage("too large: decompression-bomb guard") from None
    except OSError as err:  # with an errno: the file system said no; without: Pillow's parser did
        raise BadImage(f"unreadable: {err.strerror}" if err.errno else f"truncated or corrupt: {err}") from None
    except _PARSE_ERRORS as err:
        raise BadImage(f"truncated or corrupt: {type(err).__name__}: {err}") from None
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise BadImage(f"too large: {width}x{height} pixels (limit {max_pixels:,})")
    if width == 0 or height == 0:
        img.close()
        raise BadImage("zero-size image")
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on white: converting straight to RGB shows whatever hides under transparent pixels.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        array = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        peak = float(array.max()) or 1.0
        return Image.fromarray((array * (255.0 / peak)).clip(0, 255).astype(np.uint8)).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")  # no copy for the common case


def load_rgb(path: str, size: int | None = None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The image at ``path`` as an (H, W, 3) uint8 array, resized to ``size`` x ``size`` if given.

    Raises BadImage for empty, non-image, truncated, corrupt and over-large files.
    """
    img = _open(path, max_pixels)
    try:
        if size is not None and img.format == "JPEG":
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the target is that much smaller:
            # several times faster, and the resize below still does the final, antialiased step.
            img.draft("RGB", (size, size))
        img.load()
        try:
            ImageOps.exif_transpose(img, in_place=True)  # in place: without it Pillow copies every image
        except Exception:  # a corrupt EXIF block: the pixels are still fine, keep them as stored
            pass
        img = _to_rgb(img)
        if size is not None and img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)
    except BadImage:
        raise
    except Image.DecompressionBombError:
        raise BadImage("too large: decompression-bomb guard") from None
    except (OSError, *_PARSE_ERRORS) as err:
        raise BadImage(f"truncated or corrupt: {type(err).__name__}: {err}") from None
    finally:
        img.close()


def try_load_rgb(path: str, size: int | None = None, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray | None, str | None]:
    """``(pixels, None)``, or ``(None, reason)`` for a file that cannot be used: never raises,
    so one hostile file cannot stop a folder's worth of decoding."""
    try:
        return load_rgb(path, size, max_pixels), None
    except BadImage as err:
        return None, str(err)
    except Exception as err:  # a Pillow failure not seen before: still only this file's problem
        return None, f"unreadable: {type(err).__name__}: {err}"
