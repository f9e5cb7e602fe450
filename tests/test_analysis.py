"""Seeing inside: receptive fields, misclassified lists, figures, the depth experiment, the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from fixtures_data import tiny  # noqa: F401  (pytest fixture)
from PIL import Image

from deepconvnet import __version__
from deepconvnet.analysis import (
    evaluate_predictions,
    feature_maps,
    first_conv_weights,
    format_confusion,
    misclassified,
)
from deepconvnet.checkpoint import load_model, save_model
from deepconvnet.cli import main
from deepconvnet.errors import DeepConvNetError, Interrupted
from deepconvnet.experiments import (
    DEPTH_MODELS,
    NOISE_ERRORS,
    DepthConfig,
    assert_matching_receptive_fields,
    build_depth_model,
    default_epochs,
    depth_notes,
    epochs_for_sizes,
    parse_sizes,
    read_depth_record,
    run_depth_experiment,
    stage_receptive_fields,
)
from deepconvnet.layers import Affine, Convolution, MaxPooling, ReLU, SoftmaxWithLoss
from deepconvnet.models import MODELS, Sequential, deepconvnet, layer_summary
from deepconvnet.plots import (
    depth_experiment_plot,
    feature_maps_grid,
    filters_grid,
    misclassified_grid,
)


def test_confusion_rows_are_true_labels_and_per_class_accuracy_is_recall():
    """Five 0s (two called 1), one 1, two 2s (one called 0): per-class accuracy is each true
    class's share predicted right, so 3/5, 1/1, 1/2, and class 3's absent row is NaN-free 0."""
    labels = np.array([0, 0, 0, 0, 0, 1, 2, 2])
    predicted = np.array([0, 1, 0, 1, 0, 1, 0, 2])
    report = evaluate_predictions(predicted, labels, num_classes=4)
    assert report["confusion"] == [[3, 2, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    assert report["per_class"] == pytest.approx([0.6, 1.0, 0.5, 0.0])
    assert (report["correct"], report["total"], report["accuracy"]) == (5, 8, 5 / 8)
    table = format_confusion(report["confusion"], ["0", "1", "2", "3"]).splitlines()
    assert table[1].split() == ["0", "3", "2", "0", "0", "0.6000"]
    assert table[3].split() == ["2", "1", "0", "1", "0", "0.5000"]
    assert table[4].split() == ["3", "0", "0", "0", "0", "-"]


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    with Image.open(path) as image:
        return image.size


def tiny_model(seed: int = 0) -> Sequential:
    """conv3 (4 filters) - ReLU - pool - affine 10: small enough to run 10,000 images in a blink."""
    layers = [
        Convolution(1, 4, 3, 1, 1),
        ReLU(),
        MaxPooling(2, 2, 2),
        Affine(4 * 14 * 14, 10),
        SoftmaxWithLoss(),
    ]
    return Sequential(layers, rng=np.random.default_rng(seed), name="tiny").initialize()


# -- receptive fields and weights -------------------------------------------------------------
@pytest.mark.parametrize(
    ("depth", "rf", "stacked", "single"), [(1, 3, 9, 9), (2, 5, 18, 25), (3, 7, 27, 49)]
)
def test_stacked_3x3_receptive_field_and_weights(depth, rf, stacked, single):
    stack = Sequential([Convolution(1, 1, 3) for _ in range(depth)], input_shape=(1, 20, 20))
    rows = layer_summary(stack)
    assert [r["receptive_field"] for r in rows] == [3 + 2 * i for i in range(depth)]
    assert rows[-1]["receptive_field"] == rf
    assert sum(r["params"] - 1 for r in rows) == stacked  # minus each layer's bias
    one = Sequential([Convolution(1, 1, rf)], input_shape=(1, 20, 20))
    assert layer_summary(one)[0]["receptive_field"] == rf
    assert layer_summary(one)[0]["params"] - 1 == single


def test_depth_pair_receptive_fields_match_at_every_stage():
    stack, large = (build_depth_model(name, backend="reference") for name in DEPTH_MODELS)
    assert stage_receptive_fields(stack) == stage_receptive_fields(large) == [6, 20]
    assert assert_matching_receptive_fields([stack, large]) == [6, 20]
    # the convolutions right before each pool reach the same field too: 5 and 18
    for model in (stack, large):
        rows = layer_summary(model)
        before_pool = [
            rows[i - 2]["receptive_field"]
            for i, layer in enumerate(model.body)
            if isinstance(layer, MaxPooling)
        ]
        assert before_pool == [5, 18]


def test_depth_pair_differs_only_in_the_convolutions():
    stack, large = (build_depth_model(name, backend="reference") for name in DEPTH_MODELS)
    kernels = {
        m.name: [layer.kernel_size[0] for layer in m.body if isinstance(layer, Convolution)]
        for m in (stack, large)
    }
    assert kernels == {"depth-stack3x3": [3, 3, 3, 3, 3], "depth-large": [5, 7]}
    conv_params = {
        m.name: sum(
            layer.params["W"].size + layer.params["b"].size
            for layer in m.body
            if isinstance(layer, Convolution)
        )
        for m in (stack, large)
    }
    # by hand: 1*16*9+16 + 16*16*9+16 + 16*32*9+32 + 2*(32*32*9+32)  vs  1*16*25+16 + 16*32*49+32
    assert conv_params == {"depth-stack3x3": 25616, "depth-large": 25536}
    head = [
        [
            (type(layer).__name__, layer.spec())
            for layer in m.layers
            if not isinstance(layer, (Convolution, ReLU, MaxPooling))
        ]
        for m in (stack, large)
    ]
    assert head[0] == head[1]
    assert stack.output_shapes()[-1] == large.output_shapes()[-1] == (10,)


def test_depth_models_are_registered_and_loadable(tmp_path):
    for name in DEPTH_MODELS:
        assert name in MODELS
        model = MODELS[name](rng=np.random.default_rng(1), backend="reference")
        save_model(tmp_path / f"{name}.npz", model)
        loaded = load_model(tmp_path / f"{name}.npz", backend="reference")
        x = np.random.default_rng(2).random((3, 1, 28, 28), dtype=np.float32)
        np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))


def test_epochs_rules():
    assert [default_epochs(n) for n in (1000, 5000, 60000)] == [30, 12, 4]
    assert epochs_for_sizes((10, 20), (3,)) == [3, 3]
    assert epochs_for_sizes((10, 20), (3, 5)) == [3, 5]
    with pytest.raises(DeepConvNetError, match="2 values for 3 sizes"):
        epochs_for_sizes((1, 2, 3), (1, 2))
    assert parse_sizes("1000,5000") == (1000, 5000)
    for bad in ("10,x", "0,5", "5,5", "", "100,", ",100"):
        with pytest.raises(DeepConvNetError, match="--sizes"):
            parse_sizes(bad)


# -- misclassified ------------------------------------------------------------------------------
def test_misclassified_is_exactly_the_wrong_predictions_most_confident_first(tmp_path):
    save_model(tmp_path / "model.npz", tiny_model())
    model = load_model(tmp_path / "model.npz")
    x = np.random.default_rng(3).random((40, 1, 28, 28), dtype=np.float32)
    proba = model.predict_proba(x)
    predicted = proba.argmax(axis=1)
    labels = predicted.copy()
    labels[::3] = (labels[::3] + 1) % 10  # every third image made wrong
    mistakes = misclassified(proba, labels)
    assert {r["index"] for r in mistakes} == set(np.flatnonzero(predicted != labels).tolist())
    assert len(mistakes) == 14
    for r in mistakes:
        assert r["label"] == labels[r["index"]] != r["predicted"] == predicted[r["index"]]
        assert r["probability"] == pytest.approx(float(proba[r["index"]].max()))
    confidences = [r["probability"] for r in mistakes]
    assert confidences == sorted(confidences, reverse=True)


def test_misclassified_ties_keep_index_order_and_types_are_json():
    proba = np.array([[0.2, 0.8], [0.8, 0.2], [0.2, 0.8], [0.9, 0.1]])
    mistakes = misclassified(proba, np.array([0, 0, 0, 1]))
    assert mistakes == [
        {"index": 3, "label": 1, "predicted": 0, "probability": 0.9},
        {"index": 0, "label": 0, "predicted": 1, "probability": 0.8},
        {"index": 2, "label": 0, "predicted": 1, "probability": 0.8},
    ]
    json.dumps(mistakes)
    assert misclassified(proba, np.array([1, 0, 1, 0])) == []
    with pytest.raises(ValueError):
        misclassified(proba, np.array([0, 1]))


# -- feature maps and filters -----------------------------------------------------------------
def test_feature_maps_follow_the_layers_and_leave_the_model_alone():
    model = build_depth_model("depth-large", rng=np.random.default_rng(0), backend="fast")
    image = np.random.default_rng(4).random((1, 28, 28))
    before = model.predict_proba(image[None].astype(np.float32))
    stages = feature_maps(model, image)
    labels = [label.split("\n")[0] for label, _ in stages]
    assert labels == ["0.Conv 5x5 + ReLU", "2.MaxPool 2x2", "3.Conv 7x7 + ReLU", "5.MaxPool 2x2"]
    assert [m.shape for _, m in stages] == [(16, 28, 28), (16, 14, 14), (32, 14, 14), (32, 7, 7)]
    assert stages[0][0].endswith("16x28x28")
    # the first stage is relu(conv(image)) computed independently
    conv = model.layers[0]
    W, b = conv.params["W"].astype(np.float64), conv.params["b"].astype(np.float64)
    padded = np.pad(image[0], 2)
    expected = np.array(
        [
            [
                [np.sum(padded[i : i + 5, j : j + 5] * W[f, 0]) + b[f] for j in range(28)]
                for i in range(28)
            ]
            for f in range(16)
        ]
    )
    np.testing.assert_allclose(stages[0][1], np.maximum(expected, 0), rtol=1e-5, atol=1e-5)
    assert model.backend == "fast" and model.dtype == np.float32
    np.testing.assert_array_equal(model.predict_proba(image[None].astype(np.float32)), before)
    np.testing.assert_array_equal(first_conv_weights(model), conv.params["W"])


def test_feature_maps_show_a_convolution_after_its_batchnorm_and_relu():
    model = deepconvnet(rng=np.random.default_rng(0), backend="reference", batchnorm=True)
    stages = feature_maps(model, np.random.default_rng(6).random((1, 28, 28)))
    labels = [label.split("\n")[0] for label, _ in stages]
    assert labels[:3] == ["0.Conv 3x3 + BN + ReLU", "3.Conv 3x3 + BN + ReLU", "6.MaxPool 2x2"]
    assert len(labels) == 9  # 6 convolutions, 3 poolings
    assert all(maps.min() >= 0 for label, maps in stages if "ReLU" in label)
    bare = Sequential([Convolution(1, 2, 3), MaxPooling(2)], name="bare").initialize()
    bare_labels = [label for label, _ in feature_maps(bare, np.ones((1, 28, 28)))]
    assert bare_labels == ["0.Conv 3x3\n2x26x26", "1.MaxPool 2x2\n2x13x13"]


def test_first_conv_weights_needs_a_convolution():
    dense = Sequential([Affine(784, 10), SoftmaxWithLoss()], name="dense")
    with pytest.raises(DeepConvNetError, match="no convolution"):
        first_conv_weights(dense)


# -- figures ----------------------------------------------------------------------------------
def test_figures_are_pngs_of_sensible_size(tmp_path):
    rng = np.random.default_rng(5)
    records = [
        {"index": i, "label": i % 10, "predicted": (i + 1) % 10, "probability": 0.5}
        for i in range(6)
    ]
    w, h = png_size(misclassified_grid(rng.random((6, 28, 28)), records, tmp_path / "m.png"))
    assert 800 <= w <= 1100 and 450 <= h <= 700  # 5 columns x 2 rows
    w, h = png_size(filters_grid(rng.normal(size=(16, 1, 3, 3)), tmp_path / "f.png"))
    assert 800 <= w <= 1200 and 250 <= h <= 450  # 8 columns x 2 rows + colour bar
    model = build_depth_model("depth-large", backend="reference")
    image = rng.random((1, 28, 28))
    w, h = png_size(feature_maps_grid(image[0], feature_maps(model, image), tmp_path / "fm.png"))
    assert 900 <= w <= 1400 and 500 <= h <= 800  # input + 4 stage rows, 9 columns
    cells = [
        {"model": m, "train_size": n, "epochs": 2, "test_accuracy": a, "train_seconds": 1.0}
        for m, a in zip(DEPTH_MODELS, (0.9, 0.8), strict=True)
        for n in (100, 1000)
    ]
    w, h = png_size(depth_experiment_plot(cells, tmp_path / "d.png"))
    assert 900 <= w <= 1200 and 350 <= h <= 550
    w, h = png_size(misclassified_grid(np.zeros((0, 28, 28)), [], tmp_path / "none.png"))
    assert w > 100 and h > 100


# -- the depth experiment, end to end on a tiny dataset -----------------------------------------
def test_depth_experiment_runs_every_cell_through_the_trainer(tiny, tmp_path):  # noqa: F811
    config = DepthConfig(
        sizes=(6, 12),
        epochs=(1,),
        dataset="tiny",
        data_dir=str(tiny.idx_dir),
        threads=1,
        extra={"notes": ["a note from the caller"]},
    )
    out = tmp_path / "depth"
    record = run_depth_experiment(config, out)
    cells = record["cells"]
    assert [(c["train_size"], c["model"]) for c in cells] == [
        (6, "depth-stack3x3"),
        (6, "depth-large"),
        (12, "depth-stack3x3"),
        (12, "depth-large"),
    ]
    for c in cells:
        assert c["run_dir"] == f"runs/{c['model']}-n{c['train_size']}"
        results = json.loads((out / c["run_dir"] / "results.json").read_text())
        assert c["test_accuracy"] == results["test_accuracy"]
        assert c["test_total"] == 5 and c["epochs"] == 1
        config_json = json.loads((out / c["run_dir"] / "config.json").read_text())
        assert config_json["n_train"] == c["train_size"]
        assert config_json["config"]["model"] == c["model"]
    saved = json.loads((tmp_path / "depth" / "depth_experiment.json").read_text())
    assert saved["cells"] == cells
    assert saved["stage_receptive_fields"] == [6, 20]
    assert saved["models"]["depth-stack3x3"]["conv_params"] == 25616
    markdown = (tmp_path / "depth" / "depth_experiment.md").read_text()
    assert "| 12 | 1 | depth-large |" in markdown
    # CPU time measured beside wall time says how busy the cores were, instead of a guess
    assert 0 < saved["cpu_seconds"] <= os.cpu_count() * saved["total_seconds"] + 0.5
    assert f"{saved['cpu_seconds']:,.0f} CPU-seconds (" in markdown
    assert "- a note from the caller" in markdown
    assert saved["version"] == __version__
    assert f"deepconvnet {__version__}. Machine:" in markdown
    assert png_size(tmp_path / "depth" / "depth_experiment.png")[0] > 500


def test_depth_experiment_refuses_what_a_later_cell_would_before_training_any(
    tiny,  # noqa: F811
    tmp_path,
):
    """A size beyond the data used to stop the experiment after the smaller cells had trained,
    leaving a half-made directory that blocked the corrected command."""
    out = tmp_path / "depth"
    too_big = len(tiny.arrays["train_labels"]) + 1
    config = DepthConfig(
        sizes=(6, too_big), epochs=(1,), dataset="tiny", data_dir=str(tiny.idx_dir)
    )
    with pytest.raises(DeepConvNetError, match=f"--sizes {too_big} exceeds the {too_big - 1}"):
        run_depth_experiment(config, out)
    assert not out.exists()
    (out / "runs").mkdir(parents=True)
    (out / "depth_experiment.json").write_text("{}")
    with pytest.raises(DeepConvNetError, match="already exists and is not empty"):
        run_depth_experiment(DepthConfig(sizes=(6,), epochs=(1,), dataset="tiny"), out)
    assert (out / "depth_experiment.json").read_text() == "{}"


def test_a_stopped_depth_experiment_resumes_to_the_same_table(tiny, tmp_path, monkeypatch):  # noqa: F811
    """Stopping used to point at `train --resume` of one cell; the rest never came and the
    experiment's directory refused a rerun."""
    import deepconvnet.train as training

    config = DepthConfig(
        sizes=(6, 12), epochs=(1,), dataset="tiny", data_dir=str(tiny.idx_dir), threads=1
    )
    straight = run_depth_experiment(config, tmp_path / "straight")
    real_train, calls = training.train, []

    def stopped_at_the_third_cell(train_config, run_dir, **kwargs):
        calls.append(run_dir)
        if len(calls) == 3:  # killed at an epoch's end, before its checkpoint was written
            (Path(run_dir) / "plots").mkdir(parents=True)
            for name in ("config.json", "metrics.jsonl", "model.npz", "plots/learning_curves.png"):
                (Path(run_dir) / name).write_text("{}")
            raise training.TrainingInterrupted(Path(run_dir))
        return real_train(train_config, run_dir, **kwargs)

    out = tmp_path / "stopped"
    monkeypatch.setattr(training, "train", stopped_at_the_third_cell)
    with pytest.raises(Interrupted, match=f"deepconvnet experiment depth --resume {out}$"):
        run_depth_experiment(config, out)
    assert len(read_depth_record(out)["cells"]) == 2
    monkeypatch.setattr(training, "train", real_train)
    resumed = run_depth_experiment(DepthConfig(), out, resume=True)
    keys = ("model", "train_size", "epochs", "test_correct", "final_train_loss")
    assert [[c[k] for k in keys] for c in resumed["cells"]] == [
        [c[k] for k in keys] for c in straight["cells"]
    ]
    assert json.loads((out / "depth_experiment.json").read_text())["cells"] == resumed["cells"]
    assert resumed["data_dir"] == str(tiny.idx_dir.absolute())  # found from anywhere
    with pytest.raises(DeepConvNetError, match="no depth experiment to resume"):
        run_depth_experiment(DepthConfig(), tmp_path / "straight" / "runs", resume=True)


