"""``deepconvnet data``: the --json report, the text report, and one-line errors."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import fixtures_data
import numpy as np
import pytest

from deepconvnet.cli import main
from deepconvnet.data import mnist

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture
def tiny_as_mnist(tmp_path, monkeypatch):
    """The tiny dataset registered under the name ``mnist`` (the CLI only offers real names)."""
    for var in ("DEEPCONVNET_DATA", "DEEPCONVNET_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    data = fixtures_data.make_tiny(tmp_path)
    data.spec = dataclasses.replace(data.spec, name="mnist")
    monkeypatch.setitem(mnist.DATASETS, "mnist", data.spec)
    monkeypatch.setenv("DEEPCONVNET_CACHE", str(data.cache_dir))
    return data


def test_json_report_from_mirror_then_cache(tiny_as_mnist, capsys):
    data = tiny_as_mnist
    assert main(["data", "--json"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    cache = str(data.cache_dir / "mnist.npz")
    assert report == {
        "dataset": "mnist",
        "source": f"mirror {data.spec.mirrors[0]}",
        "cache": cache,
        "train": {
            "n": 12,
            "sha256_images": data.spec.checksums["train_images"],
            "sha256_labels": data.spec.checksums["train_labels"],
            "label_counts": np.bincount(data.arrays["train_labels"], minlength=10).tolist(),
        },
        "test": {
            "n": 5,
            "sha256_images": data.spec.checksums["test_images"],
            "sha256_labels": data.spec.checksums["test_labels"],
            "label_counts": [0, 2, 0, 1, 1, 1, 0, 0, 0, 0],
        },
    }
    assert err == f"mnist: served by mirror {data.spec.mirrors[0]}\n"

    assert main(["data", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["source"] == "cache"
    assert err == f"mnist: served by cache {cache}\n"


def test_text_report_with_data_dir(tiny_as_mnist, capsys):
    data = tiny_as_mnist
    assert main(["data", "--data-dir", str(data.idx_dir)]) == 0
    out, _ = capsys.readouterr()
    assert f"source   directory {data.idx_dir}" in out
    assert "cache    -" in out
    assert data.spec.checksums["test_labels"] in out
    assert "label counts 0 2 0 1 1 1 0 0 0 0" in out


def test_bad_data_dir_is_one_line_exit_2(tiny_as_mnist, capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["data", "--data-dir", str(empty)]) == 2
    _, err = capsys.readouterr()
    assert err.count("\n") == 1
    assert err.startswith(f"deepconvnet: error: {empty}: no train-images-idx3-ubyte[.gz]")


def test_a_data_dir_that_is_a_file_or_missing_is_named_as_such(tmp_path, capsys):
    """It said "no train-images-idx3-ubyte[.gz]", as if the directory were there but empty."""
    afile = tmp_path / "afile"
    afile.write_text("")
    for path, what in ((afile, "not a directory"), (tmp_path / "gone", "no such directory")):
        assert main(["data", "--data-dir", str(path)]) == 2
        err = capsys.readouterr().err
        assert err == (
            f"deepconvnet: error: {path}: {what} "
            "(need a directory of the four standard IDX files)\n"
        )


def test_an_empty_data_dir_is_refused_not_read_as_the_current_directory(tiny_as_mnist, capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(["data", "--data-dir", ""])
    assert excinfo.value.code == 2
    assert "--data-dir: expected a path, got an empty string" in capsys.readouterr().err


@pytest.mark.mnist
def test_real_mnist_json_through_the_installed_command():
    done = subprocess.run(
        [sys.executable, "-m", "deepconvnet", "data", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    checksums = mnist.DATASETS["mnist"].checksums
    assert report["dataset"] == "mnist"
    assert report["train"] == {
        "n": 60000,
        "sha256_images": checksums["train_images"],
        "sha256_labels": checksums["train_labels"],
        "label_counts": MNIST_TRAIN_COUNTS,
    }
    assert report["test"]["n"] == 10000
    assert report["test"]["sha256_images"] == checksums["test_images"]
    assert done.stderr.startswith("mnist: ")
