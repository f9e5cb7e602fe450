"""Using a trained network on users' digits: the classifier behind the CLI and the web app.

:class:`DigitClassifier` is the small interface the server and ``predict`` share: 28x28 digits in,
probabilities out. It wraps anything with ``predict_proba(x NCHW, batch_size)`` (a
:class:`~deepconvnet.models.Sequential`) behind a lock, because layers keep per-call caches on
themselves and the web server answers requests from several threads. The FastAPI app lives in
:mod:`deepconvnet.serve.app` (imported only when serving).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from deepconvnet.checkpoint import check_model_fits, load_model, resolve_model_path
from deepconvnet.errors import CheckpointError
from deepconvnet.fileio import all_or_nothing
from deepconvnet.images import MAX_PIXELS, SIZE, load_digit, save_digit_png


class ProbabilityModel(Protocol):
    def predict_proba(self, x: np.ndarray, batch_size: int = ...) -> np.ndarray: ...


class DigitClassifier:
    """28x28 digits (white on black, [0, 1]) -> class probabilities, one forward at a time."""

    def __init__(self, model: ProbabilityModel, *, name: str = "model") -> None:
        check_model_fits(model, (1, SIZE, SIZE), "prepared digits", name=name, classes=10)
        self.model = model
        self.name = name
        self._lock = threading.Lock()

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> DigitClassifier:
        """Load ``RUN_DIR`` or ``model.npz`` (raises a one-line CheckpointError if unusable).

        A model trained on another dataset is refused: images are prepared as MNIST's digits
        were, and the answer is a digit, so a Fashion-MNIST model's would be meaningless."""
        from deepconvnet.train import trained_on

        model_path = resolve_model_path(path)
        model = load_model(model_path)
        dataset = trained_on(model_path)
        if dataset not in (None, "mnist"):
            raise CheckpointError(
                f"{model_path}: trained on {dataset}; predict and serve read handwritten digits, "
                "for a model trained on mnist"
            )
        return cls(model, name=str(model_path))

    def probabilities(self, digits: np.ndarray) -> np.ndarray:
        """(N, 28, 28) -> float64 (N, classes), rows summing to 1."""
        digits = np.asarray(digits)
        if digits.ndim == 2:
            digits = digits[None]
        x = digits[:, None].astype(getattr(self.model, "dtype", np.float32), copy=False)
        with self._lock, np.errstate(all="ignore"):
            proba = self.model.predict_proba(x, batch_size=256)
        if not np.isfinite(proba).all():  # finite weights whose products overflow
            raise CheckpointError(f"{self.name}: the model's outputs are not finite numbers")
        return np.asarray(proba, dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        """What /healthz reports about the model."""
        info: dict[str, Any] = {"model": self.name}
        if hasattr(self.model, "num_params"):
            info["parameters"] = int(self.model.num_params())
        if hasattr(self.model, "dtype"):
            info["dtype"] = np.dtype(self.model.dtype).name
        return info


@dataclass(frozen=True)
class Prediction:
    """One image's result: the label, every probability, and the 28x28 input the network saw."""

    file: str
    label: int
    probabilities: list[float]
    input: np.ndarray

    def top(self, k: int) -> list[tuple[int, float]]:
        order = np.argsort(self.probabilities, kind="stable")[::-1][:k]
        return [(int(i), float(self.probabilities[i])) for i in order]

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "label": self.label, "probabilities": self.probabilities}


def predict_digit(classifier: DigitClassifier, digit: np.ndarray, *, file: str = "") -> Prediction:
    """Classify one prepared 28x28 digit."""
    proba = classifier.probabilities(digit[None])[0]
    return Prediction(
        file=file,
        label=int(proba.argmax()),
        probabilities=[float(p) for p in proba],
        input=np.asarray(digit, dtype=np.float32),
    )


def predict_files(
    classifier: DigitClassifier,
    paths: list[str | os.PathLike],
    *,
    save_dir: str | os.PathLike | None = None,
    max_pixels: int = MAX_PIXELS,
) -> list[Prediction]:
    """Read, prepare and classify image files; optionally save each prepared 28x28 as PNG.

    Every file is read and prepared before any is classified, so a bad file fails fast.
    """
    digits = [load_digit(path, max_pixels=max_pixels) for path in paths]
    if not digits:
        return []
    proba = classifier.probabilities(np.stack(digits))
    predictions = [
        Prediction(str(path), int(p.argmax()), [float(v) for v in p], digit)
        for path, p, digit in zip(paths, proba, digits, strict=True)
    ]
    if save_dir is not None:
        with all_or_nothing():  # every prepared input saved, or none
            for index, prediction in enumerate(predictions):
                path = Path(save_dir) / _preprocessed_name(index, prediction.file)
                save_digit_png(path, prediction.input)
    return predictions


def _preprocessed_name(index: int, file: str) -> str:
    """``003-seven.png``: the index keeps names unique when two inputs share a stem."""
    return f"{index:03d}-{Path(file).stem or 'image'}.png"