@pytest.mark.parametrize(
    "damage,words",
    [
        (lambda r: r.pop("dataset"), "made before deepconvnet 0.2.1"),  # 0.2.0 had no resume
        (lambda r: r.update(cells=[1, 2]), "a cell is not"),
        (lambda r: r["cells"][0].update(test_accuracy="0.9"), "test_accuracy is '0.9'"),
        (lambda r: r["cells"][0].update(train_size=[200]), "train_size is [200]"),
        (lambda r: r.update(models=["depth-large"]), "are not the depth experiment's"),
        (lambda r: r.update(models={"deepconvnet": {}}), "are not the depth experiment's"),
        (lambda r: r.update(sizes=[6, "x"]), "sizes holds 'x'"),
        (lambda r: r.pop("machine"), "no machine"),
        (lambda r: r.update(machine={}), "no machine"),
        (lambda r: r.update(notes="x"), "notes is not a list of strings"),
    ],
)
def test_a_damaged_depth_record_is_a_one_line_error(tiny, tmp_path, damage, words):  # noqa: F811
    config = DepthConfig(sizes=(6,), epochs=(1,), dataset="tiny", data_dir=str(tiny.idx_dir))
    out = tmp_path / "depth"
    record = run_depth_experiment(config, out)
    damage(record)
    (out / "depth_experiment.json").write_text(json.dumps(record))
    with pytest.raises(DeepConvNetError, match="damaged record") as excinfo:
        run_depth_experiment(DepthConfig(), out, resume=True)
    assert words in str(excinfo.value)


