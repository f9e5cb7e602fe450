"""Every figure deepconvnet draws, in one place (matplotlib, Agg backend, no display needed).

Each public function takes plain arrays/records and a path, writes a PNG atomically and returns the
path. Figures are meant to be read at a glance: a title, labelled axes, nothing clipped.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from numpy.typing import ArrayLike

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


def confusion_heatmap(
    confusion: ArrayLike, class_names: Sequence[str], path: str | os.PathLike, title: str = ""
) -> Path:
    """The confusion matrix as a heat map with counts, rows = true label."""
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
    originals: ArrayLike,
    augmented: ArrayLike,
    labels: Sequence[int] | np.ndarray,
    path: str | os.PathLike,
    title: str = "",
    cell_inches: float = 0.9,
) -> Path:
    """Figure 8-4 in spirit: each row a training digit (framed, first column) and its variants.

    ``originals`` is ``(rows, H, W)``, ``augmented`` is ``(rows, variants, H, W)``, both in [0, 1].
    """
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


def depth_experiment_plot(cells: list[dict], path: str | os.PathLike, title: str = "") -> Path:
    """Test accuracy (left) and training time (right) against training-set size, log x axis.

    ``cells`` are the depth experiment's records: ``model``, ``train_size``, ``test_accuracy``,
    ``train_seconds`` (and ``epochs``, shown under each size).
    """
    models = list(dict.fromkeys(c["model"] for c in cells))
    sizes = sorted({c["train_size"] for c in cells})
    epochs = {c["train_size"]: c.get("epochs") for c in cells}
    fig, (ax_acc, ax_time) = plt.subplots(1, 2, figsize=(11, 4.5))
    for model, marker in zip(models, "osD^v", strict=False):
        mine = sorted((c for c in cells if c["model"] == model), key=lambda c: c["train_size"])
        x = [c["train_size"] for c in mine]
        ax_acc.plot(x, [c["test_accuracy"] for c in mine], marker + "-", label=model)
        ax_time.plot(x, [c["train_seconds"] for c in mine], marker + "-", label=model)
    labels = [f"{n:,}\n({epochs[n]} ep)" if epochs[n] else f"{n:,}" for n in sizes]
    for ax in (ax_acc, ax_time):
        ax.set_xscale("log")
        ax.set_xticks(sizes, labels)
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_xlabel("training images (epochs)")
    ax_acc.set(title="Test accuracy (10,000 images)", ylabel="accuracy")
    ax_time.set(title="Training time (wall clock)", ylabel="seconds")
    fig.suptitle(
        title or "Stacked 3x3 convolutions vs single large filters (equal receptive field)"
    )
    fig.tight_layout()
    return save_figure(fig, path)


def misclassified_grid(
    images: ArrayLike,
    records: list[dict],
    path: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    title: str = "",
    columns: int = 5,
) -> Path:
    """Figure 8-2 in spirit: misclassified digits, each captioned "true -> predicted (p)".

    ``images`` are ``(n, H, W)`` in [0, 1] matching ``records`` (``index``, ``label``,
    ``predicted``, ``probability``), already in display order.
    """
    images = np.asarray(images)
    names = list(class_names) if class_names is not None else None

    def name(i: int) -> str:
        return names[i] if names else str(i)

    n = len(records)
    columns = max(1, min(columns, n))
    rows = max(1, -(-n // columns))
    fig, axes = plt.subplots(
        rows, columns, figsize=(1.9 * columns, 2.5 * rows + 0.6), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, r in zip(axes.flat, images, records, strict=False):
        ax.imshow(image, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(
            f"#{r['index']}\ntrue {name(r['label'])} -> {name(r['predicted'])}\n"
            f"p = {r['probability']:.2f}",
            fontsize=9,
        )
    if n == 0:
        axes[0, 0].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    fig.suptitle(title or "Misclassified test images (most confident mistakes first)", fontsize=11)
    fig.tight_layout(h_pad=1.2)
    return save_figure(fig, path)


def filters_grid(
    weights: ArrayLike, path: str | os.PathLike, title: str = "", columns: int = 8
) -> Path:
    """A conv layer's filters ``(F, C, kh, kw)`` (input channel 0), one shared diverging scale."""
    weights = np.asarray(weights, dtype=np.float64)[:, 0]
    n = len(weights)
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    limit = float(np.abs(weights).max()) or 1.0
    fig, axes = plt.subplots(
        rows, columns, figsize=(1.2 * columns + 1.0, 1.35 * rows + 0.7), squeeze=False
    )
    image = None
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.axis("off")
            continue
        image = ax.imshow(
            weights[i], cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest"
        )
        ax.set_title(f"filter {i}", fontsize=8)
    fig.suptitle(title or f"First convolution layer: {n} filters", fontsize=11)
    fig.tight_layout()
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="weight")
    return save_figure(fig, path)


def feature_maps_grid(
    image: ArrayLike,
    stages: list[tuple[str, np.ndarray]],
    path: str | os.PathLike,
    title: str = "",
    channels: int = 8,
) -> Path:
    """One digit through the network: the input, then one row per stage with its first channels.

    ``stages`` is ``[(label, maps (C, H, W)), ...]``; each map is scaled to its own range so the
    pattern, not the magnitude, is what shows.
    """
    shown = max(1, min(channels, max((len(m) for _, m in stages), default=1)))
    rows = len(stages) + 1
    fig, axes = plt.subplots(
        rows, shown + 1, figsize=(1.25 * (shown + 1) + 1.6, 1.3 * rows + 0.6), squeeze=False
    )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    axes[0, 0].imshow(np.asarray(image), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    axes[0, 0].set_ylabel("input", fontsize=8, rotation=0, ha="right", va="center")
    for ax in axes[0, 1:]:
        ax.axis("off")
    for row, (label, maps) in enumerate(stages, start=1):
        maps = np.asarray(maps)
        axes[row, 0].axis("off")
        axes[row, 0].text(
            1.0, 0.5, label, ha="right", va="center", fontsize=8, transform=axes[row, 0].transAxes
        )
        for c in range(shown):
            ax = axes[row, c + 1]
            if c >= len(maps):
                ax.axis("off")
                continue
            ax.imshow(maps[c], cmap="viridis", interpolation="nearest")
            if row == 1:
                ax.set_title(f"channel {c}", fontsize=8)
    fig.suptitle(
        (title or "Feature maps of one digit, layer by layer")
        + f"\nfirst {shown} channels of each stage; each map scaled to its own range",
        fontsize=11,
    )
    fig.tight_layout()
    return save_figure(fig, path)
