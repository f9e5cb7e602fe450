"""The training loop: epochs, progress, metrics, checkpoints, resume and clean interruption.

A run directory holds everything a run produced and everything needed to carry it on:

``config.json``        every hyperparameter, versions, dataset checksums, wall time
``metrics.jsonl``      one record per finished epoch
``checkpoint.npz``     resume state: parameters, optimizer state, RNG state, position in the data
``model.npz``          the trained model (parameters + spec), rebuilt from this file alone
``optimizer.npz``      the optimizer's state at the end
``results.json``       the single test-set evaluation at the end
``plots/learning_curves.png``

Resuming is exact: the data order of each epoch is a pure function of (seed, epoch), the dropout
Generator's state is saved, and the running epoch statistics are saved, so a resumed run finishes
with parameters bit-identical to an uninterrupted one (same thread count and BLAS).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import platform
import resource
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext, suppress
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deepconvnet import __version__
from deepconvnet.errors import CheckpointError, DeepConvNetError, Interrupted
from deepconvnet.fileio import (
    atomic_save_npz,
    atomic_write_json,
    atomic_write_text,
    check_fresh_dir,
    is_staged_write,
    json_to_array,
    one_line,
    outermost_missing,
    remove_empty_dirs,
)
from deepconvnet.streams import DROPOUT, INIT, stream
from deepconvnet.streams import VERSION as STREAMS_VERSION

if TYPE_CHECKING:  # the data and the models load when a run starts
    from deepconvnet.data import Dataset
    from deepconvnet.models import Sequential

CHECKPOINT = "checkpoint.npz"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
MODEL = "model.npz"
OPTIMIZER = "optimizer.npz"
RESULTS = "results.json"
TRAINING_CHECKPOINT = "training checkpoint"  # what a checkpoint.npz is, in error messages


class TrainingInterrupted(Interrupted):
    """Raised after a clean stop on SIGINT/SIGTERM; the checkpoint on disk is resumable."""

    def __init__(self, run_dir: Path):
        super().__init__(f"interrupted; resume with: deepconvnet train --resume {run_dir}")
        self.run_dir = run_dir


class TrainingDiverged(DeepConvNetError):
    """The loss became NaN or infinite. A checkpoint already written is kept; a run with none yet
    is discarded (see :func:`_fresh_run_dir`)."""


@dataclass
class TrainConfig:
    """Every choice that shapes a run. Defaults are the book's recipe (section 8.1.1)."""

    model: str = "deepconvnet"
    dataset: str = "mnist"
    data_dir: str | None = None
    epochs: int = 20
    batch_size: int = 100
    sampling: str = "shuffle"
    lr: float = 0.001
    optimizer: str = "adam"
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    augment: str | None = None
    seed: int = 0
    train_limit: int | None = None
    val: int = 0
    threads: int | None = None
    backend: str | None = None
    dtype: str = "float32"
    checkpoint_every: int = 0
    model_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def problem(self) -> str | None:
        """What is wrong with a configuration that did not come through the command line's
        checks (a config.json edited by hand), or None. Names are checked where they are used."""
        from deepconvnet.data.loader import SAMPLINGS

        for name, (kinds, least) in _FIELD_RULES.items():
            problem = value_problem(name, getattr(self, name), kinds, least)
            if problem:
                return problem
        for name, choices in (("sampling", SAMPLINGS), ("dtype", DTYPES)):
            if getattr(self, name) not in choices:
                return f"{name} is {getattr(self, name)!r} (expected one of {', '.join(choices)})"
        return _model_options_problem(self.model_options)


def _model_options_problem(options: dict[str, Any]) -> str | None:
    """The model options a run may set (only ``--dropout`` sets any): others would reach the
    model's constructor unchecked."""
    for name, value in options.items():
        if name != "dropout_ratio":
            return f"model_options has {name!r} (the only model option is dropout_ratio)"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            return f"model_options.dropout_ratio is {value!r} (expected a number in [0, 1))"
    return None


def value_problem(name: str, value: Any, kinds: tuple[type, ...], least: float) -> str | None:
    """What is wrong with one value read from JSON (of ``kinds``; a number, finite and at least
    ``least``), or None: one rule for every hand-editable file (config.json, ensemble.json)."""
    if isinstance(value, bool) or not isinstance(value, kinds):
        return f"{name} is {value!r}"
    if isinstance(value, (int, float)) and not (least <= value < math.inf):
        return f"{name} is {value!r} (expected a finite number >= {least})"
    return None


