"""Shared data fixtures: a tiny verified dataset (fast, offline) and the real MNIST (cached).

Use with ``from fixtures_data import real_mnist, tiny`` in a test module (pytest finds fixtures
imported into a module's namespace).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from deepconvnet.data import mnist
from deepconvnet.data.idx import write_idx

TINY_TRAIN, TINY_TEST = 12, 5


@dataclasses.dataclass
class Tiny:
    """A registered ``tiny`` dataset: its arrays, an IDX directory, a file:// mirror, a cache."""

    spec: mnist.DatasetSpec
    arrays: dict[str, np.ndarray]
    idx_dir: Path
    mirror_dir: Path
    cache_dir: Path

    @property
    def cache_path(self) -> Path:
        return self.cache_dir / f"{self.spec.name}.npz"


def tiny_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (TINY_TRAIN, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(TINY_TRAIN) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (TINY_TEST, 28, 28), dtype=np.uint8),
        "test_labels": np.array([3, 1, 4, 1, 5], dtype=np.uint8),
    }


def write_idx_dir(directory: Path, arrays: dict[str, np.ndarray], *, gz: bool) -> Path:
    for key, stem in mnist.IDX_FILES.items():
        write_idx(directory / (stem + (".gz" if gz else "")), arrays[key])
    return directory


def make_tiny(tmp_path: Path, name: str = "tiny", mirrors: tuple[str, ...] | None = None) -> Tiny:
    arrays = tiny_arrays()
    idx_dir = write_idx_dir(tmp_path / "idx", arrays, gz=False)
    mirror_dir = write_idx_dir(tmp_path / "mirror", arrays, gz=True)
    spec = mnist.DatasetSpec(
        name=name,
        n_train=TINY_TRAIN,
        n_test=TINY_TEST,
        checksums={k: mnist.sha256_array(a) for k, a in arrays.items()},
        class_names=tuple("abcdefghij"),
        mirrors=mirrors if mirrors is not None else (mirror_dir.as_uri() + "/",),
    )
    return Tiny(spec, arrays, idx_dir, mirror_dir, tmp_path / "cache")


@pytest.fixture
def tiny(tmp_path, monkeypatch) -> Tiny:
    """The ``tiny`` dataset registered in DATASETS, with no environment leaking in."""
    for var in ("DEEPCONVNET_DATA", "DEEPCONVNET_OFFLINE", "DEEPCONVNET_CACHE"):
        monkeypatch.delenv(var, raising=False)
    data = make_tiny(tmp_path)
    monkeypatch.setitem(mnist.DATASETS, data.spec.name, data.spec)
    return data


@pytest.fixture(scope="session")
def real_mnist() -> mnist.Dataset:
    """The real MNIST, verified; fetched once per machine into the user's cache."""
    return mnist.load_dataset("mnist", log=lambda message: None)
