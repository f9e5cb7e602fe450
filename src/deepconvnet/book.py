"""Importing the book's published weights (``deep_convnet_params.pkl``), restricted unpickling.

The book saves DeepConvNet's parameters with :mod:`pickle`: a dict of float64 arrays ``W1``..``W8``,
``b1``..``b8`` (conv weights (out, in, kh, kw), affine weights (in, out)). Unpickling runs whatever
callables the file names, so :class:`BookUnpickler` admits only what rebuilds NumPy arrays, dtypes
(not NumPy scalars: a parameter file holds none, and ``scalar`` copies whatever bytes it is
given); any other global (``os.system``, a custom class, ...) is refused before it is loaded.
This module is the only place in deepconvnet where pickle appears, and it only ever reads.

The book's Dropout scales activations by ``1 - ratio`` at test time, so the model built for these
weights uses dropout mode ``"book"``. The weights keep float64 by default, the book's arithmetic:
measured on the MNIST test set, float64 and float32 both classify 9,797/10,000 correctly with
identical predictions, but the closest call has a top-two logit margin of 4.0e-5 while float32
moves logits by up to 4.2e-6 - only a factor of ten, so float64 is the choice that cannot flip.
"""

from __future__ import annotations

import io
import math
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from deepconvnet.errors import CheckpointError, DeepConvNetError
from deepconvnet.fileio import is_pipe, one_line

BOOK_KEYS = tuple(f"{kind}{i}" for i in range(1, 9) for kind in ("W", "b"))


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """What protocol-2 pickles call ``_codecs.encode`` for: array bytes stored as latin-1 text."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CheckpointError("refusing _codecs.encode other than str -> latin-1 bytes")
    return text.encode("latin1")


# (module, name) -> the object find_class returns. numpy 1.x pickles name numpy.core, numpy 2 names
# numpy._core; both resolve to the same functions (without importing the deprecated alias).
# Protocol 2 stores array bytes through _codecs.encode; protocol 5 rebuilds arrays with _frombuffer.
_RECONSTRUCT = np._core.multiarray._reconstruct
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,
}
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED_GLOBALS[(f"{_core}.multiarray", "_reconstruct")] = _RECONSTRUCT
    _ALLOWED_GLOBALS[(f"{_core}.numeric", "_frombuffer")] = np._core.numeric._frombuffer

# Bytes per value allowed for when sizing arrays: the widest float (longdouble), so that a float
# array of an expected shape is always built, whatever its precision.
_WIDEST_FLOAT = 16


class OversizedArray:
    """An array a pickle asked for that is larger than any expected: its shape and dtype, with no
    memory behind them, so that validation refuses it by name like any other mis-shaped array
    (``_reconstruct`` and ``ndarray`` allocate the whole shape before any data arrives)."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.shape, self.dtype = shape, dtype

    def __setstate__(self, state: Any) -> None:
        """The array's data, which there is nowhere to put: ignored."""


class _CountedArray(np.ndarray):
    """An array being unpickled: its state (shape and data, set by the pickle's BUILD) is
    counted against its unpickler's budget, as ``ndarray.__setstate__`` may copy the data (a
    big-endian dtype does), once per call on one memoised ``bytes``."""

    def __setstate__(self, state: Any) -> None:
        super().__setstate__(state)
        self.__dict__.get("unpickler", _UNCOUNTED)._spend(self.nbytes)


class _Uncounted:
    def _spend(self, nbytes: int) -> None:
        """Nothing to count against."""


_UNCOUNTED = _Uncounted()