DTYPES = ("float32", "float64")  # the arithmetic a run may compute in
_OPTIONAL = type(None)
# Each field's JSON types and, for numbers, the least value it may take.
_FIELD_RULES: dict[str, tuple[tuple[type, ...], float]] = {
    **dict.fromkeys(
        ("model", "dataset", "sampling", "optimizer", "lr_schedule", "dtype"), ((str,), 0)
    ),
    **dict.fromkeys(("data_dir", "augment", "backend"), ((str, _OPTIONAL), 0)),
    **dict.fromkeys(("epochs", "batch_size"), ((int,), 1)),
    **dict.fromkeys(("seed", "val", "checkpoint_every"), ((int,), 0)),
    **dict.fromkeys(("train_limit", "threads"), ((int, _OPTIONAL), 1)),
    "lr": ((int, float), 1e-300),
    "weight_decay": ((int, float), 0),
    "model_options": ((dict,), 0),
}


@dataclass
class TrainState:
    """Where a run stands: the part of the checkpoint that is not arrays."""

    epoch: int = 0  # the epoch in progress (0-based)
    batch: int = 0  # the next batch of that epoch
    step: int = 0  # optimizer steps taken in all
    loss_sum: float = 0.0  # running sums over the epoch in progress
    correct: int = 0
    seen: int = 0
    epoch_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    rng_state: dict[str, Any] = field(default_factory=dict)
    train_seconds: float = 0.0


@dataclass
class RunResult:
    run_dir: Path
    test_accuracy: float
    correct: int
    total: int
    history: list[dict[str, Any]]
    wall_seconds: float


# --------------------------------------------------------------------------------------------
# Signals: finish the step, checkpoint, exit 130


class StopFlag:
    """Set by SIGINT/SIGTERM so the loop can stop between steps instead of mid-update."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second Ctrl-C means: stop now
            raise KeyboardInterrupt
        self.requested = True
        name = signal.Signals(signum).name
        print(
            f"\n{name} received: finishing the current step and saving a checkpoint...",
            file=sys.stderr,
        )


@contextmanager
def stop_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """Route SIGINT and SIGTERM to ``handler`` while the block runs, then restore the old ones."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


@contextmanager
def graceful_stop() -> Iterator[StopFlag]:
    flag = StopFlag()
    with stop_signals(flag):
        yield flag


# --------------------------------------------------------------------------------------------
# The run


RUNS = Path("runs")  # where runs go when no directory is given


def new_run_dirs(base: Path = RUNS) -> Iterator[Path]:
    """``base/<timestamp>``, then ``-2``, ``-3``, ...: the names a run without ``--out`` tries,
    in order, until it claims one that no other run has (two may start in the same second)."""
    stamp = base / datetime.now().strftime("%Y%m%d-%H%M%S")
    yield stamp
    for k in itertools.count(2):
        yield stamp.with_name(f"{stamp.name}-{k}")


def train(
    config: TrainConfig,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
) -> RunResult:
    """Train (or resume) a run in ``run_dir`` (default: a new ``runs/<timestamp>``), evaluate
    once on the test set, return the result.

    The run's directory is held (:func:`_hold_run_dir`) from before its checkpoint is read, or
    from its creation, until its results are written.
    """
    if run_dir is None and resume:
        raise DeepConvNetError("resuming needs the run's directory")
    problem = config.problem()
    if problem:
        raise DeepConvNetError(f"invalid configuration: {problem}")
    with ExitStack() as held:
        return _train(config, run_dir, resume, log or _print_err, progress, held)


