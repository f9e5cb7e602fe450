"""Reading user images and preparing them as the MNIST digits were made.

MNIST's digits are white ink on black, size-normalised to fit a 20x20 box (aspect ratio kept,
anti-aliased to grey levels) and centred by centre of mass in a 28x28 field. A network trained on
them only recognises digits that look like that, so a photo, scan or canvas drawing goes through
the same steps: greyscale -> ink made bright (the paper's level is a smooth surface fitted to
the paper, so shading is no ink, and dark ink on lighter paper is inverted) -> paper level
removed and contrast stretched -> the lines of ruled or squared paper erased -> cropped to the
ink (specks left out) -> fitted into 20x20 -> shifted so that its centre of mass is the centre of
the 28x28 field -> brightest pixel scaled to full white.

Everything that can go wrong with a user's image raises :class:`ImageError` with one line naming the
image and the problem; nothing else escapes, whatever the bytes or array.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps

from deepconvnet.errors import ImageError
from deepconvnet.fileio import atomic_write_bytes, is_pipe, one_line

#: Formats read (Pillow names). Restricting Pillow to them keeps its attack surface small.
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF")
#: Images with more pixels are refused before decoding (decompression bombs). 40 MP covers
#: any phone photo. Pillow's own limits act inside ``Image.open``, before this check can run: it
#: warns above 89 MP (silenced in :func:`read_image`, this check refuses those in one line) and
#: raises above 179 MP.
MAX_PIXELS = 40_000_000
#: Larger images are reduced (box filter) to at most this side before any float work.
WORK_SIDE = 1024
#: Files larger than this are refused unread: a 40 MP image at 8 bytes a pixel (16-bit RGBA,
#: uncompressed), plus room for its headers. Without it, /dev/zero was read until the OOM killer.
MAX_FILE_BYTES = MAX_PIXELS * 8 + (1 << 20)
#: Signatures of the multi-frame formats (TIFF, BigTIFF, GIF). A file of theirs larger than
#: MAX_FILE_BYTES is still read, as a stream: only its first frame is decoded, and the pixel limit
#: bounds that frame, so the other pages' bytes are never read.
MULTI_FRAME_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+", b"GIF87a", b"GIF89a")
#: How files of the formats read begin: one that does and still cannot be opened is damaged,
#: not "not an image".
FORMAT_MAGIC = (*MULTI_FRAME_MAGIC, b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM")
#: Modes whose pixels may be averaged (box-filtered) before conversion to grey; palette and
#: bilevel images must be converted first (an average of palette indices is no colour).
AVERAGEABLE_MODES = ("L", "LA", "La", "RGB", "RGBA", "RGBa", "CMYK", "YCbCr", "I", "F")

SIZE = 28  # the MNIST field
BOX = 20  # the box the digit is fitted into
CENTRE = (
    14.0  # MNIST's mean centre of mass (row and column, pixel indices), measured on its test set
)
MIN_CONTRAST = 0.1  # ink must stand this far above the paper, else the image is blank
INK_THRESHOLD = 0.2  # after stretching: pixels at least this bright count as ink for the crop
NOISE_FLOOR = 0.05  # after stretching: dimmer pixels are paper texture, set to zero
SPECK = 0.01  # pieces of ink this small beside the largest piece are noise to the crop
PAPER_CELLS = 48  # the paper's level is fitted on a grid at most this many cells a side
#: ... and refitted to the cells within each of these of it in turn: the first takes in a page
#: a lamp darkens by half, the last is the paper's texture (the last is repeated until stable).
PAPER_TOLERANCES = (0.4, 0.2, 0.1) + (MIN_CONTRAST / 2,) * 12
RULE_LEVEL = 0.08  # after stretching: pixels at least this bright count towards a ruled line
RULE_SPAN = 0.8  # a ruled line marks at least this fraction of its row or column


class ImageTooLargeError(ImageError):
    """An image over the pixel limit (a possible decompression bomb)."""


def read_image(
    source: str | os.PathLike | bytes,
    *,
    name: str | None = None,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Decode a PNG, JPEG, BMP, GIF or TIFF (path or bytes) to greyscale float32 (H, W) in [0, 1].

    The pixel count is checked from the header before decoding; only the first frame of an
    animation or multi-page file is read; EXIF orientation is applied; transparency (an alpha
    channel or a transparent colour) is flattened onto paper of the opposite shade to the ink, so
    a stroke drawn on a transparent canvas stays visible whatever its colour.
    """
    label = name or ("image" if isinstance(source, bytes | bytearray | memoryview) else str(source))
    with _open_image(source, label) as stream:
        try:
            with warnings.catch_warnings():
                # Pillow warns, in two lines, about images of 89-179 MP while opening them
                # (before _check_size refuses them in one) and about damaged TIFF tags or EXIF
                # blocks (the image is then read as stored, or refused in one line).
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                warnings.simplefilter("ignore", UserWarning)
                return _decode(stream, label, max_pixels)
        except ImageError:
            raise
        except Image.DecompressionBombError as exc:  # over twice Pillow's limit: refused on open
            found = re.search(r"\((\d+) pixels\)", str(exc))
            size = f"{int(found[1]):,} pixels" if found else "over Pillow's limit"
            msg = f"{label}: image too large ({size}; the limit is {max_pixels:,})"
            raise ImageTooLargeError(msg) from exc
        except Image.UnidentifiedImageError as exc:
            stream.seek(0)
            if stream.read(8).startswith(FORMAT_MAGIC):
                raise ImageError(f"{label}: truncated or corrupt image (cannot be opened)") from exc
            msg = f"{label}: not an image (expected PNG, JPEG, BMP, GIF or TIFF)"
            raise ImageError(msg) from exc
        except MemoryError as exc:
            raise ImageTooLargeError(f"{label}: image too large to decode") from exc
        except Exception as exc:  # any decoder failure on untrusted bytes is the input's fault
            raise ImageError(f"{label}: truncated or corrupt image ({one_line(exc)})") from exc


