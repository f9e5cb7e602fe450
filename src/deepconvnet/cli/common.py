"""Argument types and options shared by several subcommands (one definition each)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the engine and the data load lazily, when a command runs
    from deepconvnet.data import Dataset
    from deepconvnet.data.augment import Augmenter
    from deepconvnet.models import Sequential


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _parse(text, int, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def int_up_to(high: int) -> Callable[[str], int]:
    """The type of an integer in ``[1, high]``: a size that would exhaust memory (a huge grid)
    is refused while parsing."""

    def parse(text: str) -> int:
        value = positive_int(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {text}")
        return value

    parse.__name__ = f"int_up_to_{high}"
    return parse


def nonnegative_int(text: str) -> int:
    """An integer >= 0."""
    value = _parse(text, int, "an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite float > 0."""
    value = _parse(text, float, "a number")
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite float >= 0."""
    value = _parse(text, float, "a number")
    if not (0 <= value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def nonempty_path(text: str) -> str:
    """A path argument. The empty string (an unset shell variable: ``--out "$DIR"``) is refused
    rather than read as "the default" or as the current directory."""
    if not text:
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return text


def png_path(text: str) -> str:
    """Where to write a figure: a name ending in .png (the figure is a PNG whatever the name
    says) that is not a directory, refused before the work that would draw it."""
    # os.path's tests, unlike Path's, answer False for a name too long or a place unreadable:
    # the write then says so in one line, where an OSError here escaped argparse as a traceback.
    if os.path.isdir(nonempty_path(text)):
        raise argparse.ArgumentTypeError(f"{text} is a directory (expected FILE.png)")
    if Path(text).suffix.lower() != ".png":
        raise argparse.ArgumentTypeError(f"expected a file name ending in .png, got {text!r}")
    return text


def dir_path(text: str) -> str:
    """Where to write a directory of outputs: refused before any work if a file is there."""
    if os.path.exists(nonempty_path(text)) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a file, not a directory")
    return text


def plot_or_warn(draw: Callable[[], Path], what: str) -> Path | None:
    """Draw a figure that is a by-product of a report (written beside the model by default): a
    model in a read-only place still gets its report, with a warning instead of the figure."""
    from deepconvnet.errors import DeepConvNetError

    try:
        return draw()
    except DeepConvNetError as exc:
        print(f"deepconvnet: warning: no {what} ({exc})", file=sys.stderr)
        return None


def _parse(text: str, kind: type, what: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


DIGIT_DATASETS = ("mnist",)  # datasets whose classes a mirror image changes (a mirrored 2 is no 2)


def warn_if_flipping_digits(augmenter: Augmenter | None, dataset: str) -> None:
    """Flips exist for datasets they suit; on digits they teach wrong labels, so say so."""
    if augmenter is not None and augmenter.flips and dataset in DIGIT_DATASETS:
        print(
            f"warning: flips change a digit's meaning (a mirrored 2 is no 2); {dataset} is digits",
            file=sys.stderr,
        )


# The names of deepconvnet.models.MODELS, listed here so that building the parser does not import
# the engine (tests/test_train.py checks they do not drift), as --optimizer lists OPTIMIZERS.
MODEL_NAMES = ("deepconvnet", "deepconvnet-bn", "depth-large", "depth-stack3x3")


def add_model_name_option(parser: argparse.ArgumentParser, default: str = "deepconvnet") -> None:
    """``--model NAME``: a registered architecture, for commands that build one."""
    parser.add_argument(
        "--model",
        default=default,
        choices=MODEL_NAMES,
        metavar="MODEL",
        help=f"one of {', '.join(MODEL_NAMES)} (default: {default})",
    )


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: the thread budget for NumPy work (default: all cores)."""
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="threads for compute (default: number of cores); results are bit-identical "
        "for the same thread count",
    )


