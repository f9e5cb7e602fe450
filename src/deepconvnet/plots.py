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
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from deepconvnet.fileio import atomic_write_bytes  # noqa: E402

DPI = 100


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Render ``fig`` to PNG, write it atomically, close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