def test_a_depth_experiment_is_run_by_one_process_at_a_time(tiny, tmp_path):  # noqa: F811
    """A second --resume used to clear the running cell's files before it was refused."""
    import deepconvnet.train as training

    config = DepthConfig(sizes=(6,), epochs=(1,), dataset="tiny", data_dir=str(tiny.idx_dir))
    out = tmp_path / "depth"
    record = run_depth_experiment(config, out)
    record["cells"] = []  # as if its cells were still to come
    (out / "depth_experiment.json").write_text(json.dumps(record))
    cell = out / "runs" / "depth-stack3x3-n6"
    (cell / "results.json").unlink()
    (cell / "checkpoint.npz").unlink(missing_ok=True)
    before = sorted(p.name for p in cell.iterdir())
    busy = pytest.raises(DeepConvNetError, match="is being run by another process")
    with training.hold_dir(out, "run"), busy:  # another process runs it
        run_depth_experiment(DepthConfig(), out, resume=True)
    assert sorted(p.name for p in cell.iterdir()) == before


def test_depth_resume_takes_no_other_option(tmp_path, capsys):
    argv = ["experiment", "depth", "--resume", str(tmp_path), "--sizes", "100"]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        "deepconvnet: error: --resume carries on with the experiment's saved options; drop "
        "--sizes (only --threads and --data-dir may be given with it)"
    )


