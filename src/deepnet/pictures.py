"""The user's own pictures (``deepnet predict``): read any picture safely, as the network sees it.

Safely means: only regular files are opened (a FIFO or device would block or never end), and
never for more than :data:`MAX_PIXELS` pixels (a 64x64 network needs far fewer; Pillow's own
bomb warning never reaches the user); JPEGs are decoded at a reduced scale (``draft``) when
they are much larger than needed. Pictures with more than 8 bits per channel are scaled by
their real range, never clipped:

* 16-bit (``I;16`` modes, e.g. 16-bit grayscale PNG): divided by 257 (65535 -> 255);
* 32-bit integer (``I``, e.g. int32 TIFF): values within 0..255 are taken as 8-bit, within
  0..65535 as 16-bit (divided by 257), larger ones by the full int32 range; negative values
  are refused;
* floating point (``F``, e.g. float TIFF): values within 0..1 are multiplied by 255, within
  0..255 taken as they are; NaN, infinities, negative values or values above 255 are refused.
"""

from __future__ import annotations

import os
import stat
import warnings
from typing import BinaryIO

import numpy as np

from deepnet.constants import IMAGE_SHAPE
from deepnet.errors import InputError
from deepnet.fileio import NotRegularFileError, open_regular
from deepnet.paths import safe_text

MAX_PIXELS = 40_000_000  # 40 megapixels: any photograph, far below a decompression bomb
DRAFT_SIZE = (1024, 1024)  # a larger JPEG is decoded at 1/2, 1/4 or 1/8 scale, not below this
_DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def load_picture(path: str | os.PathLike) -> np.ndarray:
    """Any picture Pillow reads, as the network sees it: (64, 64, 3) uint8 RGB.

    EXIF rotation is applied, transparency and palettes become plain RGB, deeper pixels are
    scaled to 8 bits (see the module docstring), and the picture is resized (squashed, not
    cropped) to 64x64 with Pillow's bicubic filter; feed the result to
    :func:`deepnet.data.preprocess` (with a leading axis) for exactly the training
    preprocessing. Raises :class:`InputError` naming the file and the cause.
    """
    from PIL import Image, ImageOps  # only predict needs Pillow

    shown = safe_text(os.fspath(path))
    handle = _open_regular(path, shown)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            picture = Image.open(handle)
        with picture:
            width, height = picture.size
            if width * height > MAX_PIXELS:
                raise InputError(
                    f"{shown}: picture of {width}x{height} pixels ({width * height / 1e6:.0f} "
                    f"megapixels), more than deepnet reads ({MAX_PIXELS / 1e6:.0f}); the network "
                    "sees 64x64: shrink it first"
                )
            if picture.format == "JPEG" and max(width, height) > 2 * max(DRAFT_SIZE):
                picture.draft("RGB", DRAFT_SIZE)  # decode at a reduced scale: less memory
            picture = ImageOps.exif_transpose(picture)
            if picture.mode in _DEEP_MODES:
                picture = Image.fromarray(_to_8_bits(np.asarray(picture), picture.mode, shown), "L")
            if picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info:
                picture = picture.convert("RGBA")
                backdrop = Image.new("RGBA", picture.size, (255, 255, 255, 255))
                picture = Image.alpha_composite(backdrop, picture)
            picture = picture.convert("RGB")
            small = picture.resize(IMAGE_SHAPE[1::-1], Image.Resampling.BICUBIC)
            return np.asarray(small, dtype=np.uint8).reshape(IMAGE_SHAPE)
    except Image.DecompressionBombError:  # Pillow's own limit, far above ours
        raise InputError(
            f"{shown}: picture of more than {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels, "
            f"more than deepnet reads ({MAX_PIXELS / 1e6:.0f}); the network sees 64x64: "
            "shrink it first"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:  # UnidentifiedImageError is an OSError
        if isinstance(exc, InputError):
            raise
        reason = safe_text(" ".join(str(exc).split())[:160] or type(exc).__name__)
        raise InputError(f"{shown}: cannot read as a picture ({reason})") from None
    finally:
        handle.close()


def _open_regular(path: str | os.PathLike, shown: str) -> BinaryIO:
    """Open ``path`` for reading only if it is a regular file; never blocks on a FIFO."""
    try:
        return open_regular(path)
    except NotRegularFileError as exc:
        raise InputError(_not_regular(shown, exc.mode)) from None
    except FileNotFoundError:
        raise InputError(f"{shown}: picture not found") from None
    except PermissionError:
        raise InputError(f"{shown}: permission denied (cannot read the picture)") from None
    except OSError as exc:
        raise InputError(f"{shown}: cannot open the picture ({exc.strerror})") from None


def _not_regular(shown: str, mode: int) -> str:
    if stat.S_ISDIR(mode):
        what = "a folder"
    elif stat.S_ISFIFO(mode):
        what = "a FIFO (named pipe)"
    elif stat.S_ISSOCK(mode):
        what = "a socket"
    else:
        what = "a device"
    return f"{shown}: {what}, not a regular file; deepnet reads pictures only from regular files"


def _to_8_bits(pixels: np.ndarray, mode: str, shown: str) -> np.ndarray:
    """Deep grayscale pixels scaled to uint8 by their real range (module docstring)."""
    if mode.startswith("I;16"):
        return _round(pixels.astype(np.float64) / 257)
    values = pixels.astype(np.float64)
    if not np.isfinite(values).all():
        raise InputError(f"{shown}: the picture holds NaN or infinite pixel values")
    low, high = float(values.min()), float(values.max())
    if low < 0:
        raise InputError(
            f"{shown}: {_MODE_NAMES[mode]} picture with negative pixel values ({low:g}); "
            "deepnet reads pixels from 0 (black) up; convert it to an 8-bit picture"
        )
    if mode == "I":
        scale = 1 if high <= 255 else 1 / 257 if high <= 65535 else 255 / (2**31 - 1)
        return _round(values * scale)
    if high <= 1:
        return _round(values * 255)
    if high <= 255:
        return _round(values)
    raise InputError(
        f"{shown}: floating-point picture with pixel values up to {high:g}; deepnet reads float "
        "pixels from 0 to 1 or from 0 to 255: convert it to an 8-bit picture"
    )


_MODE_NAMES = {"I": "32-bit integer", "F": "floating-point"}


def _round(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
