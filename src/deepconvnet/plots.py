"""Every figure deepconvnet draws, in one place (matplotlib, Agg backend, no display needed).

Each public function takes plain arrays/records and a path, writes a PNG atomically and returns the
path. Figures are meant to be read at a glance: a title, labelled axes, nothing clipped.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from deepconvnet.fileio import atomic_write_bytes

DPI = 100


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Render ``fig`` to PNG, write it atomically, close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def learning_curves(history: list[dict], path: str | os.PathLike) -> Path:
    """Loss and accuracy per epoch (train, and validation when the run held some out)."""
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train loss")
    ax_loss.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    ax_acc.plot(epochs, [r["train_acc"] for r in history], "o-", label="train (dropout on)")
    if any("val_acc" in r for r in history):
        val = [(r["epoch"], r["val_acc"]) for r in history if "val_acc" in r]
        ax_acc.plot(*zip(*val, strict=True), "s-", label="validation")
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
        if epochs:
            ax.set_xticks(epochs if len(epochs) <= 20 else epochs[:: max(1, len(epochs) // 10)])
    fig.tight_layout()
    return save_figure(fig, path)


def confusion_heatmap(confusion, class_names, path: str | os.PathLike, title: str = "") -> Path:
    """The confusion matrix as a heat map with counts, rows = true label."""
    import numpy as np

    matrix = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    shown = np.log1p(matrix)
    image = ax.imshow(shown, cmap="Blues")
    n = len(class_names)
    ax.set_xticks(range(n), class_names, rotation=45 if max(map(len, class_names)) > 2 else 0)
    ax.set_yticks(range(n), class_names)
    ax.set(xlabel="predicted", ylabel="true", title=title or "Confusion matrix (test set)")
    threshold = shown.max() / 2
    for i in range(n):
        for j in range(n):
            color = "white" if shown[i, j] > threshold else "black"
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8, color=color)
    fig.colorbar(image, ax=ax, label="log(1 + count)")
    fig.tight_layout()
    return save_figure(fig, path)


def augmentation_grid(
    originals,
    augmented,
    labels,
    path: str | os.PathLike,
    title: str = "",
    cell_inches: float = 0.9,
) -> Path:
    """Figure 8-4 in spirit: each row a training digit (framed, first column) and its variants.

    ``originals`` is ``(rows, H, W)``, ``augmented`` is ``(rows, variants, H, W)``, both in [0, 1].
    """
    import numpy as np

    originals, augmented = np.asarray(originals), np.asarray(augmented)
    rows, variants = augmented.shape[:2]
    fig, axes = plt.subplots(
        rows,
        variants + 1,
        figsize=(cell_inches * (variants + 1), cell_inches * rows + 0.5),
        squeeze=False,
    )
    for r in range(rows):
        for c, image in enumerate([originals[r], *augmented[r]]):
            ax = axes[r, c]
            ax.imshow(image, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                for spine in ax.spines.values():
                    spine.set(color="tab:red", linewidth=2.5)
                ax.set_ylabel(f"label {labels[r]}", fontsize=8)
            else:
                for spine in ax.spines.values():
                    spine.set_visible(False)
    axes[0, 0].set_title("original", fontsize=8, color="tab:red")
    for c in range(1, variants + 1):
        axes[0, c].set_title(f"#{c}", fontsize=8)
    fig.suptitle(title or "Augmented training images", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