class BookUnpickler(pickle.Unpickler):
    """An unpickler that builds only NumPy arrays, dtypes and plain containers, and no
    array of more than ``max_bytes`` (an :class:`OversizedArray` stands in for it)."""

    def __init__(
        self,
        file: Any,
        *,
        source: str = "pickle",
        max_bytes: int | None = None,
        max_total_bytes: int | None = None,
    ) -> None:
        super().__init__(file)
        self.source = source
        self.max_bytes = max_bytes
        # What every allowed call together may build: a small pickle can call one of them again
        # and again on one memoised value (1 MB of text encoded 600 times took 649 MB).
        self.budget = max_total_bytes
        self._allocators = {
            np.ndarray: self._ndarray,
            _RECONSTRUCT: self._reconstruct,
            _latin1_bytes: self._latin1_bytes,
        }

    def find_class(self, module: str, name: str) -> Any:
        try:
            found = _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"{self.source}: refusing to unpickle {module}.{name}: only NumPy arrays, dtypes "
                "and plain containers are allowed"
            ) from None
        return self._allocators.get(found, found)

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError(f"{self.source}: refusing a pickle with persistent references")

    def _ndarray(self, shape: Any, dtype: Any = float, *args: Any) -> Any:
        """``numpy.ndarray(shape, dtype, ...)``, sized before it allocates."""
        return self._oversized(shape, dtype) or np.ndarray(shape, dtype, *args)

    def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> Any:
        """NumPy's ``_reconstruct`` (how a pickled array starts), sized before it allocates."""
        if subtype is not self._allocators[np.ndarray]:
            raise CheckpointError(f"{self.source}: refusing to reconstruct {subtype!r}")
        oversized = self._oversized(shape, dtype)
        if oversized is not None:
            return oversized
        array = _RECONSTRUCT(_CountedArray, shape, dtype)
        array.unpickler = self
        return array

    def _latin1_bytes(self, text: Any, encoding: str = "latin1") -> bytes:
        """:func:`_latin1_bytes`, counted against the budget before it copies."""
        self._spend(len(text) if isinstance(text, str) else 0)
        return _latin1_bytes(text, encoding)

    def _oversized(self, shape: Any, dtype: Any) -> OversizedArray | None:
        dims = tuple(int(d) for d in (shape if isinstance(shape, (tuple, list)) else (shape,)))
        dtype = np.dtype(dtype)
        nbytes = math.prod(dims) * dtype.itemsize
        if self.max_bytes is not None and nbytes > self.max_bytes:
            return OversizedArray(dims, dtype)
        self._spend(nbytes)
        return None

    def _spend(self, nbytes: int) -> None:
        if self.budget is None:
            return
        self.budget -= nbytes
        if self.budget < 0:
            raise CheckpointError(
                f"{self.source}: the pickle builds more data than the book's parameters can be"
            )


def restricted_loads(
    data: bytes,
    *,
    source: str = "pickle",
    max_bytes: int | None = None,
    max_total_bytes: int | None = None,
) -> Any:
    """Unpickle ``data`` with :class:`BookUnpickler`; any failure is a one-line CheckpointError."""
    try:
        unpickler = BookUnpickler(
            io.BytesIO(data), source=source, max_bytes=max_bytes, max_total_bytes=max_total_bytes
        )
        return unpickler.load()
    except CheckpointError:
        raise
    except Exception as exc:  # truncated or malformed pickles raise all sorts
        raise CheckpointError(f"{source}: not a readable pickle ({one_line(exc)})") from exc


def read_book_params(path: str | os.PathLike, arch: str = "deepconvnet") -> dict[str, np.ndarray]:
    """Read the book's parameter pickle: exactly ``W1``..``W8`` and ``b1``..``b8``, float arrays
    of the shapes architecture ``arch`` needs (no array larger than those is even allocated)."""
    path = Path(path)
    shapes = book_shapes(arch)
    largest = max(math.prod(shape) for shape in shapes.values())
    values = sum(map(math.prod, shapes.values())) * _WIDEST_FLOAT
    data = _read_at_most(path, values + _SLACK)
    if data[:1] not in PICKLED_DICT_STARTS:  # a PNG read as opcodes: "persistent references"
        raise CheckpointError(f"{path}: not a pickle (the book's parameters are a pickled dict)")
    # Each array is built once and, in a protocol-2 pickle, its bytes decoded once more.
    params = restricted_loads(
        data,
        source=str(path),
        max_bytes=largest * _WIDEST_FLOAT,
        max_total_bytes=2 * values + _SLACK,
    )
    return _validated(params, path, shapes, arch)


# How a pickled dict can begin: protocol 2 or later's PROTO; in protocols 0 and 1 a MARK, an
# EMPTY_DICT, or a GLOBAL (a dict subclass such as OrderedDict).
PICKLED_DICT_STARTS = (pickle.PROTO, pickle.MARK, pickle.EMPTY_DICT, pickle.GLOBAL)
_SLACK = 1 << 20  # bytes a pickle may hold beyond its arrays' values (opcodes, names, shapes)


def _read_at_most(path: Path, limit: int) -> bytes:
    """The file's bytes, refused unread beyond ``limit``: the parameters of the architecture at
    their widest float plus :data:`_SLACK`. (Without a limit ``/dev/zero`` never finished.)"""
    if is_pipe(path):
        raise CheckpointError(f"{path}: a FIFO or socket, not a file")
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if len(data) > limit:
        raise CheckpointError(
            f"{path}: larger than the book's parameters can be ({limit:,} bytes at most)"
        )
    return data


