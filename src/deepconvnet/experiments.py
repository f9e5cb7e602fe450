"""The depth experiment: stacked 3x3 convolutions against single large filters of equal reach.

Section 8.1.3 of the book argues for depth with arithmetic: two stacked 3x3 convolutions see a 5x5
patch with 18 weights per channel pair instead of 25, three see 7x7 with 27 instead of 49, and
every extra layer adds a ReLU. This module puts the argument to a test on MNIST.

The pair of networks (:data:`DEPTH_MODELS`) differs only in how each stage reaches its receptive
field:

``depth-stack3x3``  conv3-conv3 (RF 5), pool, conv3-conv3-conv3 (RF 18), pool (RF 20)
``depth-large``     conv5       (RF 5), pool, conv7             (RF 18), pool (RF 20)

Both have the same channel widths, the same two pooling stages, the same dense head as
DeepConvNet (affine 50, ReLU, dropout, affine 10, dropout), and are trained by the same Trainer
with the same optimizer, seed and epochs. :func:`assert_matching_receptive_fields` proves the
receptive fields equal at every pooling stage with :func:`~deepconvnet.models.layer_summary`.
Both networks are defined and registered in :data:`~deepconvnet.models.MODELS` (by
:mod:`deepconvnet.models`, not here), so the Trainer builds them by name like any other:
``deepconvnet train --model depth-stack3x3`` trains one on its own, and their runs' ``model.npz``
load from the spec alone. This module adds only the experiment: the grid of training-set sizes,
the receptive-field proof, the table, the notes and the plot.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepconvnet import __version__
from deepconvnet.errors import DeepConvNetError, Interrupted
from deepconvnet.fileio import one_line
from deepconvnet.layers import (
    Convolution,
    MaxPooling,
)
from deepconvnet.models import (
    DEPTH_MODELS,
    DEPTH_STAGES,
    MODELS,
    Sequential,
    layer_summary,
)
from deepconvnet.threads import cpu_info

DEPTH_RECORD = "depth_experiment.json"  # the experiment's settings and finished cells
DEFAULT_SIZES = (1000, 5000, 60000)
QUICK_SIZES = (500, 2000)
QUICK_EPOCHS = 3
# Default epochs per training-set size: about 60,000 images seen, at least 4 and at most 30
# epochs (1000 -> 30, 5000 -> 12, 60000 -> 4), so small sets get enough optimizer steps.
IMAGES_PER_CELL = 60_000
MIN_EPOCHS, MAX_EPOCHS = 4, 30
# Differences up to this many test errors are called seed-to-seed noise in the notes: nine seeds
# of the book's recipe on the full training set spread with a standard deviation of 6 test
# errors (0.06%, bench/results/spread.md), so 20 is about three standard deviations.
NOISE_ERRORS = 20


def build_depth_model(name: str, **kwargs: Any) -> Sequential:
    """One of :data:`DEPTH_MODELS`, built with the registry's factory."""
    if name not in DEPTH_STAGES:
        raise DeepConvNetError(f"unknown depth model {name!r}; expected one of {DEPTH_MODELS}")
    return MODELS[name](**kwargs)


def stage_receptive_fields(model: Sequential) -> list[int]:
    """The receptive field at the output of every pooling layer (the end of each stage)."""
    rows = layer_summary(model)
    return [
        row["receptive_field"]
        for row, layer in zip(rows, model.body, strict=True)
        if isinstance(layer, MaxPooling)
    ]


def assert_matching_receptive_fields(models: Sequence[Sequential]) -> list[int]:
    """Raise unless every model has the same receptive field at the end of every stage."""
    fields_ = [stage_receptive_fields(m) for m in models]
    if any(f != fields_[0] for f in fields_):
        detail = ", ".join(f"{m.name} {f}" for m, f in zip(models, fields_, strict=True))
        raise DeepConvNetError(f"receptive fields differ: {detail}")
    return fields_[0]


def default_epochs(size: int) -> int:
    """Epochs for a training-set size when none are given (see :data:`IMAGES_PER_CELL`)."""
    return max(MIN_EPOCHS, min(MAX_EPOCHS, round(IMAGES_PER_CELL / size)))


