"""Each kind of bad file is recognised with its reason; odd but valid images become RGB."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from catdog.data.decode import BadImage, load_rgb
from helpers import write_image


def _jpeg_bytes(size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty file"),
        (b"this is text, not a picture", "not an image"),
        (_jpeg_bytes()[:400], "truncated or corrupt"),
    ],
    ids=["zero-byte", "non-image", "truncated-jpeg"],
)
def test_bad_files_raise_with_reason(tmp_path, content, reason):
    path = tmp_path / "x.jpg"
    path.write_bytes(content)
    with pytest.raises(BadImage, match=reason):
        load_rgb(str(path), 32)


def test_truncated_png(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(buf, "PNG")
    path = tmp_path / "x.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(BadImage, match="truncated or corrupt"):
        load_rgb(str(path), 32)


def test_over_large_image_is_refused_before_decoding(tmp_path):
    path = write_image(tmp_path / "big.png", size=(400, 300))
    with pytest.raises(BadImage, match="too large: 400x300"):
        load_rgb(str(path), 32, max_pixels=100_000)
    assert load_rgb(str(path), 32, max_pixels=120_000).shape == (32, 32, 3)


def test_png_named_jpg_is_read_as_png(tmp_path):
    path = write_image(tmp_path / "really_a_png.jpg", color=(10, 200, 10), fmt="PNG")
    pixels = load_rgb(str(path))
    assert pixels.shape == (30, 40, 3)
    assert tuple(pixels[0, 0]) == (10, 200, 10)


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "RGBA", "LA", "I;16"])
def test_any_mode_becomes_rgb(tmp_path, mode):
    img = Image.new(mode, (20, 10))
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    img.save(path)
    pixels = load_rgb(str(path), 16)
    assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8


def test_transparent_pixels_become_white_not_black(tmp_path):
    path = tmp_path / "x.png"
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(path)
    assert (load_rgb(str(path)) == 255).all()


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (60, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 10, 20))  # a blue band on the left, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=95)
    pixels = load_rgb(str(path))
    assert pixels.shape == (60, 20, 3)  # displayed upright: portrait
    assert pixels[2, 10, 2] > 200 and pixels[-3, 10, 0] > 200  # the band is now on top


def test_resize_squashes_to_square_like_the_original_resize(tmp_path):
    # Resize((224, 224)) ignores the aspect ratio; so does the cache.
    path = write_image(tmp_path / "wide.png", size=(100, 50))
    assert load_rgb(str(path), 24).shape == (24, 24, 3)


def test_unreadable_file_says_so(tmp_path):
    path = tmp_path / "dangling.jpg"
    path.symlink_to(tmp_path / "nowhere.jpg")
    with pytest.raises(BadImage, match="unreadable"):
        load_rgb(str(path), 24)