def _train(config, run_dir, resume: bool, log, progress: bool, held: ExitStack) -> RunResult:
    from deepconvnet.data import load_dataset

    run_dir = Path(run_dir) if run_dir is not None else None
    started = time.perf_counter()
    if resume and run_dir.is_dir():
        held.enter_context(hold_dir(run_dir))
    _check_run_dir(run_dir, resume)

    # Everything that can refuse the input comes before the run directory is created, so that a
    # failed start leaves nothing behind that would block the corrected command.
    threads = _configure_threads(config.threads)
    dataset = load_dataset(config.dataset, config.data_dir, log=log)
    train_x, train_t, val_x, val_t = split_training_set(dataset, config)

    if not resume:  # a run already under way is let finish as it started
        check_batch_statistics(config, len(train_t))
    model = _build_model(config)
    optimizer = _build_optimizer(config)
    schedule = _build_schedule(config)
    loader = _build_loader(config, train_x, train_t)

    if resume:
        state = _load_checkpoint(run_dir, model, optimizer)
        log(f"resuming {run_dir} at epoch {state.epoch + 1}, batch {state.batch}")
    else:
        state = TrainState(rng_state=dict(model.rng.bit_generator.state))
    claim = nullcontext(run_dir) if resume else _fresh_run_dir(run_dir)
    # Overflow is no news to print: a diverging run is caught by _check_step, in one line.
    quiet = np.errstate(over="ignore", invalid="ignore", divide="ignore")
    with graceful_stop() as stop, claim as run_dir, quiet:
        if not resume:
            held.enter_context(hold_dir(run_dir))
        log(
            f"training {config.model} ({model.num_params():,} parameters) on "
            f"{len(train_t):,} images for {config.epochs} epoch{'s' * (config.epochs != 1)}, "
            f"batch {config.batch_size}, "
            f"{config.optimizer} lr {config.lr}, {threads} thread(s) -> {run_dir}"
        )
        if not resume:
            _write_config(run_dir, config, dataset, threads, model, extra={"n_train": len(train_t)})
        _fit(
            config,
            model,
            optimizer,
            schedule,
            loader,
            (val_x, val_t),
            state,
            run_dir,
            stop,
            log,
            progress,
        )

    from deepconvnet.analysis import evaluate_predictions
    from deepconvnet.data import to_float

    try:
        test = evaluate_predictions(
            model.predict(to_float(dataset.test_images)), dataset.test_labels
        )
    except KeyboardInterrupt:  # the last epoch's checkpoint is on disk: resuming evaluates
        raise TrainingInterrupted(run_dir) from None
    _finish_run(run_dir, config, model, optimizer, state, test, time.perf_counter() - started)
    log(f"test accuracy {test['accuracy']:.4f} ({test['correct']}/{test['total']})")
    return RunResult(
        run_dir,
        test["accuracy"],
        test["correct"],
        test["total"],
        state.history,
        state.train_seconds,
    )


