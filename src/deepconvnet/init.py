"""Weight initialisers: He and Xavier, with the fan-in computed from the weight's shape.

Fan-in is what one output unit sums over: ``in * kh * kw`` for a conv weight ``(out, in, kh, kw)``
and ``in`` for an affine weight ``(in, out)``. Computing it from the shape (never typing it) is what
keeps the scales right when a layer's width changes. Biases start at zero.
"""

from __future__ import annotations

import math

import numpy as np

INITIALIZERS = ("he", "xavier")


def fan_in(shape: tuple[int, ...]) -> int:
    """Inputs per output unit: conv (out, in, kh, kw) -> in*kh*kw; affine (in, out) -> in.

    A fan-in below 1 is a ValueError here rather than a ZeroDivisionError in the std formulas.
    """
    if len(shape) == 4:
        fan = int(shape[1] * shape[2] * shape[3])
    elif len(shape) == 2:
        fan = int(shape[0])
    else:
        raise ValueError(f"cannot infer fan-in of a weight of shape {shape}")
    if fan < 1:
        raise ValueError(f"a weight of shape {shape} has no inputs (fan-in {fan})")
    return fan


def he_std(shape: tuple[int, ...]) -> float:
    """He et al. (for ReLU): sqrt(2 / fan_in)."""
    return math.sqrt(2.0 / fan_in(shape))


def xavier_std(shape: tuple[int, ...]) -> float:
    """Xavier Glorot, in the book's form: sqrt(1 / fan_in)."""
    return math.sqrt(1.0 / fan_in(shape))


def check_name(name: str) -> str:
    """Validate an initializer name (case-insensitive) and return its canonical form."""
    key = str(name).lower()
    if key not in INITIALIZERS:
        raise ValueError(f"unknown initializer {name!r}; expected one of {INITIALIZERS}")
    return key


def initialize(
    name: str, shape: tuple[int, ...], rng: np.random.Generator, dtype: np.dtype = np.float32
) -> np.ndarray:
    """A weight of ``shape`` drawn from N(0, std^2) with the named initializer's std."""
    std = {"he": he_std, "xavier": xavier_std}[check_name(name)](shape)
    return (rng.standard_normal(shape) * std).astype(dtype)