# -- CLI --------------------------------------------------------------------------------------
def _cell(size: int, model: str, errors: int) -> dict:
    return {
        "train_size": size,
        "model": model,
        "test_total": 10_000,
        "test_correct": 10_000 - errors,
        "test_accuracy": (10_000 - errors) / 10_000,
    }


def test_depth_notes_call_only_small_differences_noise():
    record = {
        "seed": 0,
        "threads": 2,
        "machine": {"platform": "test", "cpus": 2},
        "cells": [
            _cell(1000, "depth-stack3x3", 300),
            _cell(1000, "depth-large", 415),  # 115 errors apart: not noise
            _cell(60000, "depth-stack3x3", 80),
            _cell(60000, "depth-large", 80 + NOISE_ERRORS),  # at the threshold: noise
        ],
    }
    small, large = depth_notes(record)[-2:][::-1]
    assert large.startswith("1,000 images: depth-stack3x3 0.9700 vs depth-large 0.9585")
    assert "(115 fewer test errors for depth-stack3x3; one seed)." in large
    assert "noise" not in large
    assert f"({NOISE_ERRORS} fewer test errors for depth-stack3x3; one seed" in small
    assert "within seed-to-seed noise" in small


def test_missing_model_is_one_line_exit_2(tmp_path, capsys):
    for argv in (
        ["misclassified", str(tmp_path / "nope")],
        ["visualize", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "v")],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no such checkpoint" in err


