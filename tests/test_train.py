"""End-to-end training on real MNIST (small), the run directory, `evaluate`, and CLI errors."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from fixtures_data import write_idx_dir
from PIL import Image

from deepconvnet import train as training
from deepconvnet.checkpoint import load_metadata, load_model, save_model
from deepconvnet.cli import main
from deepconvnet.cli.common import MODEL_NAMES
from deepconvnet.data import load_dataset
from deepconvnet.data.mnist import IDX_FILES
from deepconvnet.fileio import array_to_json, atomic_save_npz, json_to_array, load_npz
from deepconvnet.models import MODELS

pytestmark = pytest.mark.mnist

QUICK = ["--train-limit", "2000", "--epochs", "2", "--val", "500", "--no-progress"]
TINY = ["--train-limit", "500", "--epochs", "1", "--threads", "1", "--no-progress"]
DIVERGING = ["--train-limit", "500", "--epochs", "1", "--optimizer", "sgd", "--lr", "1e30"]
# A diverging run says so in one line: NumPy's overflow warnings (even from the kernels' worker
# threads) are silenced by the loop, so here any warning fails the test.
no_warnings = pytest.mark.filterwarnings("error")


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

    assert load_metadata(quick_run / "model.npz") == {"epoch": 2, "dataset": "mnist"}
    config = json.loads((quick_run / "config.json").read_text())
    assert config["config"]["lr"] == 0.001 and config["config"]["optimizer"] == "adam"
    assert config["config"]["sampling"] == "shuffle"
    assert config["dataset"]["train_images"].startswith("741c9888")
    assert config["params"] == 123_552
    assert config["wall_seconds"] > 0
    assert "numpy" in config["versions"]
    assert config["cpu"]["cores"] == os.cpu_count() and config["cpu"]["model"]

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


def test_training_moves_every_parameter_array_from_its_initial_values(quick_run):
    """A loop that left a layer unlearned (its gradients or updates lost) would still score
    above chance, so each array is compared with the one its seed initialised."""
    config = training.load_config(quick_run)
    initial = training._build_model(config).params()
    trained = load_model(quick_run / "model.npz").params()
    assert trained.keys() == initial.keys() and len(trained) == 16  # W1..W8, b1..b8
    unmoved = [k for k in trained if np.allclose(trained[k], initial[k], rtol=1e-4, atol=1e-6)]
    assert unmoved == []
    # ...and moved from these values, not from another draw: 30 Adam steps leave each weight
    # array close to its start (He's scale is 0.06-0.47, a step at most lr = 0.001).
    for name in (k for k in trained if k.startswith("W")):
        assert np.corrcoef(trained[name].ravel(), initial[name].ravel())[0, 1] > 0.9, name


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
        (["train", "--model", "nosuchnet"], "invalid choice: 'nosuchnet'"),
        (["train", "--epochs", "0"], "must be a positive integer"),
        (["train", "--lr", "-1"], "must be a positive number"),
        (["train", "--lr", "nan"], "must be a positive number"),
        (["train", "--lr", "inf"], "must be a positive number"),
        (["train", "--lr-schedule", "bogus"], "bogus"),
        (["train", "--sampling", "random"], "'random'"),
        (["train", "--weight-decay", "nan"], "must be a finite number >= 0"),
        (["train", "--weight-decay", "-1"], "must be a finite number >= 0"),
        (["train", "--weight-decay", "inf"], "must be a finite number >= 0"),
        (["evaluate", "/nonexistent/run"], "/nonexistent/run"),
        (["train", "--resume", "/nonexistent/run"], "/nonexistent/run"),
        # An unset variable in `--resume "$RUN"` must not start a fresh 20-epoch run instead.
        (["train", "--resume", ""], "expected a path, got an empty string"),
        (["train", "--out", ""], "expected a path, got an empty string"),
        (["ensemble", "train", "--out", ""], "expected a path, got an empty string"),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1


def test_model_choices_are_the_registered_models():
    """--model lists names without importing the engine; they must not drift from MODELS."""
    assert sorted(MODEL_NAMES) == sorted(MODELS)


def test_out_dir_that_exists_is_refused(quick_run, capsys):
    assert main(["train", *QUICK, "--out", str(quick_run)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["train", *TINY, "--out", str(blocker)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"deepconvnet: error: {blocker} is not a directory"
    assert blocker.read_text() == "not a directory"


def test_two_runs_cannot_claim_one_directory(tmp_path):
    """The claim is atomic: of two runs started on one --out, the second stops, writing nothing."""
    out = tmp_path / "run"
    assert training._claim_run_dir(out) == (out, out)  # it created the directory itself
    with pytest.raises(training.DeepConvNetError, match="taken by another run"):
        training._claim_run_dir(out)
    assert sorted(p.name for p in out.iterdir()) == ["plots"]


def test_runs_without_out_started_in_one_second_get_their_own_directories(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(training, "datetime", FrozenClock)
    first, _ = training._claim_run_dir(None)
    second, _ = training._claim_run_dir(None)
    assert (first, second) == (Path("runs/20261129-050153"), Path("runs/20261129-050153-2"))
    assert first.is_dir() and second.is_dir()


class FrozenClock:
    @staticmethod
    def now():
        return datetime(2026, 11, 29, 5, 1, 53)


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


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--train-limit", "100", "--val", "200"], "leaves no training images"),
        (["--data-dir", "/nonexistent/mnist"], "/nonexistent/mnist"),
        # BatchNorm over one image is degenerate (a test accuracy of 9% at --batch-size 1).
        (["--model", "deepconvnet-bn", "--batch-size", "1"], "BatchNorm needs batches of 2"),
        (
            ["--model", "deepconvnet-bn", "--train-limit", "501"],
            "501 training images in batches of 100 leave a last batch of 1; BatchNorm needs 2",
        ),
    ],
)
def test_a_start_refused_leaves_no_directory(options, message, tmp_path, capsys):
    """The corrected command must not then be refused for a half-made run directory."""
    out = tmp_path / "run"
    assert main(["train", *options, "--no-progress", "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def unfinished_copy(run_dir, tmp_path):
    """A copy of a finished run that looks interrupted after its last epoch's checkpoint."""
    copy = tmp_path / "unfinished"
    shutil.copytree(run_dir, copy)
    (copy / "results.json").unlink()
    return copy


