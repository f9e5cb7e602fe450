"""Data augmentation: random geometric and pixel transforms of image batches.

Chapter 8.1.2 of the book names augmentation as one of the tricks of the best MNIST entries. Every
transform here is a callable ``(x, rng) -> x`` on a float32 batch ``(N, C, H, W)`` in ``[0, 1]``;
every random draw comes from the :class:`numpy.random.Generator` passed in, and every transform is
vectorised over the batch (no Python loop over images), because augmentation runs in the loader's
background thread and must cost far less than a training step. Labels are never seen, so they are
never changed.

Geometric transforms are *warps*: they say, for each output pixel, where in the input to sample.
:class:`Compose` fuses a run of warps (flip, crop, rotation + shift + scale + shear, and one elastic
distortion at the end of the run) into a single sampling grid per image, so an augmented image is
interpolated once, however many geometric transforms it went through — one vectorised bilinear
gather for the whole batch (:func:`sample`; :func:`sample_reference` is the same with scipy).

Flips change what a digit means (a mirrored 2 is no 2), so they are available for other data but
left out of every preset; the trainer may warn when a flip is asked for on a digit dataset.

Specs (``parse_augment``): comma-separated items, each ``key=value``, a preset name, or the bare
word ``elastic``::

    rotate=DEG      rotation, uniform in ±DEG degrees
    shift=F         translation, uniform in ±F of the image size, each axis
    scale=F         zoom factor, uniform in [1-F, 1+F]
    shear=DEG       horizontal shear angle, uniform in ±DEG degrees
    crop=PAD        pad by PAD zero pixels (1 to 14), then crop a random window of the original size
    flip=h|v|hv     mirror left-right (h) and/or up-down (v), each with probability 1/2
    elastic[=A:S]   Simard et al. (2003) elastic distortion, alpha A in [0, 1000], sigma S in
                    [0.1, 28] pixels (default 34:4)
    erase=P         random erasing (Zhong et al. 2017) with probability P per image

Presets: ``standard`` = ``rotate=15,shift=0.1,scale=0.15`` (the recipe of the 15-CNN MNIST
ensemble); ``elastic`` = ``rotate=5,shift=0.05,scale=0.05,elastic=34:4``; ``none`` = no
augmentation. Presets combine with items: ``standard,erase=0.5``. The word ``elastic`` alone is
its preset; inside a list it is the distortion item alone (``rotate=5,elastic`` is
``rotate=5,elastic=34:4``), as the preset's own rotation would clash with the list's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from deepconvnet.errors import DeepConvNetError
from deepconvnet.schedules import number_text, whole_number

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]

SIMARD_ALPHA = 34.0
SIMARD_SIGMA = 4.0
# Bounds of elastic=ALPHA:SIGMA, for 28x28 images (MNIST, Fashion-MNIST). The smoothed field has a
# standard deviation of about 0.16/sigma per unit alpha (measured: 0.037 at sigma 4), so Simard's
# 34:4 moves pixels by ~1.3 px. Past alpha 1000 a pixel moves ~37 px at sigma 4, beyond the image;
# yet at sigma 28 alpha 1000 still moves them ~3 px, so the bound leaves every sigma usable. Sigma
# past 28 (the image size) makes the field a near-constant shift (shift= does that); below 0.125
# the filter's radius is 0, so smaller sigmas all give the same unsmoothed noise. The bounds also
# keep gaussian_matrix finite: 1e308 overflowed, 1e-300 filled it with warnings.
ELASTIC_ALPHA = (0.0, 1000.0)
ELASTIC_SIGMA = (0.1, 28.0)
# crop=PAD shifts by up to PAD whole pixels: 14 is half a 28-pixel image, the bound of shift=0.5;
# a pad past the image size blanks images, and a huge one overflowed the random integers.
CROP_MAX = 14


# --------------------------------------------------------------------------- sampling


def identity_grid(n: int, height: int, width: int) -> np.ndarray:
    """Homogeneous pixel coordinates ``(n, 3, H*W)``: rows ``(row, col, 1)`` of every pixel."""
    rows, cols = np.meshgrid(
        np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij"
    )
    grid = np.stack([rows.ravel(), cols.ravel(), np.ones(height * width)])
    return np.broadcast_to(grid, (n, 3, height * width))


def sample_reference(x: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Bilinear sampling, zero outside, with scipy: the readable definition :func:`sample` meets.

    ``x`` is ``(N, C, H, W)``; ``coords`` is ``(2, N, H, W)`` (source row, source column of every
    output pixel), shared by the channels of an image.
    """
    out = np.empty(x.shape, dtype=np.float32)
    for i, image in enumerate(np.asarray(x, dtype=np.float32)):
        for ch, plane in enumerate(image):
            out[i, ch] = ndimage.map_coordinates(
                plane, coords[:, i], order=1, mode="grid-constant", output=np.float32
            )
    return np.clip(out, 0.0, 1.0, out=out)


