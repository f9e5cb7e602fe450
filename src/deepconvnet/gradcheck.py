"""Numerical gradient checking (central differences, float64) of single layers and whole models.

The backward passes are written by hand, so they are checked against ``(f(p+h) - f(p-h)) / 2h``
on a seeded random sample of entries of every parameter. Dropout masks are held fixed so the
network is one deterministic function. The relative error of an entry is
``|a - n| / max(|a| + |n|, floor)`` with ``floor = resolution / TOLERANCE``: ``resolution``
(:func:`resolution`) is the smallest gradient error a difference quotient of ``f`` can resolve
in float64. Gradients that agree to within it (both zero, say a bias feeding BatchNorm) read as
agreeing to TOLERANCE instead of as round-off over round-off (about 1); any larger difference is
still measured relative to the gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from deepconvnet.layers import Dropout, Layer
from deepconvnet.models import Sequential

EPS = 1e-5
TOLERANCE = 1e-6
STABLE = 1e-7
MAX_ROUNDS = 4
ROUNDOFF = 10  # f's float64 error in units of eps * |f|: up to 3 measured on deepconvnet-bn


def relative_error(
    analytic: np.ndarray, numeric: np.ndarray, floor: float = np.finfo(np.float64).tiny
) -> np.ndarray:
    """|a - n| / max(|a| + |n|, floor), element-wise (the default floor only avoids 0 / 0)."""
    a, n = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    return np.abs(a - n) / np.maximum(np.abs(a) + np.abs(n), floor)


def resolution(scale: float, h: float) -> float:
    """Round-off in ``(f(p+h) - f(p-h)) / 2h`` when each ``f`` is off by ROUNDOFF * eps * scale.

    ``scale`` is the size of ``f`` (or of the terms it sums). Gradient errors below this cannot
    be told from float64 noise, whatever the backward pass does.
    """
    return float(ROUNDOFF * np.finfo(np.float64).eps * scale / h)


def numerical_gradient(
    f: Callable[[], float],
    arr: np.ndarray,
    indices: np.ndarray,
    eps: float = EPS,
    noise: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Central differences of ``f()`` w.r.t. ``arr.flat[indices]``, perturbing ``arr`` in place.

    Returns ``(gradient, unstable)``. Each entry is estimated with steps ``eps`` and ``eps / 2``;
    ``unstable`` marks entries where the two disagree by more than STABLE (relative) and more
    than ``noise`` (absolute, the round-off): a ReLU or max-pool switched inside the step (a
    kink, where no derivative exists). Those entries cannot be checked to 1e-6 and are skipped.
    """
    flat = arr.reshape(-1)
    if not np.shares_memory(flat, arr):
        raise ValueError("numerical_gradient needs a contiguous array")
    grad, unstable = np.empty(len(indices)), np.zeros(len(indices), dtype=bool)
    for j, i in enumerate(indices):
        coarse, fine = (_central(f, flat, int(i), h) for h in (eps, eps / 2))
        grad[j] = fine
        unstable[j] = abs(coarse - fine) > max(STABLE * (abs(coarse) + abs(fine)), noise)
    return grad, unstable


def _central(f: Callable[[], float], flat: np.ndarray, i: int, h: float) -> float:
    old = flat[i]
    flat[i] = old + h
    f_plus = f()
    flat[i] = old - h
    f_minus = f()
    flat[i] = old
    return (f_plus - f_minus) / (2 * h)


def check_layer(
    layer: Layer,
    x: np.ndarray,
    rng: np.random.Generator,
    train: bool = True,
    n_samples: int = 30,
    eps: float = EPS,
    tolerance: float = TOLERANCE,
) -> dict:
    """Check ``layer``'s backward against central differences of ``sum(forward(x) * r)``.

    ``r`` is a fixed random tensor (so every output entry matters). Covers the input and every
    parameter; ``layer`` and ``x`` should be float64.
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    if isinstance(layer, Dropout) and train:
        layer.forward(x, train=True)
        layer.hold_mask()
    r = rng.standard_normal(layer.forward(x, train=train).shape)

    def f() -> float:
        return float(np.sum(layer.forward(x, train=train) * r))

    scale = float(np.sum(np.abs(layer.forward(x, train=train) * r)))  # terms f sums
    dx = layer.backward(r)
    targets = {"x": (x, dx)}
    targets.update({k: (layer.params[k], layer.grads[k]) for k in layer.params})
    return _compare(targets, f, rng, n_samples, eps, resolution(scale, eps / 2), tolerance)


def check_model(
    model: Sequential,
    x: np.ndarray,
    t: np.ndarray,
    rng: np.random.Generator,
    n_samples: int = 10,
    eps: float = EPS,
    include_input: bool = False,
    tolerance: float = TOLERANCE,
) -> dict:
    """Check a whole model's backward (train mode, dropout masks fixed) on the batch ``(x, t)``.

    Use a float64 model (``model.copy(np.float64)``).
    """
    model.loss(x, t, train=True)  # draw the dropout masks, then freeze them
    for layer in model.dropout_layers():
        layer.hold_mask()
    try:

        def f() -> float:
            return model.loss(x, t, train=True)

        noise = resolution(abs(f()), eps / 2)
        dx = model.backward()
        targets = {k: (model.params()[k], g) for k, g in model.grads().items()}
        if include_input:
            x = np.ascontiguousarray(x, dtype=model.dtype)
            targets["x"] = (x, dx)
        return _compare(targets, f, rng, n_samples, eps, noise, tolerance)
    finally:
        for layer in model.dropout_layers():
            layer.release_mask()


def _compare(
    targets: dict[str, tuple[np.ndarray, np.ndarray]],
    f: Callable[[], float],
    rng: np.random.Generator,
    n_samples: int,
    eps: float,
    noise: float,
    tolerance: float,
) -> dict:
    """Check ``n_samples`` stable entries of every target, drawn at random (seeded).

    ``noise`` is the resolution of the fine step; ``noise / tolerance`` floors the relative
    error's denominator (module docstring). Candidates are drawn in rounds until enough stable
    entries are found or ``MAX_ROUNDS`` rounds have passed; if none is stable, the unstable ones
    are reported (they may fail).
    """
    analytic = {name: np.array(g, dtype=np.float64, copy=True) for name, (_, g) in targets.items()}
    floor = noise / tolerance
    per_parameter = {}
    for name, (arr, _) in targets.items():
        candidates = rng.permutation(arr.size)
        stable_errors, unstable_errors = [], []
        for start in range(0, min(arr.size, MAX_ROUNDS * n_samples), n_samples):
            idx = candidates[start : start + n_samples]
            numeric, unstable = numerical_gradient(f, arr, idx, eps, noise)
            errors = relative_error(analytic[name].reshape(-1)[idx], numeric, floor)
            stable_errors += list(errors[~unstable])
            unstable_errors += list(errors[unstable])
            if len(stable_errors) >= n_samples:
                break
        errors = stable_errors or unstable_errors
        per_parameter[name] = float(max(errors)) if errors else 0.0
    return {
        "max_relative_error": max(per_parameter.values(), default=0.0),
        "per_parameter": per_parameter,
    }