def epochs_for_sizes(sizes: Sequence[int], epochs: Sequence[int] | None) -> list[int]:
    """One epoch count per size: given one (for all), one per size, or the default rule."""
    if not epochs:
        return [default_epochs(n) for n in sizes]
    if len(epochs) == 1:
        return [epochs[0]] * len(sizes)
    if len(epochs) != len(sizes):
        raise DeepConvNetError(
            f"--epochs gives {len(epochs)} values for {len(sizes)} sizes (give 1 or 1 per size)"
        )
    return list(epochs)


@dataclass
class DepthConfig:
    """What the depth experiment runs; everything not listed is the Trainer's default recipe."""

    sizes: tuple[int, ...] = DEFAULT_SIZES
    epochs: tuple[int, ...] = ()
    models: tuple[str, ...] = DEPTH_MODELS
    seed: int = 0
    threads: int | None = None
    dataset: str = "mnist"
    data_dir: str | None = None
    backend: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def run_depth_experiment(
    config: DepthConfig,
    out_dir: str | os.PathLike,
    *,
    log: Callable[[str], None] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train every (model, size) cell with :func:`deepconvnet.train.train` and tabulate it.

    Each cell gets a fresh run directory ``out_dir/runs/<model>-n<size>`` (recorded relative to
    ``out_dir``); ``config.extra`` is merged into the record (``"command"`` and a ``"notes"``
    list of strings are shown in the Markdown notes). ``depth_experiment.json`` is written before
    the first cell and, with ``depth_experiment.md`` and ``depth_experiment.png``, after every
    cell. ``resume`` carries on the experiment in ``out_dir`` with its recorded settings
    (``config`` is then ignored): finished cells are kept, an interrupted one resumes from its
    checkpoint. Returns the JSON record.
    """
    from deepconvnet.train import hold_dir

    log = log or (lambda message: None)
    out_dir = Path(out_dir)
    if resume and not (out_dir / DEPTH_RECORD).is_file():
        raise DeepConvNetError(f"{out_dir}: no depth experiment to resume (no {DEPTH_RECORD})")
    if not resume:
        _check_depth_can_start(config, out_dir, log)
        record = _new_depth_record(config)
        _write_depth_json(record, out_dir)
    with hold_dir(out_dir, "run"):  # one process at a time: a second resume would clear cells
        if resume:  # the record as the holder before us left it
            record = read_depth_record(out_dir)
            config = depth_config_from(record, threads=config.threads, data_dir=config.data_dir)
            # What the record says of the networks is recomputed, not trusted (the report
            # prints it): the names alone define them.
            models = [build_depth_model(name, backend="reference") for name in config.models]
            record["models"] = {m.name: _describe(m) for m in models}
            record["stage_receptive_fields"] = assert_matching_receptive_fields(models)
        done = {(cell["model"], cell["train_size"]) for cell in record["cells"]}
        for size, n_epochs in zip(config.sizes, record["epochs"], strict=True):
            for name in config.models:
                if (name, size) not in done:
                    _run_depth_cell(config, record, out_dir, name, size, n_epochs, log)
    return record


def _new_depth_record(config: DepthConfig) -> dict[str, Any]:
    models = [build_depth_model(name, backend="reference") for name in config.models]
    return {
        "experiment": "depth",
        "version": __version__,
        "models": {m.name: _describe(m) for m in models},
        "stage_receptive_fields": assert_matching_receptive_fields(models),
        "sizes": list(config.sizes),
        "epochs": epochs_for_sizes(config.sizes, config.epochs),
        "seed": config.seed,
        "threads": config.threads,
        "dataset": config.dataset,
        # absolute, so that a resume from another directory finds the same files
        "data_dir": str(Path(config.data_dir).absolute()) if config.data_dir else None,
        "backend": config.backend,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "cpu": cpu_info()},
        "cells": [],
        "total_seconds": 0.0,
        "cpu_seconds": 0.0,
        **config.extra,
    }


def _run_depth_cell(config, record, out_dir: Path, name: str, size: int, n_epochs: int, log):
    """Train (or finish) one cell, add it to the record and rewrite the report."""
    from deepconvnet.train import TrainConfig, clear_unstarted_run, run_state, train

    run_dir = out_dir / "runs" / f"{name}-n{size}"
    state = run_state(run_dir)
    started, started_cpu = time.perf_counter(), time.process_time()
    if state != "finished":
        log(f"depth: {name} on {size} images, {n_epochs} epochs -> {run_dir}")
        if state == "new":
            clear_unstarted_run(run_dir)  # stopped before its first checkpoint: start afresh
        train_config = TrainConfig(
            model=name,
            dataset=config.dataset,
            data_dir=config.data_dir,
            epochs=n_epochs,
            seed=config.seed,
            train_limit=size,
            threads=config.threads,
            backend=config.backend,
        )
        try:
            train(train_config, run_dir, resume=state == "resumable", log=log, progress=False)
        except Interrupted as stop:
            raise Interrupted(
                f"depth experiment stopped in {run_dir}; resume with: "
                f"deepconvnet experiment depth --resume {out_dir}"
            ) from stop
    record["cells"].append(_depth_cell(out_dir, run_dir, name, size, n_epochs))
    record["total_seconds"] = record.get("total_seconds", 0.0) + time.perf_counter() - started
    record["cpu_seconds"] = record.get("cpu_seconds", 0.0) + time.process_time() - started_cpu
    write_depth_report(record, out_dir)


def _depth_cell(out_dir: Path, run_dir: Path, name: str, size: int, n_epochs: int) -> dict:
    """A finished cell's row, read from its run directory (results.json, metrics.jsonl); a
    damaged file is one line, never a value the report cannot print."""
    from deepconvnet.train import METRICS, read_results

    results = read_results(run_dir)
    try:
        last_epoch = json.loads((run_dir / METRICS).read_text().splitlines()[-1])
        cell = {
            "model": name,
            "train_size": size,
            "epochs": n_epochs,
            **results,
            "final_train_loss": last_epoch["train_loss"],
            "run_dir": run_dir.relative_to(out_dir).as_posix(),
        }
        _check_cell(cell)
        return cell
    except (OSError, ValueError, IndexError, KeyError, TypeError, RecursionError) as exc:
        raise DeepConvNetError(f"{run_dir}: unreadable results ({one_line(exc)})") from exc


# What a cell of the record holds: the type of each value.
CELL_TYPES = {
    "model": str,
    "train_size": int,
    "epochs": int,
    "test_accuracy": float,
    "test_correct": int,
    "test_total": int,
    "train_seconds": float,
    "final_train_loss": float,
    "run_dir": str,
}


def _check_cell(cell: Any) -> None:
    """A ValueError unless ``cell`` has exactly the values of :data:`CELL_TYPES`."""
    if not isinstance(cell, dict) or set(cell) != set(CELL_TYPES):
        raise ValueError(f"a cell is not {{{', '.join(CELL_TYPES)}}}")
    for key, kind in CELL_TYPES.items():
        value = cell[key]
        number = kind is float and isinstance(value, int | float)
        if isinstance(value, bool) or not (isinstance(value, kind) or number):
            raise ValueError(f"a cell's {key} is {value!r}")


def read_depth_record(out_dir: Path) -> dict[str, Any]:
    """The record of the experiment in ``out_dir`` (what --resume carries on)."""
    path = out_dir / DEPTH_RECORD
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise DeepConvNetError(
            f"{out_dir}: no depth experiment to resume (no {path.name})"
        ) from None
    except (OSError, ValueError, RecursionError) as exc:
        raise DeepConvNetError(f"{path}: unreadable ({one_line(exc)})") from exc
    if not isinstance(record, dict) or record.get("experiment") != "depth":
        raise DeepConvNetError(f"{path}: not a depth experiment's record")
    return record


def depth_config_from(
    record: dict[str, Any], *, threads: int | None = None, data_dir: str | None = None
) -> DepthConfig:
    """The settings a recorded experiment ran with (``threads`` and ``data_dir``, when given,
    replace the recorded ones); a damaged record is one line, as is one of deepconvnet 0.2.0,
    which did not record its dataset."""
    try:
        if "dataset" not in record:
            raise ValueError("no dataset recorded (made before deepconvnet 0.2.1): start it anew")
        config = DepthConfig(
            sizes=_whole_numbers(record["sizes"], "sizes"),
            epochs=_whole_numbers(record["epochs"], "epochs"),
            models=tuple(record["models"]),
            seed=_whole_numbers([record["seed"]], "seed", low=0)[0],
            threads=threads or _optional(record["threads"], int, "threads"),
            dataset=record["dataset"],
            data_dir=data_dir or _optional(record.get("data_dir"), str, "data_dir"),
            backend=_optional(record.get("backend"), str, "backend"),
        )
        if not isinstance(config.dataset, str) or not config.dataset:
            raise ValueError(f"dataset is {config.dataset!r}")
        unknown = [name for name in config.models if name not in DEPTH_MODELS]
        if unknown or not isinstance(record["models"], dict) or not config.models:
            raise ValueError(f"models {list(record['models'])} are not the depth experiment's")
        if len(config.epochs) != len(config.sizes):
            raise ValueError("one epoch count per size expected")
        if not isinstance(record["cells"], list):
            raise ValueError("cells is not a list")
        for cell in record["cells"]:
            _check_cell(cell)
        for key in ("total_seconds", "cpu_seconds"):
            if not isinstance(record.get(key, 0.0), int | float):
                raise ValueError(f"{key} is not a number")
        machine = record.get("machine")
        if not isinstance(machine, dict) or not isinstance(machine.get("platform"), str):
            raise ValueError("no machine")
        _optional(machine.get("cpus"), int, "machine cpus")
        _optional(record.get("command"), str, "command")
        notes = record.get("notes", [])
        if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
            raise ValueError("notes is not a list of strings")
    except (KeyError, TypeError, ValueError) as exc:
        raise DeepConvNetError(f"{DEPTH_RECORD}: damaged record ({one_line(exc)})") from exc
    return config


def _whole_numbers(values: Any, name: str, low: int = 1) -> tuple[int, ...]:
    if not isinstance(values, list) or not values:
        raise ValueError(f"{name} is not a list of numbers")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} holds {value!r}")
    return tuple(values)


def _optional(value: Any, kind: type, name: str) -> Any:
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        raise ValueError(f"{name} is {value!r}")
    return value


def _write_depth_json(record: dict[str, Any], out_dir: Path) -> Path:
    from deepconvnet.fileio import atomic_write_text

    return atomic_write_text(out_dir / DEPTH_RECORD, json.dumps(record, indent=2) + "\n")


def _check_depth_can_start(config: DepthConfig, out_dir: Path, log: Callable[[str], None]) -> None:
    """Refuse before the first cell what would stop a later one (a size beyond the data, a used
    directory): the experiment may run for hours, and a half-made one blocks its own rerun."""
    from deepconvnet.data import load_dataset
    from deepconvnet.fileio import check_fresh_dir

    check_fresh_dir(out_dir, "choose another --out")
    n_train = len(load_dataset(config.dataset, config.data_dir, log=log).train_labels)
    too_big = [size for size in config.sizes if size > n_train]
    if too_big:
        raise DeepConvNetError(
            f"--sizes {too_big[0]} exceeds the {n_train} training images of {config.dataset}"
        )


def _describe(model: Sequential) -> dict[str, Any]:
    rows = layer_summary(model)
    convs = [layer for layer in model.body if isinstance(layer, Convolution)]
    return {
        "params": sum(r["params"] for r in rows),
        "conv_params": sum(int(sum(p.size for p in layer.params.values())) for layer in convs),
        "macs": sum(r["macs"] for r in rows),
        "conv_layers": len(convs),
        "kernels": [layer.kernel_size[0] for layer in convs],
        "stages": [list(s) for s in DEPTH_STAGES.get(model.name, ())],
    }


def write_depth_report(record: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write the experiment's JSON, Markdown table and accuracy plot; return their paths."""
    from deepconvnet.fileio import atomic_write_text
    from deepconvnet.plots import depth_experiment_plot

    out_dir = Path(out_dir)
    paths = {
        "json": _write_depth_json(record, out_dir),
        "markdown": atomic_write_text(out_dir / "depth_experiment.md", depth_markdown(record)),
    }
    if record["cells"]:
        paths["plot"] = depth_experiment_plot(record["cells"], out_dir / "depth_experiment.png")
    return paths


def depth_markdown(record: dict[str, Any]) -> str:
    """The experiment as a Markdown page: the networks, the results table, notes."""
    models = record["models"]
    lines = [
        "# Depth experiment: stacked 3x3 convolutions vs single large filters",
        "",
        "| network | convs (kernel sizes) | parameters | conv parameters | multiply-adds / image |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for name, m in models.items():
        kernels = " / ".join("-".join(f"{k}x{k}" for k in stage) for stage in m["stages"])
        lines.append(
            f"| {name} | {m['conv_layers']} ({kernels}) | {m['params']:,} | "
            f"{m['conv_params']:,} | {m['macs']:,} |"
        )
    lines += [
        "",
        "Receptive field at the end of each stage (after each 2x2 max-pool), computed by "
        f"`layer_summary` and asserted equal: {record['stage_receptive_fields']}.",
        "",
        "| training images | epochs | network | test accuracy | test errors | train time (s) |",
        "| ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for c in record["cells"]:
        errors = c["test_total"] - c["test_correct"]
        lines.append(
            f"| {c['train_size']:,} | {c['epochs']} | {c['model']} | {c['test_accuracy']:.4f} | "
            f"{errors} | {c['train_seconds']:.1f} |"
        )
    lines += ["", "Notes:", ""]
    lines += [f"- {note}" for note in depth_notes(record)]
    return "\n".join(lines) + "\n"


def depth_notes(record: dict[str, Any]) -> list[str]:
    """What a reader needs to weigh the table: recipe, machine, timing caveats, the outcome."""
    total = record.get("total_seconds")
    notes = [
        "Same recipe for both networks: channel widths 16 then 32, two 2x2 max-pools, dense head "
        "affine 50 - ReLU - dropout 0.5 - affine 10 - dropout 0.5 (the book's DeepConvNet head), "
        "He init, Adam lr 0.001, batch 100, seed "
        f"{record['seed']} (same data order for both), trained by the same Trainer as "
        "`deepconvnet train`; test accuracy on the full 10,000-image test set, evaluated once.",
        f"Training sets are the first N images of the {record.get('dataset', 'mnist')} "
        "training set.",
        f"deepconvnet {record.get('version', 'version not recorded')}. "
        f"Machine: {record['machine']['platform']}, {record['machine']['cpus']} CPU cores, "
        f"threads {record['threads'] or 'all'}. Times are wall clock and move with any other "
        "work on the same cores; compare the two networks within a row group rather than "
        "across runs.",
    ]
    if total is not None:
        notes.append(f"Whole experiment: {total / 60:.1f} minutes of wall time{_cpu_use(record)}.")
    if "command" in record:
        notes.append(f"Command: `{record['command']}`.")
    notes += record.get("notes", [])
    notes += _outcome_notes(record["cells"])
    return notes


def _cpu_use(record: dict[str, Any]) -> str:
    """How busy the cores were, from the CPU time the process used: a share well below the
    thread count says other work held the cores (records before 0.2.6 lack it)."""
    cpu, wall = record.get("cpu_seconds"), record.get("total_seconds")
    if not cpu or not wall:
        return ""
    return f", {cpu:,.0f} CPU-seconds ({cpu / wall:.2f} cores busy on average)"


def _outcome_notes(cells: list[dict[str, Any]]) -> list[str]:
    """One sentence per training-set size saying which network won and by how many errors."""
    notes = []
    sizes = sorted({c["train_size"] for c in cells})
    for size in sizes:
        row = {c["model"]: c for c in cells if c["train_size"] == size}
        if len(row) != 2:
            continue
        (a, ca), (b, cb) = sorted(row.items(), key=lambda kv: -kv[1]["test_accuracy"])
        diff = cb["test_total"] - cb["test_correct"] - (ca["test_total"] - ca["test_correct"])
        if diff == 0:
            notes.append(f"{size:,} images: a tie ({ca['test_accuracy']:.4f}).")
            continue
        caveat = (
            f"one seed, and a difference of {NOISE_ERRORS} errors or fewer is within "
            "seed-to-seed noise"
            if diff <= NOISE_ERRORS
            else "one seed"
        )
        notes.append(
            f"{size:,} images: {a} {ca['test_accuracy']:.4f} vs {b} {cb['test_accuracy']:.4f} "
            f"({diff} fewer test errors for {a}; {caveat})."
        )
    return notes


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"1000,5000,60000"`` -> (1000, 5000, 60000); positive integers, one-line errors."""
    values = _parse_ints(text, "--sizes")
    if len(set(values)) != len(values):
        raise DeepConvNetError(f"--sizes has repeated values: {text!r}")
    return tuple(values)


def parse_epochs(text: str) -> tuple[int, ...]:
    """``"3"`` or ``"30,10,2"``; positive integers."""
    return tuple(_parse_ints(text, "--epochs"))


def _parse_ints(text: str, option: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]  # an empty item ("100,") is refused
    except ValueError:
        raise DeepConvNetError(
            f"{option}: expected comma-separated integers, got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise DeepConvNetError(f"{option}: expected positive integers, got {text!r}")
    return values
