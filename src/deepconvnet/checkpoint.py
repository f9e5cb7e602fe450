"""``model.npz``: a model's parameters and buffers plus the JSON spec that rebuilds it.

Layout of the file (plain npz, no pickle): ``"__spec__"`` (the model's spec as JSON),
``"__meta__"`` (free-form JSON metadata), then every parameter and buffer under its flat name
(``"0.W"``, ``"3.running_mean"`` ...). Saving then loading round-trips every array bit-exactly.
Every problem with a file raises :class:`CheckpointError` with one line naming the file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from deepconvnet.errors import CheckpointError, DeepConvNetError
from deepconvnet.fileio import array_to_json, atomic_save_npz, json_to_array, load_npz
from deepconvnet.models import Sequential, default_backend

MODEL_FILE = "model.npz"
SPEC_KEY = "__spec__"
META_KEY = "__meta__"
STATE_KEY = "__state__"  # a training checkpoint's resume state (train.py), absent from a model


def resolve_model_path(path: str | os.PathLike) -> Path:
    """``path`` itself if it is a file; ``path/model.npz`` for a run directory."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    return path


def save_model(
    path: str | os.PathLike, model: Sequential, metadata: dict[str, Any] | None = None
) -> Path:
    """Atomically write ``model`` (spec, metadata, parameters, buffers) to ``path``."""
    arrays: dict[str, np.ndarray] = {
        SPEC_KEY: json_to_array(model.spec()),
        META_KEY: json_to_array(metadata or {}),
    }
    arrays.update(model.params())
    arrays.update(model.buffers())
    return atomic_save_npz(path, arrays)


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a model file or training checkpoint; unreadable is a CheckpointError."""
    try:
        return load_npz(path)
    except DeepConvNetError as exc:
        raise CheckpointError(str(exc)) from exc


def read_model_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a model file; a training checkpoint given instead is a CheckpointError."""
    arrays = read_arrays(path)
    if STATE_KEY in arrays:  # its arrays are named model/..., so it would be "missing '0.W'"
        raise CheckpointError(
            f"{path}: a training checkpoint (what --resume reads), not a model file; "
            "give its run directory or its model.npz"
        )
    return arrays


