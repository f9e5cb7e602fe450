"""Convolution and pooling kernels: ``reference`` (NCHW, the book's im2col) and ``fast`` (NHWC).

Both modules implement the same four functions (see :mod:`deepconvnet.kernels.reference`). Layers
pick one by their layout through :func:`for_layout`; the fast module is imported lazily so the
engine works (on the reference kernels) wherever the fast one is missing or broken.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from deepconvnet.errors import DeepConvNetError
from deepconvnet.kernels import reference

LAYOUTS = ("NCHW", "NHWC")

_FAST_MODULE = "deepconvnet.kernels.fast"


def load_fast() -> ModuleType:
    """The fast NHWC kernels, or a one-line DeepConvNetError saying why they cannot be used."""
    try:
        return importlib.import_module(_FAST_MODULE)
    except ImportError as exc:
        raise DeepConvNetError(
            f"the fast kernels are unavailable ({_FAST_MODULE}: {exc}); use the 'reference' backend"
        ) from exc


def fast_available() -> bool:
    """Whether :mod:`deepconvnet.kernels.fast` imports."""
    try:
        load_fast()
    except DeepConvNetError:
        return False
    return True


def for_layout(layout: str) -> ModuleType:
    """The kernel module for a layout: NCHW -> reference, NHWC -> fast."""
    if layout == "NCHW":
        return reference
    if layout == "NHWC":
        return load_fast()
    raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