def sample(x: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Bilinear sampling of each image of ``x`` at its own coordinates, zero outside.

    Same contract as :func:`sample_reference`, for the whole batch at once: the four neighbours of
    every output pixel are gathered from the images framed by one zero pixel, and weighted. Plain
    NumPy releases the GIL, so this runs beside a training step in the loader's thread (scipy's
    ``map_coordinates`` took 5 ms per batch of 100 and measured 14 % more wall time per epoch).
    """
    n, c, h, w = x.shape
    framed = np.zeros((n, c, h + 2, w + 2), dtype=np.float32)
    framed[:, :, 1:-1, 1:-1] = x
    rows, cols = np.asarray(coords[0], np.float32), np.asarray(coords[1], np.float32)
    top_row, left_col = np.floor(rows), np.floor(cols)
    # Fractional offsets, shaped to broadcast over the channels.
    fr, fc = (rows - top_row)[:, None], (cols - left_col)[:, None]
    # Frame index of each neighbour; anything outside the image reads the zero frame.
    r = np.clip(top_row, -2, h).astype(np.int32)  # clipped first: huge coordinates stay finite
    col = np.clip(left_col, -2, w).astype(np.int32)
    r0, r1 = np.clip(r, -1, h) + 1, np.clip(r + 1, -1, h) + 1
    c0, c1 = np.clip(col, -1, w) + 1, np.clip(col + 1, -1, w) + 1
    base = (np.arange(n * c, dtype=np.int32) * (h + 2) * (w + 2)).reshape(n, c, 1, 1)
    flat = framed.reshape(-1)

    def at(row: np.ndarray, column: np.ndarray) -> np.ndarray:
        return np.take(flat, base + (row * (w + 2) + column)[:, None])

    top = at(r0, c0) * (1 - fc) + at(r0, c1) * fc
    bottom = at(r1, c0) * (1 - fc) + at(r1, c1) * fc
    out = top * (1 - fr) + bottom * fr
    return np.clip(out, 0.0, 1.0, out=out)


def warp_affine(x: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Warp each image by its ``(3, 3)`` matrix mapping output ``(row, col, 1)`` to input coords."""
    n, _, h, w = x.shape
    coords = matrices[:, :2] @ identity_grid(n, h, w)  # (n, 2, H*W)
    return sample(x, coords.transpose(1, 0, 2).reshape(2, n, h, w))