def parameter_digest(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of the parameters and buffers in a model file (a run directory or its
    ``model.npz``): their names, dtypes, shapes and bytes, not the spec, the metadata or the zip
    container. Two runs that trained bit for bit alike have the same digest wherever and
    whenever they ran, so "the same trajectory" is checked from the files, not inferred from
    equal accuracies."""
    path = resolve_model_path(path)
    arrays = read_model_arrays(path)
    digest = hashlib.sha256()
    for name in sorted(set(arrays) - {SPEC_KEY, META_KEY}):
        value = np.ascontiguousarray(arrays[name])
        digest.update(f"{name} {value.dtype.str} {value.shape}\n".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def decode_entry(
    path: Path, arrays: dict[str, np.ndarray], key: str, kind: str = "deepconvnet model file"
) -> Any:
    """The JSON stored in ``arrays[key]``; absent or undecodable is a CheckpointError."""
    if key not in arrays:
        raise CheckpointError(f"{path}: no {key} entry (not a {kind})")
    try:
        return array_to_json(arrays[key])
    except (ValueError, TypeError, IndexError, RecursionError) as exc:
        raise CheckpointError(f"{path}: unreadable {key} ({exc})") from exc


def checked_array(
    path: Path,
    arrays: dict[str, np.ndarray],
    key: str,
    shape: tuple[int, ...],
    dtype: np.dtype | type | None = None,
) -> np.ndarray:
    """``arrays[key]`` (cast to ``dtype`` when given) if it is a finite float array of ``shape``,
    else a CheckpointError naming the entry: what every stored parameter must be before it is
    copied into a model. Finiteness is judged after the cast, as a finite float64 value can
    overflow float32."""
    value = arrays.get(key)
    if value is None:
        raise CheckpointError(f"{path}: array {key!r} is missing")
    if value.shape != tuple(shape):
        raise CheckpointError(
            f"{path}: array {key!r} has shape {value.shape}, the model expects {tuple(shape)}"
        )
    if not np.issubdtype(value.dtype, np.floating):
        raise CheckpointError(f"{path}: array {key!r} has non-float dtype {value.dtype}")
    if dtype is not None:
        with np.errstate(over="ignore"):
            value = value.astype(dtype)
    if not np.all(np.isfinite(value)):
        where = f" in {np.dtype(dtype).name}" if dtype is not None else ""
        raise CheckpointError(f"{path}: array {key!r} holds non-finite values{where}")
    return value


# Buffers that are variances: a negative one makes every prediction NaN.
NON_NEGATIVE_BUFFERS = ("running_var",)


def restore_arrays(
    path: Path, arrays: dict[str, np.ndarray], targets: dict[str, np.ndarray], prefix: str = ""
) -> None:
    """Copy ``arrays[prefix + name]`` into every ``targets[name]``, each checked first (see
    :func:`checked_array`; a variance must also be >= 0): a damaged entry is a CheckpointError
    naming it, never a model that predicts NaN."""
    for name, target in targets.items():
        key = prefix + name
        value = checked_array(path, arrays, key, target.shape, target.dtype)
        if name.rpartition(".")[2] in NON_NEGATIVE_BUFFERS and np.any(value < 0):
            raise CheckpointError(f"{path}: array {key!r} is a variance but holds negative values")
        target[...] = value


def load_model(
    path: str | os.PathLike, rng: np.random.Generator | None = None, backend: str | None = None
) -> Sequential:
    """Rebuild the model stored at ``path`` (a ``model.npz`` or a run directory holding one), on
    ``backend`` (default: the fast kernels when they load, as for a model that is built)."""
    path = resolve_model_path(path)
    arrays = read_model_arrays(path)
    spec = decode_entry(path, arrays, SPEC_KEY)
    try:
        model = Sequential.from_spec(  # every array is overwritten below
            spec, rng=rng, initialize=False, backend=backend or default_backend()
        )
    except DeepConvNetError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    expected = {**model.params(), **model.buffers()}
    stored = {k: v for k, v in arrays.items() if k not in (SPEC_KEY, META_KEY)}
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    if missing:
        raise CheckpointError(f"{path}: missing array {missing[0]!r} ({len(missing)} missing)")
    if extra:
        raise CheckpointError(f"{path}: unexpected array {extra[0]!r} ({len(extra)} extra)")
    restore_arrays(path, stored, expected)
    return model


def load_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata dict saved with the model (``{}`` when none was given)."""
    path = resolve_model_path(path)
    meta = decode_entry(path, read_arrays(path), META_KEY)
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: {META_KEY} is not a JSON object")
    return meta


def check_model_fits(
    model: Any,
    image_shape: tuple[int, ...],
    source: str,
    *,
    name: str | os.PathLike = "model",
    classes: int | None = None,
) -> None:
    """Refuse a model whose per-image input shape (C, H, W) is not ``image_shape``, or whose
    number of outputs is not ``classes`` (when given).

    Called wherever a loaded model meets data (a dataset, prepared digits), so that a model of
    another input (say 3 channels) or another label set (12 outputs for 10 digits: an IndexError
    in the confusion matrix; 5 outputs: a silently meaningless one) is a one-line CheckpointError
    naming the model and the data. ``source`` names the data, e.g. "the mnist test images". What
    a model does not declare (``input_shape``, ``output_shapes``) is not checked.
    """
    expected = getattr(model, "input_shape", None)
    if expected is not None and tuple(expected) != tuple(image_shape):
        raise CheckpointError(
            f"{name}: the model expects input of shape {tuple(expected)} (C, H, W), but {source} "
            f"are {tuple(image_shape)}"
        )
    if classes is None or not hasattr(model, "output_shapes"):
        return
    outputs = model.output_shapes()[-1]
    if tuple(outputs) != (classes,):
        raise CheckpointError(
            f"{name}: the model has outputs of shape {tuple(outputs)}, but {source} have "
            f"{classes} classes"
        )