def test_resume_refuses_options_it_would_ignore(quick_run, tmp_path, capsys):
    run_dir = unfinished_copy(quick_run, tmp_path)
    assert main(["train", "--resume", str(run_dir), "--epochs", "25", "--lr", "0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "drop --epochs, --lr" in err and len(err.splitlines()) == 1


def test_resume_refuses_a_finished_run(quick_run, capsys):
    before = (quick_run / "results.json").read_bytes()
    assert main(["train", "--resume", str(quick_run), "--no-progress"]) == 2
    assert "already finished" in capsys.readouterr().err
    assert (quick_run / "results.json").read_bytes() == before


def test_resume_refuses_a_damaged_checkpoint(quick_run, tmp_path, capsys):
    run_dir = unfinished_copy(quick_run, tmp_path)
    arrays = load_npz(run_dir / "checkpoint.npz")
    state = array_to_json(arrays["__state__"])
    arrays["__state__"] = json_to_array({**state, "bogus": 1})
    atomic_save_npz(run_dir / "checkpoint.npz", arrays)
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.endswith("__state__ does not hold a training state (unexpected bogus)")


def test_resume_refuses_a_run_drawn_with_other_random_streams(quick_run, tmp_path, capsys):
    run_dir = unfinished_copy(quick_run, tmp_path)
    config = json.loads((run_dir / "config.json").read_text())
    del config["streams"]  # as runs made before the streams had their own keys
    (run_dir / "config.json").write_text(json.dumps(config))
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 2
    assert "random streams differ" in capsys.readouterr().err
    # A config that is no run's at all (no versions either) is not called an earlier version's.
    (run_dir / "config.json").write_text(json.dumps({"config": {"dataset": "nope"}}))
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 2
    assert "not a run's config as deepconvnet writes it" in capsys.readouterr().err


def test_evaluate_reports_even_where_it_cannot_save_the_plot(quick_run, tmp_path, capsys):
    model_dir = tmp_path / "readonly-ish"
    model_dir.mkdir()
    shutil.copy(quick_run / "model.npz", model_dir / "model.npz")
    (model_dir / "plots").write_text("a file where the plots directory would go")
    capsys.readouterr()
    assert main(["evaluate", str(model_dir), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["total"] == 10_000
    assert "warning: no confusion plot" in captured.err


def test_resume_refuses_an_option_given_at_its_default_value(quick_run, tmp_path, capsys):
    """--epochs 20 is the default, but this run has 2 epochs: it must not be silently ignored."""
    run_dir = unfinished_copy(quick_run, tmp_path)
    assert main(["train", "--resume", str(run_dir), "--epochs", "20", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "drop --epochs (" in err and len(err.splitlines()) == 1
    assert not (run_dir / "results.json").exists()


def test_resume_accepts_data_moved_to_another_directory(quick_run, tmp_path, capsys):
    dataset = load_dataset("mnist")
    moved = tmp_path / "moved"
    moved.mkdir()
    write_idx_dir(moved, {key: getattr(dataset, key) for key in IDX_FILES}, gz=False)
    run_dir = unfinished_copy(quick_run, tmp_path)
    assert main(["train", "--resume", str(run_dir), "--data-dir", str(moved), "--no-progress"]) == 0
    assert f"directory {moved}" in capsys.readouterr().err  # the data came from there
    results = json.loads((run_dir / "results.json").read_text())
    assert (
        results["test_correct"]
        == json.loads((quick_run / "results.json").read_text())["test_correct"]
    )


def test_resume_at_the_thread_count_the_run_used_says_nothing_of_threads(
    quick_run, tmp_path, capsys
):
    """The run took the default (all cores); --threads at that count changes nothing to note."""
    run_dir = unfinished_copy(quick_run, tmp_path)
    used = json.loads((run_dir / "config.json").read_text())["threads"]
    assert main(["train", "--resume", str(run_dir), "--threads", str(used), "--no-progress"]) == 0
    assert "note:" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("epochs", "3", "epochs is '3'"),
        ("epochs", None, "epochs is None"),
        ("batch_size", 0, "batch_size is 0 (expected a finite number >= 1)"),
        ("lr", -1.0, "lr is -1.0"),
        ("seed", True, "seed is True"),
        ("dtype", "float16", "dtype is 'float16' (expected one of float32, float64)"),
        ("sampling", "random", "sampling is 'random'"),
        ("model_options", [], "model_options is []"),
    ],
)
def test_resume_of_a_hand_edited_config_is_one_line_naming_the_value(
    quick_run, tmp_path, capsys, key, value, message
):
    run_dir = unfinished_copy(quick_run, tmp_path)
    config = json.loads((run_dir / "config.json").read_text())
    config["config"][key] = value
    (run_dir / "config.json").write_text(json.dumps(config))
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"deepconvnet: error: {run_dir / 'config.json'}: {message}")
    assert len(err.splitlines()) == 1


def test_resume_of_a_config_whose_config_is_no_object_is_one_line(quick_run, tmp_path, capsys):
    run_dir = unfinished_copy(quick_run, tmp_path)
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "config": []}))
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == f"deepconvnet: error: {run_dir / 'config.json'}: 'config' is a JSON list, not object"
    )