def _validated(
    params: Any, path: Path, shapes: dict[str, tuple[int, ...]], arch: str
) -> dict[str, np.ndarray]:
    """The book's arrays, each checked in type, dtype and shape before any value is read."""
    if not isinstance(params, dict):
        kind = "an array" if isinstance(params, np.ndarray) else type(params).__name__
        raise CheckpointError(f"{path}: expected a dict of arrays, got {kind}")
    keys = set(params)
    if keys != set(BOOK_KEYS):
        missing = sorted(set(BOOK_KEYS) - keys, key=str)
        extra = sorted(keys - set(BOOK_KEYS), key=str)
        raise CheckpointError(
            f"{path}: not the book's DeepConvNet parameters (missing {missing or 'none'}, "
            f"unexpected {extra or 'none'})"
        )
    for key in BOOK_KEYS:
        value = params[key]
        if not isinstance(value, (np.ndarray, OversizedArray)) or value.dtype.kind != "f":
            kind = value.dtype if hasattr(value, "dtype") else type(value).__name__
            raise CheckpointError(f"{path}: {key} must be a float array, got {kind}")
    _check_shapes(params, shapes, arch, str(path))
    for key in BOOK_KEYS:
        if not np.isfinite(params[key]).all():
            raise CheckpointError(f"{path}: {key} holds NaN or infinite values")
    return {key: np.asarray(params[key]).view(np.ndarray) for key in BOOK_KEYS}


def _check_shapes(
    params: dict[str, Any], shapes: dict[str, tuple[int, ...]], arch: str, source: str
) -> None:
    for key in BOOK_KEYS:
        if params[key].shape != shapes[key]:
            raise CheckpointError(
                f"{source}: {key} has shape {params[key].shape}, architecture {arch!r} "
                f"expects {shapes[key]}"
            )


def book_shapes(arch: str = "deepconvnet") -> dict[str, tuple[int, ...]]:
    """The shape of each of ``W1``..``b8`` that architecture ``arch`` holds."""
    model = _empty_model(arch, np.float64)
    return {key: model.array(name).shape for key, name in _book_slots(model, arch, arch).items()}


def _empty_model(arch: str, dtype: np.dtype | type) -> Any:
    from deepconvnet.models import build_model

    return build_model(arch, rng=np.random.default_rng(0), dtype=dtype, dropout_mode="book")


def _book_slots(model: Any, arch: str, source: str) -> dict[str, str]:
    """Book key -> the model's parameter: ``W1``, ``b1``, ``W2``, ... fill the weighted layers in
    order."""
    weighted = [i for i, layer in enumerate(model.layers) if "W" in layer.params]
    if len(weighted) != len(BOOK_KEYS) // 2:
        raise CheckpointError(
            f"{source}: architecture {arch!r} has {len(weighted)} weighted layers, the book's has "
            f"{len(BOOK_KEYS) // 2}"
        )
    return {
        f"{name}{number}": f"{index}.{name}"
        for number, index in enumerate(weighted, start=1)
        for name in ("W", "b")
    }


def book_model(
    params: dict[str, np.ndarray],
    *,
    arch: str = "deepconvnet",
    dtype: np.dtype | type = np.float64,
    source: str = "book parameters",
) -> Any:
    """A model of architecture ``arch`` (dropout mode "book") holding the book's parameters.

    The weighted layers take ``W1``, ``b1``, ``W2``, ... in order; every shape must match.
    """
    model = _empty_model(arch, dtype)
    slots = _book_slots(model, arch, source)
    _check_shapes(
        params, {key: model.array(name).shape for key, name in slots.items()}, arch, source
    )
    for key, name in slots.items():
        with np.errstate(over="ignore"):
            model.array(name)[...] = params[key]
        if not np.isfinite(model.array(name)).all():  # finite in float64, beyond float32
            raise CheckpointError(f"{source}: {key} holds values beyond {np.dtype(dtype).name}")
    return model


def import_book(
    pkl: str | os.PathLike,
    out: str | os.PathLike,
    *,
    arch: str = "deepconvnet",
    dtype: np.dtype | type = np.float64,
    overwrite: bool = False,
) -> Path:
    """Convert the book's pickle into a deepconvnet checkpoint; returns the ``model.npz`` path.

    ``out`` is a ``.npz`` file or a directory (then ``out/model.npz``). An existing file is
    replaced only with ``overwrite``: ``--out`` given a run directory would otherwise swap its
    trained model for the book's under a config.json and results.json that describe another.
    """
    from deepconvnet.checkpoint import save_model

    as_dir = str(out).endswith(("/", os.sep))  # Path drops the slash that says "a directory"
    out = Path(out)
    path = out if out.suffix.lower() == ".npz" and not as_dir else out / "model.npz"
    if path.exists() and not overwrite:
        raise DeepConvNetError(f"{path} already exists (--force replaces it)")
    params = read_book_params(pkl, arch)
    model = book_model(params, arch=arch, dtype=dtype, source=str(pkl))
    metadata = {
        "source": "book",
        "imported_from": Path(pkl).name,
        "dtype": np.dtype(dtype).name,
        "dataset": "mnist",
    }
    save_model(path, model, metadata=metadata)
    return path
