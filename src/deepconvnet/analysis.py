"""Looking at what a trained network does: accuracy, per-class accuracy, confusion, mistakes,
and what it sees.

The scoring functions (:func:`evaluate_predictions`, :func:`confusion_matrix`,
:func:`misclassified`, :func:`format_confusion`) are pure functions over predictions and labels,
so they serve the trainer, `evaluate`, ensembles and the tests alike. :func:`feature_maps` and
:func:`first_conv_weights` take a model instead: they read its layers (``feature_maps`` runs a
float64 copy, so the model itself is left as it was).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from deepconvnet.models import Sequential


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts with rows = true label, columns = predicted label."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, np.int64), np.asarray(predicted, np.int64)), 1)
    return matrix


def evaluate_predictions(
    predicted: np.ndarray, labels: np.ndarray, num_classes: int = 10
) -> dict[str, Any]:
    """The `evaluate --json` record: accuracy, counts, per-class accuracy, confusion matrix."""
    predicted = np.asarray(predicted)
    labels = np.asarray(labels)
    if predicted.shape != labels.shape:
        raise ValueError(f"{predicted.shape} predictions for {labels.shape} labels")
    confusion = confusion_matrix(predicted, labels, num_classes)
    per_class_total = confusion.sum(axis=1)
    per_class = np.divide(
        np.diag(confusion),
        per_class_total,
        out=np.zeros(num_classes),
        where=per_class_total > 0,
    )
    correct = int(np.trace(confusion))
    total = int(labels.size)
    return {
        "accuracy": correct / total if total else 0.0,
        "correct": correct,
        "total": total,
        "per_class": [float(a) for a in per_class],
        "confusion": confusion.tolist(),
    }


def format_confusion(confusion: list[list[int]], class_names: list[str] | tuple[str, ...]) -> str:
    """The confusion matrix as a fixed-width text table (rows true, columns predicted)."""
    matrix = np.asarray(confusion)
    width = max(5, len(str(matrix.max())) + 1)
    short = [name[: width - 1] for name in class_names]
    lines = ["true \\ pred".ljust(12) + "".join(s.rjust(width) for s in short) + "  accuracy"]
    for i, row in enumerate(matrix):
        total = row.sum()
        acc = f"{row[i] / total:9.4f}" if total else "        -"
        lines.append(short[i].ljust(12) + "".join(str(v).rjust(width) for v in row) + " " + acc)
    return "\n".join(lines)


def misclassified(probabilities: np.ndarray, labels: np.ndarray) -> list[dict[str, Any]]:
    """Every image whose prediction differs from its label, most confident mistake first.

    ``probabilities`` is ``(N, K)`` (softmax output), ``labels`` ``(N,)``. Each record is
    ``{"index", "label", "predicted", "probability"}`` where ``probability`` is the one the model
    gave its (wrong) prediction. Ties keep index order, so the list is deterministic.
    """
    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels)
    if probabilities.ndim != 2 or probabilities.shape[0] != labels.shape[0] or labels.ndim != 1:
        raise ValueError(f"{probabilities.shape} probabilities for {labels.shape} labels")
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probabilities[wrong, predicted[wrong]]
    order = wrong[np.argsort(-confidence, kind="stable")]
    return [
        {
            "index": int(i),
            "label": int(labels[i]),
            "predicted": int(predicted[i]),
            "probability": float(probabilities[i, predicted[i]]),
        }
        for i in order
    ]


def feature_maps(model: Sequential, image: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """What one image looks like after every convolution (with its BN/ReLU) and every pooling.

    ``image`` is ``(C, H, W)`` float. Returns ``[(label, maps (C', H', W')), ...]`` in layer
    order, e.g. ``("0.Conv 3x3 + ReLU\n16x28x28", maps)``: a convolution is shown once, after
    the BatchNormalization and ReLU that follow it. Runs on a float64 reference-backend copy so
    the caller's model (and its backend) is left as it was.
    """
    from deepconvnet.layers import BatchNormalization, Convolution, MaxPooling, ReLU

    probe = model.copy(dtype=np.float64)
    probe.set_backend("reference")
    x = np.asarray(image, dtype=np.float64)[None]
    stages: list[tuple[str, np.ndarray]] = []
    pending: str | None = None  # a convolution whose activation is not shown yet
    for i, layer in enumerate(probe.body):
        if x.ndim != 4:
            break
        previous, x = x, layer.forward(x, train=False)
        if isinstance(layer, BatchNormalization | ReLU) and pending is not None:
            pending += " + BN" if isinstance(layer, BatchNormalization) else " + ReLU"
            continue
        if pending is not None:
            stages.append((pending, previous[0]))
            pending = None
        if isinstance(layer, Convolution):
            pending = f"{i}.Conv {layer.kernel_size[0]}x{layer.kernel_size[1]}"
        elif isinstance(layer, MaxPooling):
            stages.append((f"{i}.MaxPool {layer.pool_h}x{layer.pool_w}", x[0]))
    if pending is not None and x.ndim == 4:
        stages.append((pending, x[0]))
    return [(f"{label}\n{'x'.join(map(str, maps.shape))}", maps.copy()) for label, maps in stages]


def first_conv_weights(model: Sequential) -> np.ndarray:
    """The first convolution's weights ``(F, C, kh, kw)``; a DeepConvNetError if there is none."""
    from deepconvnet.errors import DeepConvNetError
    from deepconvnet.layers import Convolution

    for layer in model.layers:
        if isinstance(layer, Convolution):
            return np.asarray(layer.params["W"])
    raise DeepConvNetError(f"model {model.name!r} has no convolution layer")
