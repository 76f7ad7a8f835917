"""The user's pictures (deepnet.pictures): special files, huge pictures, more than 8 bits."""

from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from deepnet.data import load_picture as reexported
from deepnet.errors import InputError
from deepnet.pictures import MAX_PIXELS, load_picture

pytestmark = pytest.mark.timeout(60)  # a hang (a FIFO, a lock) fails, never stalls


def cat(height: int = 64, width: int = 48) -> np.ndarray:
    """A grayscale picture with the whole 8-bit range: a diagonal gradient plus a dark square."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = (255 * (x + y) / (height + width - 2)).round().astype(np.uint8)
    pixels[10:30, 10:30] = 7
    return pixels


def as_8_bit(path: Path) -> np.ndarray:
    """What deepnet 0.x made of an 8-bit picture: the reference for every deeper one."""
    with Image.open(path) as picture:
        picture = ImageOps.exif_transpose(picture).convert("RGB")
        return np.asarray(picture.resize((64, 64), Image.Resampling.BICUBIC))


def test_load_picture_still_lives_in_deepnet_data():
    assert reexported is load_picture


def test_eight_bit_pictures_are_read_exactly_as_before(tmp_path: Path):
    Image.fromarray(cat(), "L").save(tmp_path / "grey.png")
    rgb = np.stack([cat(), cat()[::-1], 255 - cat()], axis=-1)
    Image.fromarray(rgb, "RGB").save(tmp_path / "rgb.png")
    for name in ("grey.png", "rgb.png"):
        np.testing.assert_array_equal(load_picture(tmp_path / name), as_8_bit(tmp_path / name))


def test_deeper_pictures_are_scaled_by_their_real_range(tmp_path: Path):
    Image.fromarray(cat(), "L").save(tmp_path / "cat8.png")
    reference = load_picture(tmp_path / "cat8.png")
    deep = cat().astype(np.float64)
    versions = {
        "cat16.png": Image.fromarray((deep * 257).astype(np.uint16)),  # 16-bit grayscale PNG
        "cat-int32-16bit.tif": Image.fromarray((deep * 257).astype(np.int32)),
        "cat-int32-8bit.tif": Image.fromarray(deep.astype(np.int32)),
        "cat-int32-full.tif": Image.fromarray((deep * (2**31 - 1) / 255).round().astype(np.int32)),
        "cat-float-unit.tif": Image.fromarray((deep / 255).astype(np.float32)),
        "cat-float-255.tif": Image.fromarray(deep.astype(np.float32)),
    }
    for name, picture in versions.items():
        picture.save(tmp_path / name)
        got = load_picture(tmp_path / name)
        assert np.abs(got.astype(int) - reference).max() <= 1, name  # not all-white or black
    with Image.open(tmp_path / "cat16.png") as opened:
        assert opened.mode.startswith("I;16")  # Pillow did read 16 bits


def test_deep_pixels_outside_any_convention_are_refused(tmp_path: Path):
    cases = {
        "neg.tif": (np.full((8, 8), -5, np.int32), "32-bit integer picture with negative pixel"),
        "negf.tif": (np.full((8, 8), -0.5, np.float32), "floating-point picture with negative"),
        "big.tif": (
            np.full((8, 8), 1000.0, np.float32),
            "float pixels from 0 to 1 or from 0 to 255",
        ),
        "nan.tif": (np.full((8, 8), np.nan, np.float32), "NaN or infinite pixel values"),
    }
    for name, (pixels, message) in cases.items():
        Image.fromarray(pixels).save(tmp_path / name)
        with pytest.raises(InputError, match=f"^{tmp_path}/{name}: .*{message}"):
            load_picture(tmp_path / name)


def test_only_regular_files_are_opened(tmp_path: Path):
    os.mkfifo(tmp_path / "f.png")  # nobody writes to it: opening it for reading would block
    cases = {
        tmp_path / "f.png": "a FIFO (named pipe), not a regular file",
        tmp_path: "a folder, not a regular file",
        Path("/dev/zero"): "a device, not a regular file",
        tmp_path / "missing.png": "picture not found",
    }
    for path, message in cases.items():
        with pytest.raises(InputError, match="^" + re.escape(f"{path}: {message}")):
            load_picture(path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="notes.txt: cannot read as a picture"):
        load_picture(tmp_path / "notes.txt")


def test_a_name_with_escape_codes_is_shown_safely(tmp_path: Path):
    with pytest.raises(InputError) as caught:
        load_picture(tmp_path / "x\x1b[2J.png")
    assert "\x1b" not in str(caught.value) and "x\\x1b[2J.png: picture not found" in str(
        caught.value
    )


def test_huge_pictures_are_refused_before_decoding(tmp_path: Path):
    # 1-bit PNGs: a few megabytes to write, 48 to 200 megapixels declared
    for width, height in ((8000, 6000), (10000, 9000), (20000, 9000)):
        path = tmp_path / f"{width}x{height}.png"
        Image.new("1", (width, height)).save(path)
        gc.collect()  # earlier tests' unclosed files warn when collected: not in what follows
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(InputError, match=r"megapixels\)?, more than deepnet reads \(40\)"):
                load_picture(path)
        assert not caught, [str(w.message) for w in caught]  # no raw DecompressionBombWarning
    assert MAX_PIXELS > 6000 * 6000


PEAK = """
import sys
from deepnet.pictures import load_picture
try:
    load_picture(sys.argv[1])
except Exception as exc:
    print(type(exc).__name__, exc)
# VmHWM, not ru_maxrss: the latter keeps the high-water mark of the forked pytest across exec
peak = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")]
print("peak", peak[0])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_large_jpeg_is_decoded_at_a_reduced_scale(tmp_path: Path):
    big = np.repeat(np.repeat(np.stack([cat()] * 3, axis=-1), 100, axis=0), 100, axis=1)
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=90)  # 6400 x 4800, 31 megapixels
    run = subprocess.run(
        [sys.executable, "-c", PEAK, str(tmp_path / "big.jpg")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    peak_kib = int(run.stdout.split()[-1])
    assert run.stdout.startswith("peak"), run.stdout + run.stderr
    assert peak_kib < 150 * 1024  # measured: 66 MB with draft, 396 MB decoding it whole
    full = np.asarray(Image.open(tmp_path / "big.jpg").convert("RGB").resize((64, 64), 3))
    assert np.abs(load_picture(tmp_path / "big.jpg").astype(int) - full).mean() < 3