def add_data_options(parser: argparse.ArgumentParser, *, tests_a_model: bool = False) -> None:
    """``--dataset`` and ``--data-dir``, the same for every command that reads a dataset.

    A command that tests a trained model defaults to the dataset the model was trained on (see
    :func:`load_test_dataset`): a Fashion-MNIST run evaluated on MNIST digits by default would
    report a meaningless accuracy and overwrite the run's confusion plot with it.
    """
    from deepconvnet.data import DATASETS

    parser.add_argument(
        "--dataset",
        choices=list(DATASETS),
        default=None if tests_a_model else "mnist",
        help="dataset (default: the one the model was trained on, as its file or its run's "
        "config.json records it, else mnist)"
        if tests_a_model
        else "dataset (default: mnist)",
    )
    parser.add_argument(
        "--data-dir",
        type=nonempty_path,
        default=None,
        metavar="DIR",
        help="directory holding the four IDX files (default: $DEEPCONVNET_DATA, then the system "
        "copy (Fashion-MNIST's Debian package), then the cache ($DEEPCONVNET_CACHE, else "
        "$XDG_CACHE_HOME/deepconvnet, else ~/.cache/deepconvnet), then the network unless "
        "$DEEPCONVNET_OFFLINE=1)",
    )


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """The positional trained model every consuming command takes: a run directory or a file."""
    parser.add_argument(
        "model",
        type=nonempty_path,
        metavar="RUN_DIR|model.npz",
        help="a run directory (its model.npz is used) or a model.npz file",
    )


def load_trained_model(args: argparse.Namespace) -> tuple[Path, Sequential]:
    """Apply ``--threads`` (when the command has it) and load the model named by the positional
    argument: returns ``(model_path, model)``, the path so figures can be saved beside it."""
    from deepconvnet.checkpoint import load_model, resolve_model_path
    from deepconvnet.threads import set_threads

    if hasattr(args, "threads"):
        set_threads(args.threads)
    check_run_has_finished(Path(args.model))
    model_path = resolve_model_path(args.model)
    return model_path, load_model(model_path)


def check_run_has_finished(run_dir: Path) -> None:
    """Say so when a run directory's training has not finished: with no model yet, as the error
    (not "no such checkpoint file"); with the last epoch's model, as a note, since what is
    reported of it (figures, accuracies, predictions) is not the finished run's."""
    from deepconvnet.errors import DeepConvNetError
    from deepconvnet.train import MODEL, run_state

    if not run_dir.is_dir() or run_state(run_dir) != "resumable":
        return
    resume = f"deepconvnet train --resume {run_dir} finishes it"
    if not (run_dir / MODEL).is_file():
        raise DeepConvNetError(
            f"{run_dir}: training stopped before its first epoch ended ({resume})"
        )
    print(
        f"deepconvnet: note: {run_dir} has not finished training; this is its last epoch's model "
        f"({resume})",
        file=sys.stderr,
    )


def load_test_dataset(args: argparse.Namespace, model_path: Path) -> Dataset:
    """The dataset to test a model on: ``--dataset``, else the one it was trained on
    (:func:`deepconvnet.train.trained_on`), else MNIST."""
    from deepconvnet.data import load_dataset
    from deepconvnet.train import trained_on

    return load_dataset(args.dataset or trained_on(model_path) or "mnist", args.data_dir)


def figure_beside(model_path: Path, stem: str, dataset_name: str) -> Path:
    """``plots/STEM.png`` beside the model for its own dataset; ``plots/STEM-DATASET.png`` for
    another (``--dataset``), with a note: scoring a Fashion-MNIST run on digits must neither pass
    unremarked nor replace the run's own figure."""
    from deepconvnet.train import trained_on

    own = trained_on(model_path) or "mnist"
    if dataset_name == own:
        return model_path.parent / "plots" / f"{stem}.png"
    print(
        f"deepconvnet: note: {model_path} was trained on {own}; testing it on {dataset_name}",
        file=sys.stderr,
    )
    return model_path.parent / "plots" / f"{stem}-{dataset_name}.png"


def check_fits_test_images(model: Sequential, model_path: Path, dataset: Dataset) -> None:
    """Refuse, in one line, a model of another input shape or number of classes than the
    dataset's test images, before it sees them."""
    from deepconvnet.checkpoint import check_model_fits

    check_model_fits(
        model,
        (1, *dataset.test_images.shape[1:]),
        f"the {dataset.name} test images",
        name=model_path,
        classes=len(dataset.class_names),
    )