def test_experiment_depth_bad_epochs_exit_2(capsys):
    assert main(["experiment", "depth", "--sizes", "10,20,30", "--epochs", "1,2"]) == 2
    assert "2 values for 3 sizes" in capsys.readouterr().err


@pytest.mark.mnist
def test_misclassified_reports_even_where_it_cannot_save_the_default_figure(tmp_path, capsys):
    """The default figure beside the model is a by-product (as evaluate's confusion plot is);
    a figure asked for with --out must be written."""
    save_model(tmp_path / "run" / "model.npz", tiny_model(seed=7))
    (tmp_path / "run" / "plots").write_text("a file where plots/ would go")
    assert main(["misclassified", str(tmp_path / "run"), "--json", "--max", "6"]) == 0
    captured = capsys.readouterr()
    assert 5000 < len(json.loads(captured.out)) < 10000
    assert captured.err.strip().splitlines()[-1].startswith("deepconvnet: warning: no figure (")
    out = tmp_path / "run" / "plots" / "m.png"
    assert main(["misclassified", str(tmp_path / "run"), "--out", str(out)]) == 2
    assert "is not a directory" in capsys.readouterr().err


@pytest.mark.mnist
def test_cli_misclassified_and_visualize_on_mnist(tmp_path, capsys):
    save_model(tmp_path / "run" / "model.npz", tiny_model(seed=7))
    assert main(["misclassified", str(tmp_path / "run"), "--json", "--max", "6"]) == 0
    mistakes = json.loads(capsys.readouterr().out)
    assert 5000 < len(mistakes) < 10000  # an untrained 10-way model is mostly wrong
    assert all(set(r) == {"index", "label", "predicted", "probability"} for r in mistakes)
    assert all(r["label"] != r["predicted"] for r in mistakes)
    assert len({r["index"] for r in mistakes}) == len(mistakes)
    probabilities = [r["probability"] for r in mistakes]
    assert probabilities == sorted(probabilities, reverse=True)
    w, h = png_size(tmp_path / "run" / "plots" / "misclassified.png")
    assert 800 <= w <= 1100 and 450 <= h <= 700  # 6 images: 5 x 2

    out = tmp_path / "few.png"
    assert (
        main(
            ["misclassified", str(tmp_path / "run" / "model.npz"), "--max", "3", "--out", str(out)]
        )
        == 0
    )
    assert "figure:" in capsys.readouterr().out
    w, h = png_size(out)
    assert 400 <= w <= 700 and 200 <= h <= 400  # 3 images in one row

    assert (
        main(["visualize", str(tmp_path / "run"), "--out", str(tmp_path / "vis"), "--index", "3"])
        == 0
    )
    w, h = png_size(tmp_path / "vis" / "filters.png")
    assert 450 <= w <= 1200 and 150 <= h <= 300  # 4 filters in one row
    w, h = png_size(tmp_path / "vis" / "feature_maps.png")
    assert 450 <= w <= 900 and 300 <= h <= 600  # input + conv + pool rows, 4 channels
    assert (
        main(
            ["visualize", str(tmp_path / "run"), "--out", str(tmp_path / "v2"), "--index", "10000"]
        )
        == 2
    )
    assert "out of range" in capsys.readouterr().err


@pytest.mark.mnist
def test_a_model_of_another_input_shape_is_one_line_exit_2(tmp_path, capsys):
    colour = deepconvnet(input_shape=(3, 28, 28))
    path = save_model(tmp_path / "run" / "model.npz", colour)
    for argv in (
        ["misclassified", str(path)],
        ["visualize", str(path), "--out", str(tmp_path / "vis")],
        ["evaluate", str(path), "--json"],
    ):
        assert main(argv) == 2, argv
        *log, error = capsys.readouterr().err.splitlines()
        assert all(line.startswith("mnist: served by") for line in log), log  # data source
        assert error.startswith(f"deepconvnet: error: {path}: the model expects input of shape")
        assert error.endswith("(3, 28, 28) (C, H, W), but the mnist test images are (1, 28, 28)")
    assert not (tmp_path / "run" / "plots").exists() and not (tmp_path / "vis").exists()