def test_ctrl_c_during_the_test_evaluation_says_how_to_resume(quick_run, tmp_path, capsys):
    run_dir = unfinished_copy(quick_run, tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("deepconvnet.analysis.evaluate_predictions", interrupted)
        assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 130
    assert f"resume with: deepconvnet train --resume {run_dir}" in capsys.readouterr().err
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 0
    assert (run_dir / "results.json").is_file()


@pytest.fixture
def steps(monkeypatch):
    """Every training step as the loop makes it: (learning rate, images, labels, loss)."""
    seen = []
    real_step = training._train_step

    def recording_step(model, optimizer, x, t, state):
        lr, x, t = optimizer.lr, x.copy(), t.copy()
        loss = real_step(model, optimizer, x, t, state)
        seen.append((lr, x, t, loss))
        return loss

    monkeypatch.setattr(training, "_train_step", recording_step)
    return seen


def train_quietly(tmp_path, **options) -> training.RunResult:
    config = training.TrainConfig(threads=1, **options)
    return training.train(config, tmp_path / "run", progress=False, log=lambda line: None)


def test_train_loss_is_the_mean_over_images_as_train_acc_is(tmp_path, steps):
    """150 images in batches of 100: the short batch of 50 weighs half as much, not the same."""
    result = train_quietly(tmp_path, train_limit=150, epochs=1)
    assert [len(t) for _, _, t, _ in steps] == [100, 50]
    expected = sum(loss * len(t) for _, _, t, loss in steps) / 150
    assert result.history[0]["train_loss"] == pytest.approx(expected, rel=1e-12)
    assert expected != pytest.approx(sum(loss for *_, loss in steps) / 2, rel=1e-6)


def test_the_lr_schedule_sets_every_steps_rate_and_the_metrics_record_it(tmp_path, steps):
    result = train_quietly(tmp_path, train_limit=200, epochs=4, lr=0.002, lr_schedule="cosine")
    # Half a cosine over 4 epochs, one value per epoch: (1 + cos(pi * e / 4)) / 2 of the base.
    expected = [0.002 * (1 + np.cos(np.pi * e / 4)) / 2 for e in range(4)]
    assert [lr for lr, *_ in steps] == pytest.approx(np.repeat(expected, 2), rel=1e-12)
    assert [r["lr"] for r in result.history] == pytest.approx(expected, rel=1e-12)


def training_indices(batches, train_x: np.ndarray) -> list[int | None]:
    """Which training image each batch image is, by its exact pixels (None: none of them)."""
    from deepconvnet.data import to_float

    index = {image.tobytes(): i for i, image in enumerate(to_float(train_x))}
    assert len(index) == len(train_x)  # no two training images alike, so the lookup is exact
    return [index.get(image.tobytes()) for x in batches for image in x]


@pytest.mark.parametrize(
    ("sampling", "is_permutation"), [("shuffle", True), ("replacement", False)]
)
def test_sampling_decides_whether_an_epoch_sees_each_image_once(
    tmp_path, steps, sampling, is_permutation
):
    """``shuffle`` visits every image once per epoch; ``replacement`` (the book's Trainer) draws
    each batch independently, so 3 epochs of 300 draws from 300 images repeat some (all but
    certainly: the chance of none is 300! / 300**300)."""
    config = training.TrainConfig(train_limit=300, sampling=sampling)
    train_x = training.split_training_set(load_dataset("mnist"), config)[0]
    train_quietly(tmp_path, train_limit=300, epochs=3, sampling=sampling)
    sources = training_indices([x for _, x, _, _ in steps], train_x)
    assert None not in sources
    epochs = [sorted(sources[e * 300 : (e + 1) * 300]) for e in range(3)]
    assert [e == list(range(300)) for e in epochs] == [is_permutation] * 3


def test_augmentation_changes_every_training_image_the_loop_sees(tmp_path, steps):
    config = training.TrainConfig(train_limit=300)
    train_x = training.split_training_set(load_dataset("mnist"), config)[0]
    train_quietly(tmp_path, train_limit=300, epochs=1, augment="rotate=15,shift=0.1")
    assert len(steps) == 3
    assert training_indices([x for _, x, _, _ in steps], train_x) == [None] * 300


def test_resume_of_a_run_killed_before_its_first_checkpoint_says_what_to_do(tmp_path, capsys):
    run_dir = tmp_path / "killed-early"
    (run_dir / "plots").mkdir(parents=True)
    (run_dir / "config.json").write_text('{"config": {}}')  # its options, and no checkpoint
    assert main(["train", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"delete {run_dir} and start it again" in err and len(err.splitlines()) == 1


@no_warnings
def test_divergence_before_a_checkpoint_keeps_a_directory_it_did_not_create(tmp_path, capsys):
    """Only what the run wrote is removed: an empty --out made beforehand stays, and is empty."""
    out = tmp_path / "made-by-the-user"
    out.mkdir()
    assert main(["train", *DIVERGING, "--no-progress", "--out", str(out)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "nothing is kept: start again with a smaller --lr" in last
    assert out.is_dir() and list(out.iterdir()) == []


@no_warnings
def test_divergence_after_a_checkpoint_does_not_suggest_resuming_with_another_lr(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", *DIVERGING, "--checkpoint-every", "1", "--no-progress", "--out", str(out)]
    assert main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"the last checkpoint is kept in {out}, but resuming it would diverge" in last
    assert "start a new run (another --out) with a smaller --lr" in last
    assert (out / "checkpoint.npz").is_file()


@no_warnings
@pytest.mark.parametrize("threads", ["1", "2"])
def test_divergence_is_one_line_without_numpy_warnings(tmp_path, capsys, threads):
    out = tmp_path / "run"
    argv = ["train", *DIVERGING, "--threads", threads, "--no-progress", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [line for line in err if "Warning" in line] == []
    assert err[-1].startswith("deepconvnet: error: ") and "smaller --lr" in err[-1]


@no_warnings
def test_parameters_that_overflow_stop_the_run_before_any_checkpoint(tmp_path, capsys):
    """At lr 1e300 one step sends the weights to inf while the loss, computed before the step,
    is still finite: the step itself is checked, so no checkpoint holds non-finite values."""
    out = tmp_path / "run"
    argv = [*DIVERGING, "--checkpoint-every", "1", "--no-progress", "--out", str(out)]
    argv[argv.index("1e30")] = "1e300"
    assert main(["train", *argv]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "became non-finite at epoch 1, batch 1" in last and "nothing is kept" in last
    assert not out.exists()


def test_any_failure_before_the_first_checkpoint_leaves_nothing_behind(
    tmp_path, monkeypatch, capsys
):
    """A crash in the first epoch must not block the same command once the cause is fixed."""

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash in the first epoch")

    out = tmp_path / "run"
    monkeypatch.setattr(training, "_train_step", crash)
    assert main(["train", *TINY, "--out", str(out)]) == 1
    assert "simulated crash" in capsys.readouterr().err
    assert not out.exists()


def damage(arrays: dict, case: str) -> None:
    """Corrupt a training checkpoint's arrays in place, one way per case."""
    state = array_to_json(arrays["__state__"])
    if case == "no spec":
        del arrays["__spec__"]
    elif case == "state not json":
        arrays["__state__"] = np.array("{not json")
    elif case == "state field of another type":
        arrays["__state__"] = json_to_array({**state, "epoch": "two"})
    elif case == "random state":
        arrays["__state__"] = json_to_array({**state, "rng_state": {"bit_generator": "nope"}})
    elif case == "lr not a scalar":
        arrays["optim/lr"] = np.array([1e-3, 2e-3])
    elif case == "no step count":
        del arrays["optim/t"]
    elif case == "optimizer slot missing":
        del arrays["optim/m.0.W"]
    elif case == "optimizer slot non-finite":
        arrays["optim/v.0.W"] = np.full_like(arrays["optim/v.0.W"], np.inf)
    elif case == "beta2 out of range":
        arrays["optim/beta2"] = np.array(2.0)
    elif case == "step count negative":
        arrays["optim/t"] = np.array(-5)
    elif case == "second moment negative":  # Adam's v sums squared gradients: NaN steps
        arrays["optim/v.0.W"] = -np.ones_like(arrays["optim/v.0.W"])
    elif case == "parameter non-finite":
        arrays["model/0.W"] = np.full_like(arrays["model/0.W"], np.nan)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no spec", "no __spec__"),
        ("state not json", "unreadable __state__"),
        ("state field of another type", "__state__ epoch is 'two'"),
        ("random state", "unusable optimizer or random state"),
        ("lr not a scalar", "optimizer entry 'lr' is missing or not a number"),
        ("no step count", "optimizer entry 't' is missing or not a number"),
        ("optimizer slot missing", "optimizer state does not fit"),
        ("optimizer slot non-finite", "'v.0.W' holds non-finite values"),
        ("second moment negative", "'v.0.W' sums squared gradients but holds negative values"),
        ("beta2 out of range", "optimizer entry 'beta2' is 2.0"),
        ("step count negative", "optimizer entry 't' is -5"),
        ("parameter non-finite", "'model/0.W' holds non-finite values"),
    ],
)
def test_resume_from_a_damaged_checkpoint_is_one_line_naming_it(
    case, message, quick_run, tmp_path, capsys
):
    run_dir = unfinished_copy(quick_run, tmp_path)
    arrays = load_npz(run_dir / "checkpoint.npz")
    damage(arrays, case)
    atomic_save_npz(run_dir / "checkpoint.npz", arrays)
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"deepconvnet: error: {run_dir / 'checkpoint.npz'}: ")
    assert message in last
    assert not (run_dir / "results.json").exists()


# -- what reviewers found -----------------------------------------------------------------------
@no_warnings
@pytest.mark.parametrize("optimizer", ["adagrad", "rmsprop"])
def test_optimizer_state_that_overflows_stops_the_run_as_divergence(optimizer, tmp_path, capsys):
    """With weight decay 1e30 the sum of squared gradients overflows while the weights stay
    finite (each update divided by infinity): a checkpoint holding it could never be resumed."""
    out = tmp_path / "run"
    argv = [*TINY, "--optimizer", optimizer, "--weight-decay", "1e30", "--out", str(out)]
    assert main(["train", *argv, "--checkpoint-every", "1"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "optimizer state h.0.W became non-finite at epoch 1, batch 1" in last
    assert not out.exists()


def test_a_start_takes_the_bounds_a_resume_checks(tmp_path, capsys):
    """--lr 1e-310 passed the option's check but was refused on resume: a run that could
    never be resumed. One set of rules now applies to both."""
    out = tmp_path / "run"
    assert main(["train", *TINY, "--lr", "1e-310", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "deepconvnet: error: invalid configuration: lr is 1e-310 (expected a finite number "
        ">= 1e-300)"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"foo": 1}, "model_options has 'foo' (the only model option is dropout_ratio)"),
        ({"hidden_size": 0}, "model_options has 'hidden_size'"),
        ({"dropout_ratio": 5}, "model_options.dropout_ratio is 5 (expected a number in [0, 1))"),
        ({"dropout_ratio": "x"}, "model_options.dropout_ratio is 'x'"),
    ],
)
def test_resume_of_hand_edited_model_options_is_one_line(
    quick_run, tmp_path, capsys, options, message
):
    run_dir = unfinished_copy(quick_run, tmp_path)
    config = json.loads((run_dir / "config.json").read_text())
    config["config"]["model_options"] = options
    (run_dir / "config.json").write_text(json.dumps(config))
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"deepconvnet: error: {run_dir / 'config.json'}: {message}")
    assert len(err.splitlines()) == 1


def test_a_model_spec_too_large_to_build_is_one_line(tmp_path, capsys):
    path = tmp_path / "huge.npz"
    save_model(path, MODELS["deepconvnet"]())
    arrays = load_npz(path)
    spec = array_to_json(arrays["__spec__"])
    affine = next(layer for layer in reversed(spec["layers"]) if layer["type"] == "Affine")
    affine["out_features"] = 10**12
    arrays["__spec__"] = json_to_array(spec)
    atomic_save_npz(path, arrays)
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"deepconvnet: error: {path}: invalid model spec: too large to build")
    assert len(err.splitlines()) == 1


def test_resume_without_threads_keeps_the_runs_thread_count(quick_run, tmp_path, monkeypatch):
    """A run made on all of 2 cores and resumed where there are more (or fewer) must still
    compute on 2, or it is not the run it would have been; --threads, when given, decides."""
    run_dir = unfinished_copy(quick_run, tmp_path)
    used = json.loads((run_dir / "config.json").read_text())["threads"]
    threads = []

    def train_stub(config, *args, **kwargs):
        threads.append(config.threads)
        raise training.DeepConvNetError("stopped by the test")

    monkeypatch.setattr(training, "train", train_stub)
    monkeypatch.setattr("os.cpu_count", lambda: used + 5)
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 2
    assert main(["train", "--resume", str(run_dir), "--threads", "1", "--no-progress"]) == 2
    assert threads == [used, 1]


def test_two_resumes_of_one_run_cannot_run_at_once(quick_run, tmp_path, capsys):
    run_dir = unfinished_copy(quick_run, tmp_path)
    with training.hold_dir(run_dir):  # as a resume running in another process holds it
        assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"deepconvnet: error: {run_dir} is being trained by another process; wait for it to "
        "finish or stop it (Ctrl-C) first"
    )
    assert not (run_dir / "results.json").exists()
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 0  # released


def test_a_failed_start_removes_the_parent_directories_it_made(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *DIVERGING, "--no-progress", "--out", "deep/a/b"]) == 2
    assert main(["train", *DIVERGING, "--no-progress"]) == 2  # runs/ made for it
    assert "nothing is kept" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_evaluate_tests_a_model_on_the_dataset_its_run_was_trained_on(
    quick_run, tmp_path, monkeypatch, capsys
):
    """A Fashion-MNIST run evaluated without --dataset used to be scored on MNIST digits."""
    import deepconvnet.data

    run_dir = tmp_path / "fashion"
    shutil.copytree(quick_run, run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    config["config"]["dataset"] = "fashion-mnist"
    (run_dir / "config.json").write_text(json.dumps(config))
    model = load_model(run_dir)
    save_model(run_dir / "model.npz", model, metadata={"epoch": 2, "dataset": "fashion-mnist"})
    old_style = shutil.copytree(run_dir, tmp_path / "saved-before-0.2.5")
    save_model(old_style / "model.npz", model, metadata={"epoch": 2})  # no dataset recorded
    mnist_in_fashion = shutil.copytree(run_dir, tmp_path / "mixed") / "mnist.npz"
    shutil.copy(quick_run / "model.npz", mnist_in_fashion)  # the file's own record decides
    asked = []
    mnist = load_dataset("mnist")
    # The test needs no Fashion-MNIST files, only the name asked for; and 200 test images
    # serve that as well as 10,000, in a fiftieth of the time.
    few = dataclasses.replace(
        mnist, test_images=mnist.test_images[:200], test_labels=mnist.test_labels[:200]
    )

    def load_dataset_spy(name, *args, **kwargs):
        asked.append(name)
        return few

    monkeypatch.setattr(deepconvnet.data, "load_dataset", load_dataset_spy)
    fashion_2 = shutil.copytree(run_dir, tmp_path / "fashion-2")
    bare = tmp_path / "bare.npz"
    shutil.copy(quick_run / "model.npz", bare)
    fashion_alone = tmp_path / "fashion-alone.npz"  # as train writes a Fashion-MNIST model
    save_model(fashion_alone, load_model(bare), metadata={"epoch": 2, "dataset": "fashion-mnist"})
    garbled = tmp_path / "garbled"
    garbled.mkdir()
    shutil.copy(quick_run / "model.npz", garbled / "model.npz")
    (garbled / "config.json").write_text("[" * 100_000)  # deeper than the JSON parser's stack
    for argv, dataset in (
        (["evaluate", str(run_dir)], "fashion-mnist"),
        (["misclassified", str(run_dir), "--json"], "fashion-mnist"),
        (["visualize", str(run_dir), "--out", str(tmp_path / "vis")], "fashion-mnist"),
        (["ensemble", "evaluate", str(run_dir), str(fashion_2), "--json"], "fashion-mnist"),
        (["evaluate", str(run_dir), "--dataset", "mnist"], "mnist"),
        (["evaluate", str(run_dir / "model.npz")], "fashion-mnist"),
        (["evaluate", str(bare)], "mnist"),  # a model file outside its run: its own metadata
        (["evaluate", str(fashion_alone)], "fashion-mnist"),
        (["evaluate", str(old_style)], "fashion-mnist"),  # a file naming none: its run's
        (["evaluate", str(mnist_in_fashion)], "mnist"),
        (["evaluate", str(garbled)], "mnist"),  # an unreadable config.json names no dataset
    ):
        asked.clear()
        assert main(argv) == 0
        assert asked == [dataset], argv
    # The run's own figures are of its own dataset; --dataset mnist wrote beside them, with a note.
    assert (run_dir / "plots" / "confusion-mnist.png").is_file()
    assert "was trained on fashion-mnist; testing it on mnist" in capsys.readouterr().err
    assert main(["misclassified", str(run_dir), "--dataset", "mnist"]) == 0
    assert (run_dir / "plots" / "misclassified-mnist.png").is_file()


def test_predict_refuses_a_model_trained_on_another_dataset(quick_run, tmp_path, capsys):
    """predict prepares digits and answers with a digit: meaningless for Fashion-MNIST."""
    model = tmp_path / "fashion.npz"
    save_model(model, load_model(quick_run), metadata={"epoch": 2, "dataset": "fashion-mnist"})
    image = tmp_path / "seven.png"
    Image.fromarray(load_dataset("mnist").test_images[0]).save(image)
    capsys.readouterr()
    assert main(["predict", str(quick_run), str(image)]) == 0
    assert main(["predict", str(model), str(image)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"deepconvnet: error: {model}: trained on fashion-mnist; predict and serve read "
        "handwritten digits, for a model trained on mnist\n"
    )


def test_resume_of_a_config_without_its_options_is_one_line(quick_run, tmp_path, capsys):
    """A config.json without "config" used to resume with the default recipe: 60,000 images
    for 20 epochs, over the run's checkpoint."""
    run_dir = unfinished_copy(quick_run, tmp_path)
    config = json.loads((run_dir / "config.json").read_text())
    del config["config"]
    (run_dir / "config.json").write_text(json.dumps(config))
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"deepconvnet: error: {run_dir / 'config.json'}: no 'config' (the run's options)"


def test_clearing_a_run_that_another_process_trains_touches_nothing(tmp_path):
    """A second `ensemble train --resume` used to empty a running member before it was refused."""
    run_dir = tmp_path / "member-00"
    (run_dir / "plots").mkdir(parents=True)
    for name in ("config.json", "metrics.jsonl", "model.npz", "plots/learning_curves.png"):
        (run_dir / name).write_text("{}")
    before = sorted(p.name for p in run_dir.rglob("*"))
    busy = pytest.raises(training.DeepConvNetError, match="is being trained by another process")
    with training.hold_dir(run_dir), busy:
        training.clear_unstarted_run(run_dir)
    assert sorted(p.name for p in run_dir.rglob("*")) == before
    training.clear_unstarted_run(run_dir)  # nobody trains it: its own files go, nothing else
    assert list(run_dir.iterdir()) == []
