"""End-to-end training on real MNIST (small), the run directory, `evaluate`, and CLI errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from deepconvnet.checkpoint import load_model, save_model
from deepconvnet.cli import main
from deepconvnet.fileio import load_npz

pytestmark = pytest.mark.mnist

QUICK = ["--train-limit", "2000", "--epochs", "2", "--val", "500", "--no-progress"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One quick run shared by the tests of this module (it costs a few seconds)."""
    run_dir = tmp_path_factory.mktemp("runs") / "quick"
    assert main(["train", *QUICK, "--out", str(run_dir)]) == 0
    return run_dir


def test_run_directory_is_complete(quick_run):
    names = {p.name for p in quick_run.iterdir()}
    assert {"config.json", "metrics.jsonl", "model.npz", "optimizer.npz", "results.json"} <= names
    assert not [n for n in names if n.endswith(".tmp")]

    config = json.loads((quick_run / "config.json").read_text())
    assert config["config"]["lr"] == 0.001 and config["config"]["optimizer"] == "adam"
    assert config["config"]["sampling"] == "shuffle"
    assert config["dataset"]["train_images"].startswith("741c9888")
    assert config["params"] == 123_552
    assert config["wall_seconds"] > 0
    assert "numpy" in config["versions"]

    records = [json.loads(line) for line in (quick_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all({"train_loss", "train_acc", "val_acc", "lr", "seconds"} <= r.keys() for r in records)
    assert records[1]["train_loss"] < records[0]["train_loss"]

    with Image.open(quick_run / "plots" / "learning_curves.png") as png:
        assert png.format == "PNG" and png.width > 400


def test_accuracy_well_above_chance_and_evaluate_agrees(quick_run, capsys):
    results = json.loads((quick_run / "results.json").read_text())
    assert results["test_total"] == 10_000
    assert results["test_accuracy"] > 0.4  # chance is 0.1; 1,500 images, 2 epochs

    capsys.readouterr()
    assert main(["evaluate", str(quick_run), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["correct"] == results["test_correct"]
    assert report["total"] == 10_000
    confusion = np.array(report["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == 10_000
    assert np.trace(confusion) == report["correct"]
    assert len(report["per_class"]) == 10
    assert (quick_run / "plots" / "confusion.png").is_file()


def test_model_file_round_trips_exactly(quick_run, tmp_path):
    model = load_model(quick_run / "model.npz")
    save_model(tmp_path / "again.npz", model)
    original, again = load_npz(quick_run / "model.npz"), load_npz(tmp_path / "again.npz")
    params = [k for k in original if not k.startswith("__")]
    assert params
    for key in params:
        assert original[key].dtype == again[key].dtype
        assert np.array_equal(original[key], again[key])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--model", "nosuchnet"], "unknown model 'nosuchnet'"),
        (["train", "--epochs", "0"], "must be a positive integer"),
        (["train", "--lr", "-1"], "must be a positive number"),
        (["train", "--lr-schedule", "bogus"], "bogus"),
        (["train", "--sampling", "random"], "'random'"),
        (["evaluate", "/nonexistent/run"], "/nonexistent/run"),
        (["train", "--resume", "/nonexistent/run"], "/nonexistent/run"),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1


def test_out_dir_that_exists_is_refused(quick_run, capsys):
    assert main(["train", *QUICK, "--out", str(quick_run)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_unwritable_out_dir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["train", *QUICK, "--out", str(blocker / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert str(blocker) in err and len(err.splitlines()) == 1


def test_float64_run_trains_the_same_network_in_float64(tmp_path):
    """``--dtype float64`` (the book's arithmetic) keeps float64 end to end and, with the same seed,
    follows the float32 run's trajectory to float32 precision over the first steps."""
    tiny = ["train", "--train-limit", "500", "--epochs", "1", "--no-progress", "--threads", "1"]
    runs = {}
    for dtype in ("float32", "float64"):
        runs[dtype] = tmp_path / dtype
        assert main([*tiny, "--dtype", dtype, "--out", str(runs[dtype])]) == 0

    config = json.loads((runs["float64"] / "config.json").read_text())
    assert config["config"]["dtype"] == "float64"
    model = load_model(runs["float64"] / "model.npz")
    assert model.dtype == np.float64
    weights = {k: v for k, v in load_npz(runs["float64"] / "model.npz").items() if k[:2] != "__"}
    assert weights and all(v.dtype == np.float64 for v in weights.values())

    losses = {
        dtype: json.loads((run / "metrics.jsonl").read_text())["train_loss"]
        for dtype, run in runs.items()
    }
    assert losses["float64"] == pytest.approx(losses["float32"], rel=1e-4)
    assert losses["float64"] != losses["float32"]  # really a different arithmetic