def _fit(config, model, optimizer, schedule, loader, val, state, run_dir, stop, log, progress):
    """The epoch loop. Checkpoints after every epoch and, optionally, every N steps."""
    from tqdm import tqdm

    for epoch in range(state.epoch, config.epochs):
        optimizer.lr = schedule.lr(epoch, config.lr, config.epochs)
        bar = tqdm(
            total=len(loader),
            initial=state.batch,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            unit="batch",
            disable=not progress or None,
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        epoch_start = time.perf_counter() - state.epoch_seconds
        for x, t in loader.epoch(epoch, start_batch=state.batch):
            loss = _train_step(model, optimizer, x, t, state)
            problem = _check_step(loss, model, optimizer)
            if problem:
                bar.close()
                raise TrainingDiverged(
                    f"{problem} at epoch {epoch + 1}, batch {state.batch}; "
                    + _after_divergence(run_dir)
                )
            bar.update(1)
            bar.set_postfix(
                loss=f"{state.loss_sum / max(state.seen, 1):.4f}",
                img_s=f"{state.seen / max(time.perf_counter() - epoch_start, 1e-9):.0f}",
                refresh=False,
            )
            state.epoch_seconds = time.perf_counter() - epoch_start
            periodic = config.checkpoint_every and state.step % config.checkpoint_every == 0
            if stop.requested or (periodic and state.batch < len(loader)):
                _save_checkpoint(run_dir, model, optimizer, state)
                if stop.requested:
                    bar.close()
                    raise TrainingInterrupted(run_dir)
        bar.close()
        record = _end_epoch(config, model, optimizer, val, state, epoch)
        log(_format_epoch(record, config.epochs))
        _save_epoch(run_dir, model, optimizer, state, config.dataset)
        if stop.requested:
            raise TrainingInterrupted(run_dir)


def _train_step(model, optimizer, x: np.ndarray, t: np.ndarray, state: TrainState) -> float:
    loss = float(model.loss(x, t, train=True))
    model.backward(input_grad=False)
    optimizer.step(model.params(), model.grads())
    state.batch += 1
    state.step += 1
    state.loss_sum += loss * len(t)  # per image, as train_acc: a short last batch weighs less
    state.correct += int(np.count_nonzero(model.loss_layer.y.argmax(axis=1) == t))
    state.seen += len(t)
    return loss


def _check_step(loss: float, model, optimizer) -> str | None:
    """What went wrong in the step just taken, if anything: a non-finite loss, or (the step's
    update overflowing) non-finite parameters or optimizer state, which must never reach a
    checkpoint. (AdaGrad's and RMSprop's sum of squares can overflow while the weights stay
    finite, their updates divided by infinity: the run has stopped learning all the same.)"""
    if not math.isfinite(loss):
        return f"loss became {loss}"
    for name, p in model.params().items():
        if not np.isfinite(p).all():
            return f"parameter {name} became non-finite"
    for slot, arrays in optimizer.state.items():
        for name, arr in arrays.items():
            if not np.isfinite(arr).all():
                return f"optimizer state {slot}.{name} became non-finite"
    return None


def _end_epoch(config, model, optimizer, val, state: TrainState, epoch: int) -> dict[str, Any]:
    record: dict[str, Any] = {
        "epoch": epoch + 1,
        "lr": optimizer.lr,
        "train_loss": state.loss_sum / max(state.seen, 1),
        "train_acc": state.correct / max(state.seen, 1),
    }
    val_x, val_t = val
    if len(val_t):
        record["val_acc"] = float(np.mean(model.predict(val_x) == val_t))
    record["seconds"] = state.epoch_seconds
    state.history.append(record)
    state.train_seconds += state.epoch_seconds
    state.epoch, state.batch = epoch + 1, 0
    state.loss_sum, state.correct, state.seen, state.epoch_seconds = 0.0, 0, 0, 0.0
    return record


def _format_epoch(record: dict[str, Any], epochs: int) -> str:
    line = (
        f"epoch {record['epoch']:>2}/{epochs}  loss {record['train_loss']:.4f}  "
        f"train acc {record['train_acc']:.4f}"
    )
    if "val_acc" in record:
        line += f"  val acc {record['val_acc']:.4f}"
    return line + f"  lr {record['lr']:.2e}  {record['seconds']:.1f}s"


# --------------------------------------------------------------------------------------------
# Building the pieces from the config


def _configure_threads(threads: int | None) -> int:
    from deepconvnet.threads import set_threads

    return set_threads(threads)


def split_training_set(
    dataset: Dataset, config: TrainConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The images a run trains on and those it validates on (``--train-limit``, ``--val``);
    refuses a split that leaves nothing to train on."""
    from deepconvnet.data import to_float, train_val_split

    images, labels = dataset.train_images, dataset.train_labels
    if config.train_limit is not None:
        if config.train_limit > len(labels):
            raise DeepConvNetError(
                f"--train-limit {config.train_limit} exceeds the {len(labels)} training images"
            )
        images, labels = images[: config.train_limit], labels[: config.train_limit]
    if config.val >= len(labels):
        raise DeepConvNetError(f"--val {config.val} leaves no training images (of {len(labels)})")
    train_x, train_t, val_x, val_t = train_val_split(images, labels, config.val, config.seed)
    return train_x, train_t, to_float(val_x), val_t


def _build_model(config: TrainConfig) -> Sequential:
    from deepconvnet.models import build_model, default_backend

    model = build_model(
        config.model,
        rng=stream(config.seed, INIT),
        dtype=np.dtype(config.dtype),
        **config.model_options,
    )
    model.rng = stream(config.seed, DROPOUT)
    model.set_backend(config.backend or default_backend())
    return model


def check_batch_statistics(config: TrainConfig, n_train: int) -> None:
    """Refuse batches of one image to a model with BatchNorm after an affine layer: over one
    image each feature's variance is 0, so it becomes its shift (as PyTorch's BatchNorm1d
    refuses). After a convolution BatchNorm still has H x W values a channel."""
    from deepconvnet.layers import Affine, BatchNormalization

    size, last = config.batch_size, n_train % config.batch_size
    if size != 1 and last != 1:
        return
    layers = _build_model(config).layers
    if not any(
        isinstance(a, Affine) and isinstance(b, BatchNormalization)
        for a, b in itertools.pairwise(layers)
    ):
        return
    if size == 1:
        raise DeepConvNetError("--batch-size 1: BatchNorm needs batches of 2 or more images")
    raise DeepConvNetError(
        f"{n_train:,} training images in batches of {size} leave a last batch of 1; "
        "BatchNorm needs 2 or more (change --batch-size, --train-limit or --val)"
    )


def _build_optimizer(config: TrainConfig):
    from deepconvnet.optimizers import build_optimizer

    return build_optimizer(config.optimizer, config.lr, weight_decay=config.weight_decay)


def _build_schedule(config: TrainConfig):
    from deepconvnet.schedules import parse_schedule

    return parse_schedule(config.lr_schedule)


def _build_loader(config: TrainConfig, images: np.ndarray, labels: np.ndarray):
    from deepconvnet.data.augment import parse_augment
    from deepconvnet.data.loader import BatchLoader

    return BatchLoader(
        images,
        labels,
        config.batch_size,
        seed=config.seed,
        sampling=config.sampling,
        augment=parse_augment(config.augment),
    )


# --------------------------------------------------------------------------------------------
# The run directory


def _check_run_dir(run_dir: Path | None, resume: bool) -> None:
    """Refuse a directory that cannot take this run, before any work is done (``None``: a new
    directory under ``runs/``)."""
    if run_dir is None:
        _check_creatable(RUNS / "<timestamp>")
        return
    if resume:
        if run_dir.exists() and not run_dir.is_dir():
            raise DeepConvNetError(f"{run_dir} is not a directory")
        if (run_dir / RESULTS).is_file():
            raise DeepConvNetError(f"{run_dir} has already finished ({RESULTS}); nothing to resume")
        if not (run_dir / CHECKPOINT).is_file():
            why = _why_no_checkpoint(run_dir)
            raise DeepConvNetError(f"{run_dir}: no {CHECKPOINT} to resume from{why}")
        _check_streams(run_dir)
        return
    check_fresh_dir(run_dir, f"use --resume {run_dir} to continue it, or choose another --out")
    _check_creatable(run_dir)


RESULT_FIGURES = ("test_accuracy", "test_correct", "test_total", "train_seconds")


def read_results(run_dir: Path) -> dict[str, float]:
    """The figures of a finished run's results.json (:data:`RESULT_FIGURES`), each a number: a
    damaged file is one line naming it, never a value a report cannot print."""
    path = run_dir / RESULTS
    figures = {}
    try:
        results = json.loads(path.read_text())
        for key in RESULT_FIGURES:
            figures[key] = value = results[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise DeepConvNetError(f"{path}: {', '.join(RESULT_FIGURES)} must be numbers")
    except (OSError, ValueError, RecursionError, TypeError, KeyError) as exc:
        raise DeepConvNetError(f"{path}: unreadable results ({one_line(exc)})") from exc
    return figures


def run_state(run_dir: Path) -> str:
    """``"finished"``, ``"resumable"`` (a checkpoint), or ``"new"`` (nothing worth keeping)."""
    if (run_dir / RESULTS).is_file():
        return "finished"
    if (run_dir / CHECKPOINT).is_file():
        return "resumable"
    return "new"


def clear_unstarted_run(run_dir: Path) -> None:
    """Clear what a run killed before its first checkpoint left (its config, and after an
    epoch's end its metrics, model and plots, written before the checkpoint), so that it can
    start afresh. Anything else in the directory is refused, not deleted."""
    if not run_dir.exists():
        return
    with hold_dir(run_dir):  # a run another process is training is refused, untouched
        leftovers = {p.name for p in run_dir.iterdir()}
        own = {CONFIG, METRICS, MODEL, OPTIMIZER, "plots"}
        strays = sorted(name for name in leftovers - own if not is_staged_write(name))
        if strays:
            raise DeepConvNetError(f"{run_dir}: unexpected files {strays}; move them away")
        for name in leftovers:
            if name == "plots":
                shutil.rmtree(run_dir / name, ignore_errors=True)
            else:
                (run_dir / name).unlink(missing_ok=True)


def _why_no_checkpoint(run_dir: Path) -> str:
    """A run killed (SIGKILL, power loss) before its first checkpoint leaves its config only."""
    if (run_dir / CONFIG).is_file():
        return f" (it stopped before its first checkpoint: delete {run_dir} and start it again)"
    return ""


def _check_creatable(run_dir: Path) -> None:
    """Fail before the data loads if the directory could not be made (the nearest existing
    ancestor is a file or is not writable); it is created only once the run can start."""
    ancestor = run_dir.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise DeepConvNetError(
            f"cannot create run directory {run_dir}: {ancestor} is not a directory"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise DeepConvNetError(f"cannot create run directory {run_dir}: {ancestor} is not writable")


@contextmanager
def _fresh_run_dir(run_dir: Path | None) -> Iterator[Path]:
    """Claim the directory of a fresh run (see :func:`_claim_run_dir`) and yield it; if the run
    fails before its first checkpoint (loss diverged, a second Ctrl-C, any error), remove what it
    wrote, so that the corrected command is not refused for a non-empty directory. Nothing is
    lost: without a checkpoint there is nothing to resume. (A SIGKILL cannot be caught: then
    --resume says to delete the directory.)"""
    run_dir, created = _claim_run_dir(run_dir)
    try:
        yield run_dir
    except BaseException:
        if not (run_dir / CHECKPOINT).is_file():
            _remove_unstarted(run_dir, created)
        raise


def _claim_run_dir(run_dir: Path | None) -> tuple[Path, Path | None]:
    """Create the run's directory and its ``plots/``; return it and the outermost directory this
    run created (the run's own, or an ancestor made on the way; None if it existed).

    Making ``plots/`` (which an empty directory does not hold) is the atomic claim: of two runs
    started on one directory, only one makes it, and the other stops before writing anything.
    Without a directory, the first free name of :func:`new_run_dirs` is claimed."""
    for candidate in [run_dir] if run_dir is not None else new_run_dirs():
        created = outermost_missing(candidate)
        try:
            candidate.mkdir(parents=True, exist_ok=run_dir is not None)
            (candidate / "plots").mkdir()
        except FileExistsError:
            if run_dir is None:
                continue
            if candidate.is_symlink() and not candidate.is_dir():
                raise DeepConvNetError(
                    f"{run_dir} is a symlink to no directory (its target is missing or loops); "
                    "choose another --out"
                ) from None
            raise DeepConvNetError(
                f"{run_dir} was taken by another run as this one started; choose another --out"
            ) from None
        except OSError as exc:
            raise DeepConvNetError(
                f"cannot create run directory {candidate}: {exc.strerror}"
            ) from exc
        return candidate, created
    raise AssertionError("new_run_dirs is endless")


def _remove_unstarted(run_dir: Path, created: Path | None) -> None:
    """Delete what a fresh run writes before its first checkpoint (the directory was empty or
    absent, see :func:`_check_run_dir`) and nothing else; the directories themselves only those
    this run created, up to ``created``, each only while empty."""
    for name in (CONFIG, METRICS, MODEL, "plots/learning_curves.png"):
        (run_dir / name).unlink(missing_ok=True)
    remove_empty_dirs(run_dir / "plots", created or run_dir / "plots")


@contextmanager
def hold_dir(run_dir: Path, work: str = "trained") -> Iterator[None]:
    """Hold ``run_dir`` exclusively (an advisory lock on the directory) while the block runs.

    Two ``--resume`` of one run would otherwise both train it, evaluate the test set twice and
    overwrite each other's files. The lock dies with its process, so a killed run never blocks
    its own resume. Where there is no ``flock`` (Windows) runs are not guarded. ``work`` says
    what the holder does, for the message (a depth experiment is "run").
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DeepConvNetError(
                f"{run_dir} is being {work} by another process; wait for it to finish or stop "
                "it (Ctrl-C) first"
            ) from None
        yield
    finally:
        os.close(fd)


def _check_streams(run_dir: Path) -> None:
    """A run drawn with other random streams would not carry on as it would have; refuse it."""
    config = _read_config(run_dir)
    if "streams" not in config and "versions" not in config:  # every run's config has versions
        raise CheckpointError(
            f"{run_dir / CONFIG}: not a run's config as deepconvnet writes it (no versions)"
        )
    recorded = config.get("streams", 1)  # runs before 0.2.0 did not record it
    if recorded != STREAMS_VERSION:
        raise CheckpointError(
            f"{run_dir} was made by an earlier deepconvnet whose random streams differ (version "
            f"{recorded}, now {STREAMS_VERSION}); it cannot be resumed identically: start a new run"
        )


def _after_divergence(run_dir: Path) -> str:
    """What is left and what to do. Resuming replays the same steps bit for bit (and --resume
    takes no --lr), so the way on is always a new run with a smaller learning rate."""
    if (run_dir / CHECKPOINT).is_file():
        return (
            f"the last checkpoint is kept in {run_dir}, but resuming it would diverge the same "
            "way: start a new run (another --out) with a smaller --lr"
        )
    return "no checkpoint had been written yet, so nothing is kept: start again with a smaller --lr"


def load_config(run_dir: str | Path) -> TrainConfig:
    """The configuration a run was started with, from its config.json (checked: a hand-edited
    value is a one-line error naming it, not a traceback halfway into the run)."""
    data = _read_config(Path(run_dir))
    if "config" not in data:  # not a default configuration: a damaged file
        raise DeepConvNetError(f"{Path(run_dir) / CONFIG}: no 'config' (the run's options)")
    recorded = data["config"]
    if not isinstance(recorded, dict):
        kind = type(recorded).__name__
        raise DeepConvNetError(f"{Path(run_dir) / CONFIG}: 'config' is a JSON {kind}, not object")
    config = TrainConfig.from_dict(recorded)
    problem = config.problem()
    if problem:
        raise DeepConvNetError(f"{Path(run_dir) / CONFIG}: {problem}")
    return config


def recorded_threads(run_dir: str | Path) -> int | None:
    """The thread count a run computed with (its config may say None: "all cores", then)."""
    threads = _read_config(Path(run_dir)).get("threads")
    return threads if isinstance(threads, int) and not isinstance(threads, bool) else None


def recorded_dataset(run_dir: str | Path) -> str | None:
    """The dataset a run was trained on, or None where its config.json says none readably."""
    try:
        config = _read_config(Path(run_dir)).get("config")
    except DeepConvNetError:
        return None
    name = config.get("dataset") if isinstance(config, dict) else None
    return name if isinstance(name, str) else None


def trained_on(model_path: str | Path) -> str | None:
    """The known dataset a model was trained on: named by the model file itself, else (a file
    saved before models named it) by the config.json of the run holding it, else None."""
    from deepconvnet.checkpoint import load_metadata
    from deepconvnet.data import DATASETS

    try:
        name = load_metadata(model_path).get("dataset")
    except DeepConvNetError:  # unreadable here: loading the model says why, in one line
        name = None
    if name not in DATASETS:
        name = recorded_dataset(Path(model_path).parent)
    return name if name in DATASETS else None


def _read_config(run_dir: Path) -> dict[str, Any]:
    """config.json as a dict, or a one-line error naming the run directory or the file."""
    path = run_dir / CONFIG
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DeepConvNetError(f"{run_dir}: not a run directory (no {CONFIG})") from None
    except NotADirectoryError:
        where = "a file" if run_dir.is_file() else "a file is in its path"
        raise DeepConvNetError(f"{run_dir}: not a run directory ({where})") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise DeepConvNetError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(data, dict):
        raise DeepConvNetError(f"{path}: not a run's config (a JSON {type(data).__name__})")
    return data


def _write_config(run_dir: Path, config: TrainConfig, dataset, threads: int, model, extra) -> None:
    from deepconvnet.threads import blas_info, cpu_info

    atomic_write_json(
        run_dir / CONFIG,
        {
            "config": asdict(config),
            "streams": STREAMS_VERSION,
            "command": sys.argv,
            "model_spec": model.spec(),
            "params": model.num_params(),
            "threads": threads,
            "dataset": {"name": dataset.name, "source": dataset.source, **dataset.checksums},
            "versions": _versions(),
            "blas": blas_info(),
            "cpu": cpu_info(),
            "platform": platform.platform(),
            "started": datetime.now().isoformat(timespec="seconds"),
            **extra,
        },
    )


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {"deepconvnet": __version__, "python": platform.python_version()}
    for name in ("numpy", "scipy", "threadpoolctl"):
        with suppress(md.PackageNotFoundError):
            versions[name] = md.version(name)
    return versions


def _state_to_arrays(model, optimizer, state: TrainState) -> dict[str, np.ndarray]:
    from deepconvnet.checkpoint import STATE_KEY

    state.rng_state = model.rng.bit_generator.state
    arrays = {f"model/{k}": v for k, v in {**model.params(), **model.buffers()}.items()}
    arrays.update({f"optim/{k}": v for k, v in optimizer.state_dict().items()})
    arrays[STATE_KEY] = json_to_array(asdict(state))
    arrays["__spec__"] = json_to_array(model.spec())
    return arrays


def _save_checkpoint(run_dir: Path, model, optimizer, state: TrainState) -> None:
    atomic_save_npz(run_dir / CHECKPOINT, _state_to_arrays(model, optimizer, state))


def _save_epoch(run_dir: Path, model, optimizer, state: TrainState, dataset: str) -> None:
    """After each epoch: the metrics so far, the model, then the resume checkpoint."""
    from deepconvnet.plots import learning_curves

    atomic_write_text(run_dir / METRICS, "".join(_metrics_line(r) for r in state.history))
    _save_model(run_dir, model, state, dataset)
    learning_curves(state.history, run_dir / "plots" / "learning_curves.png")
    _save_checkpoint(run_dir, model, optimizer, state)


# The order of an epoch record's keys in metrics.jsonl, whatever order the record holds them in
# (a resumed run's history comes back from the checkpoint's sorted-key JSON).
METRIC_KEYS = ("epoch", "train_loss", "train_acc", "val_acc", "lr", "seconds")


def _metrics_line(record: dict[str, Any]) -> str:
    ordered = {key: record[key] for key in METRIC_KEYS if key in record}
    return json.dumps({**ordered, **record}) + "\n"


def _load_checkpoint(run_dir: Path, model, optimizer) -> TrainState:
    """Restore model, optimizer and random state from checkpoint.npz. A damaged file (an entry
    missing, unexpected, mis-shaped, mistyped or non-finite) is a one-line CheckpointError naming
    it: never a traceback, nor a resume that silently differs from the uninterrupted run."""
    from deepconvnet.checkpoint import decode_entry, read_arrays, restore_arrays

    path = run_dir / CHECKPOINT
    arrays = read_arrays(path)
    state = _decode_state(path, arrays)
    if decode_entry(path, arrays, "__spec__", TRAINING_CHECKPOINT) != model.spec():
        raise CheckpointError(f"{path}: checkpoint is of another architecture than {CONFIG}")
    restore_arrays(path, arrays, {**model.params(), **model.buffers()}, prefix="model/")
    optim = {k.removeprefix("optim/"): v for k, v in arrays.items() if k.startswith("optim/")}
    _check_optimizer_state(path, optim, optimizer, model.params())
    try:
        optimizer.load_state_dict(optim)
        model.rng.bit_generator.state = state.rng_state
    except (DeepConvNetError, ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{path}: unusable optimizer or random state ({exc})") from exc
    return state


def _in_range(name: str, value: float) -> bool:
    """Whether an optimizer scalar is one a run could have: a whole step count >= 0, lr > 0,
    weight decay >= 0, and every hyperparameter (a decay rate: momentum, beta1, beta2,
    decay_rate) in [0, 1). Out of range, the first steps make NaN, read as divergence."""
    if name == "t":
        return value >= 0 and value.is_integer()
    if name == "lr":
        return value > 0
    if name == "weight_decay":
        return value >= 0
    return 0 <= value < 1


def _check_optimizer_state(path: Path, optim: dict[str, np.ndarray], optimizer, params) -> None:
    """Finite scalars (step count, lr, hyperparameters) and, once steps were taken, exactly one
    slot array per parameter and slot: a missing one would silently restart at zero."""
    from deepconvnet.checkpoint import checked_array

    scalars = ("t", "lr", "weight_decay", *optimizer.hyperparameters)
    for name in scalars:
        value = optim.get(name)
        if value is None or value.shape != () or value.dtype.kind not in "iuf":
            raise CheckpointError(f"{path}: optimizer entry {name!r} is missing or not a number")
        if not np.isfinite(value) or not _in_range(name, float(value)):
            raise CheckpointError(f"{path}: optimizer entry {name!r} is {value}")
    started = optim["t"] != 0  # before the first step an optimizer has no slot arrays yet
    slots = {f"{s}.{n}": p for s in optimizer.slots for n, p in params.items()} if started else {}
    if set(optim) != set(scalars) | set(slots):
        odd = sorted(set(optim) ^ (set(scalars) | set(slots)))
        raise CheckpointError(f"{path}: optimizer state does not fit {optimizer!r} ({odd[0]!r})")
    for key, param in slots.items():
        value = checked_array(path, optim, key, param.shape, param.dtype)
        if key.partition(".")[0] in optimizer.non_negative_slots and np.any(value < 0):
            raise CheckpointError(
                f"{path}: optimizer entry {key!r} sums squared gradients but holds negative values"
            )


def _decode_state(path: Path, arrays: dict[str, np.ndarray]) -> TrainState:
    """The TrainState saved in ``__state__``: exactly its fields, each of its default's type."""
    from deepconvnet.checkpoint import STATE_KEY, decode_entry

    data = decode_entry(path, arrays, STATE_KEY, TRAINING_CHECKPOINT)
    expected = {f.name: f for f in fields(TrainState)}
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{path}: {STATE_KEY} is a {type(data).__name__}, not a training state"
        )
    if set(data) != set(expected):
        odd = {
            "unexpected": sorted(set(data) - set(expected)),
            "missing": sorted(set(expected) - set(data)),
        }
        detail = "; ".join(f"{kind} {', '.join(keys)}" for kind, keys in odd.items() if keys)
        raise CheckpointError(f"{path}: {STATE_KEY} does not hold a training state ({detail})")
    for name, f in expected.items():
        default = f.default_factory() if f.default is MISSING else f.default
        kind = (int, float) if isinstance(default, float) else type(default)
        if isinstance(data[name], bool) or not isinstance(data[name], kind):
            raise CheckpointError(f"{path}: {STATE_KEY} {name} is {data[name]!r}")
    return TrainState(**data)


def _save_model(run_dir: Path, model, state: TrainState, dataset: str) -> None:
    """model.npz, naming its dataset: a copy taken out of the run is still tested on it."""
    from deepconvnet.checkpoint import save_model

    save_model(run_dir / MODEL, model, metadata={"epoch": state.epoch, "dataset": dataset})


def _finish_run(
    run_dir: Path, config, model, optimizer, state: TrainState, test: dict, seconds: float
):
    _save_model(run_dir, model, state, config.dataset)
    atomic_save_npz(run_dir / OPTIMIZER, optimizer.state_dict())
    results = {
        "test_accuracy": test["accuracy"],
        "test_correct": test["correct"],
        "test_total": test["total"],
        "epochs": state.epoch,
        "train_seconds": state.train_seconds,
        "seconds_per_epoch": state.train_seconds / max(state.epoch, 1),
        "wall_seconds_this_process": seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    atomic_write_json(run_dir / RESULTS, results)
    config = _read_config(run_dir)
    config["wall_seconds"] = state.train_seconds
    config["finished"] = datetime.now().isoformat(timespec="seconds")
    atomic_write_json(run_dir / CONFIG, config)


def _print_err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