def affine_matrices(
    height: int,
    width: int,
    angle_deg: np.ndarray | float = 0.0,
    scale: np.ndarray | float = 1.0,
    shear_deg: np.ndarray | float = 0.0,
    shift_rows: np.ndarray | float = 0.0,
    shift_cols: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Sampling matrices ``(n, 3, 3)`` for explicit per-image affine parameters.

    The forward map (input pixel -> output pixel) shears horizontally, zooms by ``scale``,
    rotates counter-clockwise by ``angle_deg`` (as seen on screen, rows pointing down) about the
    image centre, then shifts by ``(shift_rows, shift_cols)`` pixels. Returned is its inverse,
    which is what sampling needs: for every output pixel, where to read in the input.
    """
    params = (angle_deg, scale, shear_deg, shift_rows, shift_cols)
    angle, scale, shear, d_row, d_col = np.broadcast_arrays(
        *(np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in params)
    )
    theta, phi = np.radians(angle), np.radians(shear)
    cos, sin = np.cos(theta), np.sin(theta)
    # In (row, col): a counter-clockwise turn on screen sends (0, 1) (right) to (-1, 0) (up).
    rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    shearing = np.zeros_like(rotation)
    shearing[:, 0, 0] = shearing[:, 1, 1] = 1.0
    shearing[:, 1, 0] = np.tan(phi)  # col += tan(phi) * row
    linear = rotation @ shearing * scale[:, None, None]
    centre = np.array([(height - 1) / 2, (width - 1) / 2])
    forward = np.zeros((len(angle), 3, 3))
    forward[:, :2, :2] = linear
    forward[:, :2, 2] = centre - linear @ centre + np.stack([d_row, d_col], -1)
    forward[:, 2, 2] = 1.0
    return np.linalg.inv(forward)


def gaussian_matrix(size: int, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """The ``(size, size)`` matrix of a 1-D Gaussian filter with zero padding.

    ``G @ f`` equals ``scipy.ndimage.gaussian_filter1d(f, sigma, mode='constant')``; a batched
    ``G @ F @ G.T`` smooths a whole batch of fields with two small matrix products.
    """
    radius = int(truncate * sigma + 0.5)
    offsets = np.arange(size)[:, None] - np.arange(size)[None, :]
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights[np.abs(offsets) > radius] = 0.0
    return weights / np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2).sum()


# --------------------------------------------------------------------------- transforms


class Warp:
    """A geometric transform: draws, for each image, where each output pixel samples the input.

    Linear warps give one ``(3, 3)`` matrix per image (:meth:`matrices`); a non-linear warp
    (elastic) maps the identity grid to source coordinates (:meth:`coordinates`).
    """

    linear = True

    def matrices(self, rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
        raise NotImplementedError

    def coordinates(
        self, rng: np.random.Generator, n: int, height: int, width: int
    ) -> np.ndarray:  # pragma: no cover - only non-linear warps
        raise NotImplementedError

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return Compose([self])(x, rng)


@dataclass(frozen=True)
class RandomAffine(Warp):
    """Rotation, shift, zoom and shear combined into one matrix per image."""

    rotate: float = 0.0  # degrees, ±
    shift: float = 0.0  # fraction of the image size, ±, each axis
    scale: float = 0.0  # zoom in [1 - scale, 1 + scale]
    shear: float = 0.0  # degrees, ±

    def matrices(self, rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
        return affine_matrices(
            height,
            width,
            angle_deg=rng.uniform(-self.rotate, self.rotate, n),
            scale=rng.uniform(1 - self.scale, 1 + self.scale, n),
            shear_deg=rng.uniform(-self.shear, self.shear, n),
            shift_rows=rng.uniform(-self.shift, self.shift, n) * height,
            shift_cols=rng.uniform(-self.shift, self.shift, n) * width,
        )


@dataclass(frozen=True)
class RandomCrop(Warp):
    """Pad by ``pad`` zero pixels on every side, then crop a random window of the original size.

    That is a whole-pixel shift in ``[-pad, pad]`` on each axis with zero fill, so it is a warp
    and fuses with the others.
    """

    pad: int

    def matrices(self, rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
        shifts = rng.integers(-self.pad, self.pad + 1, (2, n))
        return affine_matrices(height, width, shift_rows=shifts[0], shift_cols=shifts[1])


@dataclass(frozen=True)
class RandomFlip(Warp):
    """Mirror left-right (``"h"``) and/or up-down (``"v"``), each with probability 1/2.

    Not for digits: a mirrored digit is another symbol (or none). No preset uses it.
    """

    axes: str = "h"

    def matrices(self, rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
        flip_v = rng.random(n) < 0.5 if "v" in self.axes else np.zeros(n, bool)
        flip_h = rng.random(n) < 0.5 if "h" in self.axes else np.zeros(n, bool)
        m = np.tile(np.eye(3), (n, 1, 1))
        m[flip_v, 0, 0], m[flip_v, 0, 2] = -1.0, height - 1
        m[flip_h, 1, 1], m[flip_h, 1, 2] = -1.0, width - 1
        return m


@dataclass(frozen=True)
class Elastic(Warp):
    """Elastic distortion (Simard, Steinkraus and Platt 2003, section 2).

    Each pixel moves by a random displacement, uniform in [-1, 1] per axis, smoothed by a Gaussian
    of standard deviation ``sigma`` and scaled by ``alpha``. Fields for the whole batch are smoothed
    by two batched matrix products (a Gaussian filter with zero padding), not one filter per image.
    """

    alpha: float = SIMARD_ALPHA
    sigma: float = SIMARD_SIGMA
    linear = False

    def coordinates(self, rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
        noise = rng.uniform(-1.0, 1.0, (2, n, height, width))
        smooth_rows = gaussian_matrix(height, self.sigma)
        smooth_cols = gaussian_matrix(width, self.sigma)
        displacement = smooth_rows @ noise @ smooth_cols.T * self.alpha
        grid = (
            identity_grid(n, height, width)[:, :2].transpose(1, 0, 2).reshape(2, n, height, width)
        )
        return grid + displacement


@dataclass(frozen=True)
class RandomErasing:
    """Random erasing (Zhong et al. 2017): with probability ``p``, blank a random rectangle.

    The rectangle covers 2-33 % of the image with aspect ratio in [0.3, 3.3] and is filled with
    ``value`` (0, the background of MNIST-like data: it reads as a broken stroke).
    """

    p: float
    value: float = 0.0
    area: tuple[float, float] = (0.02, 0.33)
    aspect: tuple[float, float] = (0.3, 3.3)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, _, h, w = x.shape
        erase = rng.random(n) < self.p
        area = rng.uniform(*self.area, n) * h * w
        log_aspect = rng.uniform(math.log(self.aspect[0]), math.log(self.aspect[1]), n)
        eh = np.clip(np.rint(np.sqrt(area * np.exp(log_aspect))), 1, h).astype(int)
        ew = np.clip(np.rint(np.sqrt(area / np.exp(log_aspect))), 1, w).astype(int)
        top = (rng.random(n) * (h - eh + 1)).astype(int)
        left = (rng.random(n) * (w - ew + 1)).astype(int)
        rows, cols = np.arange(h), np.arange(w)
        in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])  # (n, h)
        in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])  # (n, w)
        mask = erase[:, None, None] & in_rows[:, :, None] & in_cols[:, None, :]
        return np.where(mask[:, None], np.float32(self.value), x).astype(np.float32, copy=False)


@dataclass(frozen=True)
class Compose:
    """Apply transforms in order; each run of warps is fused into one interpolation.

    A run is fused when only its last warp may be non-linear: the linear warps' matrices multiply,
    and the elastic field (drawn on the output grid) is mapped through them. The result is the
    image the transforms would give one by one, interpolated once instead of once per transform.
    """

    transforms: Sequence[Transform]

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for group in self._groups():
            x = self._warp(group, x, rng) if isinstance(group, list) else group(x, rng)
        return x

    def _groups(self) -> list:
        groups: list = []
        for t in self.transforms:
            if isinstance(t, Warp):
                last = groups[-1] if groups else None
                if isinstance(last, list) and all(w.linear for w in last):
                    last.append(t)
                else:
                    groups.append([t])
            else:
                groups.append(t)
        return groups

    @staticmethod
    def _warp(warps: list[Warp], x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, _, h, w = x.shape
        # Draw in the listed order so a spec's randomness does not depend on how it was fused.
        drawn = [
            w_.matrices(rng, n, h, w) if w_.linear else w_.coordinates(rng, n, h, w) for w_ in warps
        ]
        # Sampling composes backwards: applying T1 then T2 reads x at g1(g2(p)).
        matrix = np.tile(np.eye(3), (n, 1, 1))
        linear = drawn[:-1] if not warps[-1].linear else drawn
        for m in linear:
            matrix = matrix @ m
        if warps[-1].linear:
            return warp_affine(x, matrix)
        coords = drawn[-1].reshape(2, n, h * w).transpose(1, 0, 2)  # (n, 2, H*W)
        source = matrix[:, :2, :2] @ coords + matrix[:, :2, 2:]
        return sample(x, source.transpose(1, 0, 2).reshape(2, n, h, w))


def augmented_variants(
    images: np.ndarray, augment: Transform, variants: int, rng: np.random.Generator
) -> np.ndarray:
    """``variants`` augmented copies of each image: float32 ``(N, C, H, W)`` -> ``(N, V, C, H, W)``.

    All copies go through ``augment`` as one batch, as the loader would send them.
    """
    n = len(images)
    batch = np.repeat(np.asarray(images, dtype=np.float32), variants, axis=0)
    return augment(batch, rng).reshape(n, variants, *images.shape[1:])


# --------------------------------------------------------------------------- specs

PRESETS = {
    "standard": "rotate=15,shift=0.1,scale=0.15",
    "elastic": "rotate=5,shift=0.05,scale=0.05,elastic=34:4",
}
KEYS = ("rotate", "shift", "scale", "shear", "crop", "flip", "elastic", "erase")
# The --augment help of every command that takes a spec.
SPEC_HELP = (
    "comma-separated items rotate=DEG, shift=F, scale=F, shear=DEG, crop=PAD, flip=h|v|hv, "
    "elastic[=ALPHA:SIGMA], erase=P; or a preset: standard (rotate=15,shift=0.1,scale=0.15), "
    "elastic (alone: rotate=5,shift=0.05,scale=0.05,elastic=34:4; inside a list the word "
    "elastic is the distortion alone), none. Presets combine with items: standard,erase=0.5"
)


@dataclass(frozen=True)
class Augmenter:
    """A parsed augmentation spec: callable ``(x, rng) -> x`` like any transform.

    ``spec`` is the canonical string (presets expanded, keys in a fixed order) for config.json;
    ``parse_augment(a.spec)`` gives back an equal augmenter.
    """

    settings: dict = field(hash=False)
    transform: Compose = field(hash=False, compare=False)

    @property
    def spec(self) -> str:
        return ",".join(
            _format_item(key, self.settings[key]) for key in KEYS if key in self.settings
        )

    @property
    def flips(self) -> bool:
        """Whether this augmenter mirrors images (wrong for digits; the trainer may warn)."""
        return "flip" in self.settings

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if x.ndim != 4:
            raise ValueError(f"augment expects a batch (N, C, H, W), got shape {x.shape}")
        return self.transform(np.asarray(x, dtype=np.float32), rng)


def parse_augment(spec: str | None) -> Augmenter | None:
    """Parse an ``--augment`` spec; ``None``, ``""`` and ``"none"`` mean no augmentation."""
    if spec is None or spec.strip().lower() in ("", "none"):
        return None
    settings: dict = {}
    for item in _expand_presets(spec):
        key, _, value = item.partition("=")
        if key not in KEYS:
            known = ", ".join(dict.fromkeys([*KEYS, *PRESETS, "none"]))  # elastic is both
            raise DeepConvNetError(f"augment spec: unknown item {item!r} (known: {known})")
        if key in settings:
            raise DeepConvNetError(f"augment spec: {key!r} given twice in {spec!r}")
        settings[key] = _parse_value(key, value, item)
    return Augmenter(settings, build_transform(settings))


def build_transform(settings: dict) -> Compose:
    """The transform for parsed settings, in an order that lets every warp fuse into one."""
    transforms: list[Transform] = []
    if "flip" in settings:
        transforms.append(RandomFlip(settings["flip"]))
    if "crop" in settings:
        transforms.append(RandomCrop(settings["crop"]))
    affine = {k: settings[k] for k in ("rotate", "shift", "scale", "shear") if k in settings}
    if affine:
        transforms.append(RandomAffine(**affine))
    if "elastic" in settings:
        transforms.append(Elastic(*settings["elastic"]))
    if "erase" in settings:
        transforms.append(RandomErasing(settings["erase"]))
    return Compose(transforms)


def _expand_presets(spec: str) -> list[str]:
    items = []
    for raw in spec.split(","):
        item = raw.strip().lower()
        if not item:
            raise DeepConvNetError(f"augment spec: empty item in {spec!r}")
        if item == "none":
            raise DeepConvNetError(f"augment spec: 'none' cannot be combined with items: {spec!r}")
        if item in PRESETS and not (item == "elastic" and len(spec.split(",")) > 1):
            items.extend(PRESETS[item].split(","))
        else:
            items.append(item)
    return items


def _parse_value(key: str, value: str, item: str):
    def bad(why: str) -> DeepConvNetError:
        return DeepConvNetError(f"augment spec: {item!r}: {why}")

    if key == "elastic":
        return _parse_elastic(value, bad)
    if key == "flip":
        if value not in ("h", "v", "hv", "vh"):
            raise bad("expected flip=h, flip=v or flip=hv")
        return "".join(sorted(value))
    if not value:
        raise bad(f"expected {key}=VALUE")
    if key == "crop":
        pad = whole_number(value)
        if pad is None or not 1 <= pad <= CROP_MAX:
            raise bad(f"expected crop=PAD, a whole number of pixels in [1, {CROP_MAX}]")
        return pad
    number = _number(value, bad)
    limits = {
        "rotate": (0, 180, "degrees in [0, 180]"),
        "shear": (0, 60, "degrees in [0, 60]"),
        "shift": (0, 0.5, "a fraction of the image size in [0, 0.5]"),
        "scale": (0, 0.9, "a zoom fraction in [0, 0.9]"),
        "erase": (0, 1, "a probability in [0, 1]"),
    }
    low, high, what = limits[key]
    if not low <= number <= high:
        raise bad(f"expected {what}")
    return number


def _parse_elastic(value: str, bad: Callable[[str], DeepConvNetError]) -> tuple[float, float]:
    """``ALPHA:SIGMA`` (empty: Simard's 34:4), each within its bound.

    Unbounded, a huge sigma overflowed :func:`gaussian_matrix` and a huge alpha sent every pixel
    off the image (a blank picture after a page of NumPy warnings): a typo must be a spec error.
    """
    if not value:
        return (SIMARD_ALPHA, SIMARD_SIGMA)
    parts = value.split(":")
    if len(parts) != 2:
        raise bad("expected elastic=ALPHA:SIGMA, e.g. elastic=34:4")
    alpha, sigma = (_number(p, bad) for p in parts)
    for name, number, (low, high) in (
        ("alpha", alpha, ELASTIC_ALPHA),
        ("sigma", sigma, ELASTIC_SIGMA),
    ):
        if not low <= number <= high:
            raise bad(
                f"elastic {name} must be in [{low:g}, {high:g}] (Simard: 34:4), got {number:g}"
            )
    return (alpha, sigma)


def _number(text: str, bad: Callable[[str], DeepConvNetError]) -> float:
    """A finite float; ``-0`` becomes ``0``, which ``rng.uniform(0, -0)`` would reject."""
    try:
        value = float(text)
    except ValueError:
        raise bad(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise bad(f"{text!r} is not a finite number")
    return value + 0.0


def _format_item(key: str, value) -> str:
    if key == "elastic":
        return f"elastic={number_text(value[0])}:{number_text(value[1])}"
    if key in ("flip", "crop"):
        return f"{key}={value}"
    return f"{key}={number_text(value)}"