def _decode(stream: BinaryIO, label: str, max_pixels: int) -> np.ndarray:
    """Open, check the header's size, then decode the first frame (the size check must come
    before ``load``, which is where a decompression bomb would take the memory)."""
    with Image.open(stream, formats=FORMATS) as img:
        _check_size(img.size, label, max_pixels)
        img.draft("L", (WORK_SIDE, WORK_SIDE))  # JPEG: decode at a reduced scale
        img.load()
        ImageOps.exif_transpose(img, in_place=True)  # a copy only when it must rotate
        return _to_grey(img, label)


def prepare_digit(image: Any, *, name: str = "image") -> np.ndarray:
    """Turn a greyscale (H, W) or RGB(A) (H, W, C) array into a 28x28 MNIST-style digit.

    Accepted values: uint8 (0-255), uint16 (0-65535), bool, or other numbers in [0, 1]. Either
    polarity works. Returns float32 (28, 28) in [0, 1], white ink on black.
    """
    grey = _as_grey_array(image, name)
    ink = _ink(grey, name)
    return _full_white(_centre_by_mass(_fit_box(_crop_to_ink(ink))))


def load_digit(
    source: str | os.PathLike | bytes,
    *,
    name: str | None = None,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """:func:`read_image` then :func:`prepare_digit`: a file or upload as the network sees it."""
    label = name or ("image" if isinstance(source, bytes | bytearray | memoryview) else str(source))
    return prepare_digit(read_image(source, name=label, max_pixels=max_pixels), name=label)


def pixels_to_digit(pixels: Any, *, name: str = "pixels") -> np.ndarray:
    """Validate raw 28x28 pixels (white digit on black, values in [0, 1]) and use them as given.

    No preprocessing: the caller promises an MNIST-style digit already; a blank or uniform grid
    is refused, as a blank image is. Returns float32 (28, 28).
    """
    arr = _number_grid(pixels, name)
    if not np.isfinite(arr).all():
        raise ImageError(f"{name}: values must be finite numbers (found NaN or infinity)")
    if arr.min() < 0 or arr.max() > 1:
        raise ImageError(f"{name}: values must be in [0, 1] (found {arr.min():g} to {arr.max():g})")
    if arr.max() - arr.min() < MIN_CONTRAST:  # as a blank image is refused, not guessed at
        raise ImageError(f"{name}: no digit found (the pixels are blank or uniform)")
    return arr.astype(np.float32)


def _number_grid(pixels: Any, name: str) -> np.ndarray:
    """The 28x28 values as float64. Strings and booleans are refused: NumPy would make numbers
    of them ("0.5" -> 0.5, true -> 1.0)."""
    try:
        given = np.asarray(pixels)
    except ValueError as exc:  # NumPy: "... has an inhomogeneous shape ..."
        raise ImageError(f"{name}: expected 28x28 numbers, got rows of different lengths") from exc
    if given.shape != (SIZE, SIZE):
        raise ImageError(f"{name}: expected shape 28x28, got {_describe(pixels, given)}")
    if given.dtype.kind == "b" or _has_bool(pixels):
        raise ImageError(f"{name}: expected 28x28 numbers, got true/false values")
    if given.dtype.kind in "US":
        raise ImageError(f"{name}: expected 28x28 numbers, got strings")
    if given.dtype.kind not in "uif":
        raise ImageError(f"{name}: expected 28x28 numbers, got values that are not numbers")
    return given.astype(np.float64)


def _has_bool(pixels: Any) -> bool:
    """Whether rows of Python values hold a bool (NumPy would upcast it to a number)."""
    return isinstance(pixels, list | tuple) and any(
        isinstance(value, bool) for row in pixels if isinstance(row, list | tuple) for value in row
    )


def _describe(pixels: Any, arr: np.ndarray) -> str:
    """What was given instead of 28x28: its shape, or the kind of a lone value (a bare ``null``
    or number has shape (), which would print as nothing)."""
    if arr.ndim > 0:
        return "x".join(map(str, arr.shape)) + (" (empty)" if arr.size == 0 else "")
    if pixels is None:
        return "null"
    if isinstance(pixels, bool | np.bool_):
        return "a boolean"
    if isinstance(pixels, str | bytes):
        return "a string"
    if isinstance(pixels, dict):
        return "an object"
    return "a number"


def digit_png_bytes(digit: np.ndarray) -> bytes:
    """A 28x28 digit in [0, 1] as an 8-bit greyscale PNG (white ink on black)."""
    pixels = np.clip(np.rint(np.asarray(digit, dtype=np.float64) * 255), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def save_digit_png(path: str | os.PathLike, digit: np.ndarray) -> Path:
    """Atomically write a 28x28 digit as PNG (what the network saw)."""
    return atomic_write_bytes(path, digit_png_bytes(digit))


# -- reading --------------------------------------------------------------------------------------
@contextlib.contextmanager
def _open_image(source: str | os.PathLike | bytes, label: str) -> Iterator[BinaryIO]:
    """The image's bytes as a stream: in memory, or the open file itself for a multi-page TIFF
    or GIF too large to read whole (:data:`MULTI_FRAME_MAGIC`)."""
    if isinstance(source, bytes | bytearray | memoryview):
        yield io.BytesIO(_within_file_limit(bytes(source), label))
        return
    if is_pipe(source):
        raise ImageError(f"{label}: a FIFO or socket, not an image file")
    try:
        with open(source, "rb") as file:
            if _is_large_multi_frame(file):
                yield file
            else:
                yield io.BytesIO(_within_file_limit(file.read(MAX_FILE_BYTES + 1), label))
    except FileNotFoundError:
        raise ImageError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{label}: is a directory, not an image") from None
    except OSError as exc:
        raise ImageError(f"{label}: cannot read ({exc.strerror or exc})") from exc


def _is_large_multi_frame(file: BinaryIO) -> bool:
    """Whether ``file`` is a regular file over :data:`MAX_FILE_BYTES` that starts as a TIFF or
    GIF; leaves it at its start either way."""
    info = os.fstat(file.fileno())
    if not stat.S_ISREG(info.st_mode) or info.st_size <= MAX_FILE_BYTES:
        return False
    head = file.read(6)
    file.seek(0)
    return head.startswith(MULTI_FRAME_MAGIC)


def _within_file_limit(data: bytes, label: str) -> bytes:
    if not data:
        raise ImageError(f"{label}: empty file, not an image")
    if len(data) > MAX_FILE_BYTES:
        raise ImageTooLargeError(
            f"{label}: more than {MAX_FILE_BYTES:,} bytes, larger than any image of at most "
            f"{MAX_PIXELS:,} pixels"
        )
    return data


def _check_size(size: tuple[int, int], label: str, max_pixels: int) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageError(f"{label}: image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{label}: image too large ({width}x{height} = {width * height:,} pixels; "
            f"the limit is {max_pixels:,})"
        )


HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def _to_grey(img: Image.Image, label: str) -> np.ndarray:
    """Any Pillow mode -> float32 (H, W) in [0, 1], reduced to at most WORK_SIDE per side.

    The reduction (a box filter) runs in Pillow on the decoded pixels, before any float copy: a
    40 MP float TIFF costs its own 160 MB once, not a float64 copy of it per step.
    """
    if img.mode in HIGH_DEPTH_MODES:
        container = img.mode
        if container.startswith("I;16"):
            img = img.convert("I")  # Pillow reduces I and F, not the 16-bit modes
        arr = np.asarray(_reduced(img), dtype=np.float64)
        return _scale_high_depth(arr, label, _full_scale(container, arr))
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if img.mode in AVERAGEABLE_MODES and "transparency" not in img.info:
        img = _reduced(img)  # before the conversion, which would copy all of a large image
    img = _reduced(img.convert("LA" if has_alpha else "L"))
    arr = np.asarray(img, dtype=np.float32) / np.float32(255)
    if not has_alpha:
        return arr
    grey, alpha = arr[..., 0], arr[..., 1]
    if alpha.min() >= 1:
        return grey
    paper = np.float32(0.0 if _ink_is_light(grey, alpha > 0.5) else 1.0)
    return alpha * grey + (1 - alpha) * paper


def _reduced(img: Image.Image) -> Image.Image:
    """``img`` box-filtered down to at most WORK_SIDE per side (as it is when smaller)."""
    factor = math.ceil(max(img.size) / WORK_SIDE)
    return img.reduce(factor) if factor > 1 else img


def _ink_is_light(grey: np.ndarray, painted: np.ndarray) -> bool:
    """Whether the painted (opaque) strokes of a transparent drawing are light.

    Judged by the median of the strokes' core, the painted pixels deepest inside them, which hold
    the ink itself; the strokes' edges blend towards whatever the canvas held. With a transparent
    colour key (GIF, palette PNG) every near-paper grey of that blend stays opaque, and judging all
    painted pixels let the fringe outvote a dark stroke, leaving a hollow outline.
    """
    core = _deepest_interior(painted)
    return bool(core.any()) and float(np.median(grey[core])) >= 0.5


def _deepest_interior(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` farthest (4-neighbour steps) from anything outside it."""
    from scipy import ndimage

    depth = ndimage.distance_transform_cdt(np.pad(mask, 1), metric="taxicab")[1:-1, 1:-1]
    return mask & (depth == depth.max())


def _full_scale(mode: str, arr: np.ndarray) -> float:
    """What a pixel value of 1.0 (white) is in an image of Pillow ``mode``: 1 for floats, 65535
    for a 16-bit file (whatever its values: a dim 16-bit image stays dim), and for a 32-bit
    integer file, which has no usual range, 255 when every value is in 0-255 (the pixels of a
    NumPy int array, which scaled as 16-bit were too dark to be anything but blank), else
    65535."""
    if mode == "F":
        return 1.0
    if mode == "I" and arr.min() >= 0 and arr.max() <= 255:
        return 255.0
    return 65535.0


def _scale_high_depth(arr: np.ndarray, label: str, full_scale: float) -> np.ndarray:
    """16-bit, 32-bit and float images onto [0, 1] against their type's range, not their own.

    Integers are scaled against their file's range (:func:`_full_scale`) and floats as 0-1, the
    range widened only to take in values beyond it. Stretching min-max instead made a flat image
    (30000 with one pixel at 30001) look fully contrasted and slip past the blank check in
    :func:`_ink`; scaled like this a 16-bit image is judged exactly as its 8-bit equivalent
    (``v * 257 / 65535 == v / 255``).
    """
    if arr.ndim != 2 or not np.isfinite(arr).all():
        raise ImageError(f"{label}: unsupported pixel data (non-finite or multi-channel)")
    low, high = min(float(arr.min()), 0.0), max(float(arr.max()), full_scale)
    return ((arr - low) / (high - low)).astype(np.float32)


# -- preparing ------------------------------------------------------------------------------------
def _as_grey_array(image: Any, name: str) -> np.ndarray:
    """Validate an array and bring it to float64 (H, W) in [0, 1]."""
    try:
        arr = np.asarray(image)
    except Exception as exc:
        raise ImageError(f"{name}: not an array ({one_line(exc)})") from exc
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype.kind not in "uif":
        raise ImageError(f"{name}: pixels must be numbers, got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[-1] in (1, 3, 4):
        arr = _luminance(arr)
    if arr.ndim != 2:
        raise ImageError(
            f"{name}: expected a greyscale (H, W) or colour (H, W, 3|4) image, got shape "
            f"{arr.shape}"
        )
    if arr.size == 0:
        raise ImageError(f"{name}: image has no pixels (shape {arr.shape})")
    if arr.size > MAX_PIXELS:
        raise ImageTooLargeError(f"{name}: image too large ({arr.size:,} pixels)")
    return _unit_range(arr, name)


def _luminance(arr: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of RGB (alpha ignored); a single channel is just squeezed."""
    if arr.shape[-1] == 1:
        return arr[..., 0]
    weights = np.array([0.299, 0.587, 0.114])
    rgb = arr[..., :3].astype(np.float64)
    luma = rgb @ weights
    return luma.astype(arr.dtype) if arr.dtype.kind in "ui" else luma


def _unit_range(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype in (np.uint8, np.uint16):
        return arr.astype(np.float64) / np.iinfo(arr.dtype).max
    with np.errstate(all="ignore"):
        out = arr.astype(np.float64)
    if not np.isfinite(out).all():
        raise ImageError(f"{name}: pixel values must be finite (found NaN or infinity)")
    low, high = float(out.min()), float(out.max())
    if low < 0 or high > 1:
        raise ImageError(
            f"{name}: pixel values must be in [0, 1] for dtype {arr.dtype} "
            f"(found {low:g} to {high:g})"
        )
    return out


def _ink(grey: np.ndarray, name: str) -> np.ndarray:
    """Bright ink on a zero background, stretched so that the brightest ink is 1.

    The paper's level is a smooth surface fitted to it (:func:`_paper_level`), so shading across
    a photo is no ink; the ink is on the side of the paper holding more contrast, summed over
    the pixels that stand out from the paper's texture. (Deciding from the paper alone, light
    above 0.5, read dark ink on dim paper, an underexposed photo, as a blank page; deciding from
    the extreme pixels let one glint of glare outvote a pencil stroke.) Dark ink is measured
    relative to the paper's level where it lies, as light reflected from both falls off together
    under shading; ruled and squared paper's lines are then erased (:func:`_erase_rules`).
    """
    grey = grey.astype(np.float32)  # one copy; each step below allocates at most one more
    paper = _paper_level(grey)
    ink = np.subtract(grey, paper)
    dark_ink = _above_texture(-ink) > _above_texture(ink)
    if dark_ink:
        np.negative(ink, out=ink)
    del grey
    if ink.max() < MIN_CONTRAST:
        raise ImageError(f"{name}: no digit found (the image is blank or uniform)")
    if dark_ink:  # reflected light: ink and paper dim together under shading
        ink /= np.maximum(paper, np.float32(MIN_CONTRAST), out=paper)
    del paper
    ink /= ink.max()
    np.clip(ink, 0.0, 1.0, out=ink)
    if dark_ink:  # only paper has ruled lines
        _erase_rules(ink)
        if ink.max() < INK_THRESHOLD:
            raise ImageError(f"{name}: no digit found (only the paper's lines)")
    ink[ink < NOISE_FLOOR] = 0.0
    return ink


def _above_texture(contrast: np.ndarray) -> float:
    """Summed contrast of the pixels that stand out from the paper's texture."""
    excess = contrast - np.float32(MIN_CONTRAST / 2)
    return float(np.maximum(excess, 0, out=excess).sum(dtype=np.float64))


def _paper_level(grey: np.ndarray) -> np.ndarray:
    """The paper's brightness at every pixel: a smooth surface fitted to the paper.

    Light falls on a page smoothly (a phone's vignetting, a lamp's fall-off), so the paper's
    level is a quadratic in the pixel's position, fitted by least squares to a coarse grid of
    block means (at most ``PAPER_CELLS`` a side), starting from their median and refitted to the
    cells ever closer to it (``PAPER_TOLERANCES``) until they stop changing: ink, ruled lines
    and glare are left out, whatever the polarity. Six coefficients cannot follow a stroke,
    however bold or tightly cropped; a percentile over local windows did, hollowing bold digits.
    """
    cell = max(1, math.ceil(max(grey.shape) / PAPER_CELLS))
    blocks = _block_means(grey, cell)
    coarse = blocks.ravel()
    terms = _quadratic_terms([_block_centres(n, cell) for n in grey.shape], grey.shape)
    design = np.stack([np.broadcast_to(t, blocks.shape).ravel() for t in terms], axis=1)
    coef = np.zeros(len(terms))
    coef[0] = np.median(coarse)
    inliers = None
    for near in PAPER_TOLERANCES:
        close = np.abs(coarse - design @ coef) <= near
        if close.sum() <= len(terms) or np.array_equal(close, inliers):
            break
        inliers = close
        coef = _fit_surface(design[inliers], coarse[inliers])
    pixels = _quadratic_terms([np.arange(n, dtype=np.float32) for n in grey.shape], grey.shape)
    level = np.zeros(grey.shape, np.float32)
    for c, term in zip(coef.astype(np.float32), pixels, strict=True):
        level += c * term
    return level


def _fit_surface(design: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Least-squares coefficients of the quadratic surface, leaving out (as 0) the terms the
    cells cannot determine: a slope along an axis needs two distinct positions on it, a curve
    three. A thin strip of an image has one or two columns of cells; fitting every term anyway
    let the minimum-norm solution bend the paper at the strip's edges, and a blank strip was
    read as a stroke. Should the chosen terms still be degenerate, the plane, then the constant."""
    nx, ny = (len(np.unique(design[:, axis])) for axis in (1, 2))
    # In _quadratic_terms' order: 1, x, y, x^2, xy, y^2; the first three make the plane.
    determined = np.array([True, nx >= 2, ny >= 2, nx >= 3, nx >= 2 and ny >= 2, ny >= 3])
    order = np.arange(len(determined))
    coef = np.zeros(len(determined))
    for used in (determined, determined & (order < 3), order < 1):
        fit, _, rank, _ = np.linalg.lstsq(design[:, used], values, rcond=None)
        if rank == used.sum():
            break
    coef[used] = fit
    return coef


def _quadratic_terms(positions: list[np.ndarray], shape: tuple[int, ...]) -> list[np.ndarray]:
    """1, x, y, x^2, xy, y^2 at the given row and column positions (pixels), as arrays that
    broadcast to their grid; positions are mapped to [-1, 1] across the image."""
    y, x = (
        ((p - (n - 1) / 2) / max((n - 1) / 2, 1)).astype(p.dtype)
        for p, n in zip(positions, shape, strict=True)
    )
    y, x = y[:, None], x[None, :]
    return [np.ones((1, 1), y.dtype), x, y, x * x, y * x, y * y]


def _block_means(arr: np.ndarray, cell: int) -> np.ndarray:
    """Means of ``cell`` x ``cell`` blocks over the pixels each holds (the last row and column of
    blocks may be smaller)."""
    if cell == 1:
        return arr
    height, width = arr.shape
    rows, cols = -(-height // cell), -(-width // cell)
    padded = np.pad(arr, [(0, rows * cell - height), (0, cols * cell - width)])
    sums = padded.reshape(rows, cell, cols, cell).sum(axis=(1, 3), dtype=np.float64)
    return sums / np.outer(_block_sizes(height, cell), _block_sizes(width, cell))


def _block_sizes(n: int, cell: int) -> np.ndarray:
    """How many of ``n`` pixels each block of ``cell`` holds along one axis."""
    return np.minimum(cell, n - np.arange(0, n, cell))


def _block_centres(n: int, cell: int) -> np.ndarray:
    """The middle of each block's own pixels along one axis: a block cut short by the image's
    edge is centred inside the image, so the fit never reads it as lying beyond the edge."""
    starts = np.arange(0, n, cell)
    return starts + (_block_sizes(n, cell) - 1) / 2


def _erase_rules(ink: np.ndarray) -> None:
    """Erase the lines of ruled or squared paper from ``ink``, in place.

    A ruled line is a band of rows (or columns) marked (at least ``RULE_LEVEL``) across at
    least ``RULE_SPAN`` of the image, which a digit's strokes are not, and at most half as
    thick as the digit's strokes, measured on what is marked outside such bands (where nothing
    is, as on a page of lines or a bar cropped edge to edge, the bands stay). In a line's band,
    and one row either side of it where the lens blurred it, each row's median (the line)
    becomes paper, ink over it is rescaled from the line's level up to full ink (opaque ink
    hides the line), and strokes crossing it are also restored from the rows just outside.
    Lines as thick as the strokes, or slanted across rows, stay and are read as ink.
    """
    marked = ink >= RULE_LEVEL
    bands = [_runs(marked.mean(axis=1) >= RULE_SPAN), _runs(marked.mean(axis=0) >= RULE_SPAN)]
    if not bands[0] and not bands[1]:
        return
    strokes = marked.copy()
    for top, bottom in bands[0]:
        strokes[top:bottom] = False
    for left, right in bands[1]:
        strokes[:, left:right] = False
    thin = _stroke_width(strokes) / 2
    for view, runs in zip((ink, ink.T), bands, strict=True):  # ink.T: writes land in ink
        level = np.median(view, axis=1)  # after the rows' pass, for the columns
        for top, bottom in runs:
            if bottom - top > thin:
                continue
            top, bottom = max(0, top - 1), min(len(view), bottom + 1)
            above = view[top - 1] if top > 0 else 0.0
            below = view[bottom] if bottom < len(view) else 0.0
            line = level[top:bottom, None]
            # Rescaled from the line's level; over a line nearly as dark as the ink itself, only
            # what stands well above the line is ink (a floor of 0.5 on the rescale).
            darker = np.clip((view[top:bottom] - line) / np.maximum(1 - line, 0.5), 0.0, None)
            view[top:bottom] = np.maximum(darker, (above + below) / 2)


def _stroke_width(marked: np.ndarray) -> float:
    """The digit's thickest strokes: twice the 99th percentile of the marked pixels' distance
    to paper, 0 where none are. Large images are measured on every ``step``-th pixel, at the
    cost of a 256-pixel image."""
    from scipy import ndimage

    step = max(1, max(marked.shape) // 256)
    sample = marked[::step, ::step]
    if not sample.any():
        return 0.0
    depth = ndimage.distance_transform_edt(sample)
    return 2 * step * float(np.percentile(depth[sample], 99))


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of every run of True in a 1-D boolean array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[False], flags, [False]]).astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _crop_to_ink(ink: np.ndarray) -> np.ndarray:
    """The box around the digit: its strong ink, less specks (pieces of it smaller than
    ``SPECK`` of its largest piece, such as sensor noise on a dim page), which would widen it."""
    from scipy import ndimage

    labels, _ = ndimage.label(ink >= INK_THRESHOLD, structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0  # paper
    strong = (sizes >= SPECK * sizes.max())[labels]
    rows = np.flatnonzero(strong.any(axis=1))
    cols = np.flatnonzero(strong.any(axis=0))
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _fit_box(digit: np.ndarray) -> np.ndarray:
    """Scale so that the longer side is BOX pixels, keeping the aspect ratio (anti-aliased)."""
    height, width = digit.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BILINEAR
    resized = Image.fromarray(digit.astype(np.float32)).resize(size, resample)
    return np.clip(np.asarray(resized, dtype=np.float64), 0.0, 1.0)


def _full_white(digit: np.ndarray) -> np.ndarray:
    """Scale the brightest pixel to 1. Every MNIST digit peaks at full white (254 or 255 in each
    test image); a stroke thinner than a pixel of the 20x20 box comes out of the down-scaling and
    the sub-pixel shift grey (a 1%-of-height stroke peaked at 0.34), and is brought back up."""
    peak = digit.max()
    return digit / peak if peak > 0 else digit


def _centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """Place in a 28x28 field with the centre of mass at its centre (sub-pixel, bilinear)."""
    from scipy import ndimage

    height, width = digit.shape
    field = np.zeros((SIZE, SIZE))
    top, left = (SIZE - height) // 2, (SIZE - width) // 2
    field[top : top + height, left : left + width] = digit
    mass = field.sum()
    if mass <= 0:  # unreachable after _ink's contrast check, kept as a guard
        return field.astype(np.float32)
    rows, cols = np.indices(field.shape)
    shift = (CENTRE - (rows * field).sum() / mass, CENTRE - (cols * field).sum() / mass)
    moved = ndimage.shift(field, shift, order=1, mode="constant", cval=0.0)
    return np.clip(moved, 0.0, 1.0).astype(np.float32)
