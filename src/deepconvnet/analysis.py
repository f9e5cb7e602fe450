"""Looking at what a trained network does: accuracy, per-class accuracy, confusion.

Pure functions over predictions and labels, so they serve the trainer, `evaluate`, ensembles and the
tests alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np


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
