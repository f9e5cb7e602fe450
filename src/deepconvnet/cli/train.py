"""``deepconvnet train`` and ``deepconvnet evaluate``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepconvnet.cli.common import (
    add_data_options,
    add_model_argument,
    add_model_name_option,
    add_threads_option,
    check_fits_test_images,
    figure_beside,
    load_test_dataset,
    load_trained_model,
    nonempty_path,
    nonnegative_float,
    nonnegative_int,
    plot_or_warn,
    positive_float,
    positive_int,
    warn_if_flipping_digits,
)

if TYPE_CHECKING:  # the trainer loads when a command runs
    from deepconvnet.train import TrainConfig

# Options --resume accepts: they do not alter what is computed. Threads change only the last bits
# (and a note says so); the data, wherever it now lives, is verified against the same checksums.
# Every other option is the saved run's, and giving it with --resume is an error, not ignored.
RESUME_OPTIONS = ("threads", "data_dir", "no_progress", "resume")


def register(sub: argparse._SubParsersAction) -> None:
    _register_train(sub)
    _register_evaluate(sub)


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """Every option of a training run; `ensemble train` takes the same ones."""
    from deepconvnet.data.augment import SPEC_HELP
    from deepconvnet.train import DTYPES, TrainConfig

    d = TrainConfig()

    add_model_name_option(parser, d.model)
    add_data_options(parser)
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=d.epochs,
        help=f"passes over the training images (default: {d.epochs})",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=d.batch_size,
        help=f"images per optimizer step (default: {d.batch_size})",
    )
    parser.add_argument(
        "--sampling",
        choices=["shuffle", "replacement"],
        default=d.sampling,
        help="how an epoch draws its batches: shuffle (each image once, the default) or "
        "replacement (random draws with repeats, as the book's Trainer)",
    )
    parser.add_argument(
        "--lr", type=positive_float, default=d.lr, help=f"learning rate (default: {d.lr})"
    )
    parser.add_argument(
        "--optimizer",
        default=d.optimizer,
        choices=["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adam-paper"],
        help=f"(default: {d.optimizer}, the book's Adam; adam-paper adds eps to the root of the "
        "bias-corrected v, as Kingma & Ba and torch.optim.Adam do)",
    )
    parser.add_argument(
        "--weight-decay",
        type=nonnegative_float,
        default=d.weight_decay,
        help="L2 weight decay (default: 0)",
    )
    parser.add_argument(
        "--lr-schedule",
        default=d.lr_schedule,
        metavar="SPEC",
        help="learning-rate schedule: constant (the default), exp:0.95, step:10:0.5, "
        "cosine[:FLOOR], warmup:2+cosine",
    )
    parser.add_argument(
        "--augment",
        default=d.augment,
        metavar="SPEC",
        help=f"data augmentation (default: none): {SPEC_HELP}",
    )
    parser.add_argument(
        "--seed",
        type=nonnegative_int,
        default=d.seed,
        help="seed of the initial weights, batch order, dropout and augmentation (default: 0)",
    )
    parser.add_argument(
        "--train-limit",
        type=positive_int,
        default=None,
        metavar="N",
        help="train on the first N training images only, for quick runs (default: all)",
    )
    parser.add_argument(
        "--val",
        type=nonnegative_int,
        default=0,
        metavar="N",
        help="hold out N of the training images (of the first N of --train-limit, when given) "
        "to monitor validation accuracy each epoch; chosen by --seed (default: 0, none)",
    )
    add_threads_option(parser)
    parser.add_argument(
        "--backend",
        choices=["fast", "reference"],
        default=None,
        help="kernels: fast (channels-last, threaded; default) or reference (the book's im2col)",
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default=d.dtype,
        help="arithmetic of parameters and activations (default: float32); float64 is what the "
        "book's code computes in (its weights are float64 arrays), about 1.8x slower",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=nonnegative_int,
        default=0,
        metavar="N",
        help="also checkpoint every N steps (default: 0, only after each epoch, as always)",
    )
    parser.add_argument(
        "--dropout",
        type=float,
        default=None,
        help="dropout ratio of the model, in [0, 1) (default: the model's own; 0.5 for "
        "deepconvnet)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (epoch lines still print)"
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Turn parsed options into a TrainConfig (validating what argparse cannot)."""
    from deepconvnet.errors import DeepConvNetError
    from deepconvnet.train import TrainConfig

    given_options(args)  # `train` leaves the options not given out of args (see there)
    model_options = {}
    if args.dropout is not None:
        if not 0.0 <= args.dropout < 1.0:
            raise DeepConvNetError(f"--dropout must be in [0, 1), got {args.dropout}")
        model_options["dropout_ratio"] = args.dropout
    config = TrainConfig(
        model=args.model,
        dataset=args.dataset,
        data_dir=args.data_dir,
        epochs=args.epochs,
        batch_size=args.batch_size,
        sampling=args.sampling,
        lr=args.lr,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        lr_schedule=args.lr_schedule,
        augment=args.augment,
        seed=args.seed,
        train_limit=args.train_limit,
        val=args.val,
        threads=args.threads,
        backend=args.backend,
        dtype=args.dtype,
        checkpoint_every=args.checkpoint_every,
        model_options=model_options,
    )
    return _canonical_specs(config)


def _canonical_specs(config):
    """Parse schedule and augmentation specs up front (typos fail before any work) and record
    them in canonical form, so config.json says exactly what ran."""
    from deepconvnet.data.augment import parse_augment
    from deepconvnet.schedules import parse_schedule

    config.lr_schedule = parse_schedule(config.lr_schedule).spec
    augmenter = parse_augment(config.augment)
    config.augment = augmenter.spec if augmenter is not None else None
    warn_if_flipping_digits(augmenter, config.dataset)
    return config


def _register_train(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train",
        help="train a network (defaults: the book's recipe; the book reports 99.38%% on MNIST)",
        description=(
            "Train a network. The defaults are the book's recipe: DeepConvNet (figure 8-1), "
            "He init, Adam lr 0.001, batch 100, 20 epochs, all 60,000 training images, seed 0. "
            "The test set is evaluated once, at the end. Ctrl-C stops cleanly after the current "
            "step; --resume carries on bit-identically."
        ),
    )
    add_train_options(parser)
    parser.add_argument(
        "--out",
        type=nonempty_path,
        default=None,
        metavar="DIR",
        help="run directory (default: runs/<timestamp>)",
    )
    parser.add_argument(
        "--resume",
        type=nonempty_path,
        default=None,
        metavar="RUN_DIR",
        help="carry on an interrupted run with its saved configuration (only --threads, "
        "--data-dir and --no-progress may be given with it)",
    )
    parser.set_defaults(func=run_train, option_defaults=leave_out_defaults(parser))


def leave_out_defaults(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Keep every option out of the parsed namespace unless the command line gives it, and return
    the defaults for :func:`given_options` to put back. Comparing values with the defaults instead
    would miss an option given at its default: ``--resume RUN --epochs 20`` on a 5-epoch run."""
    defaults = vars(parser.parse_args([]))
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return defaults


def given_options(args: argparse.Namespace) -> list[str]:
    """The options the command line gave (in --help order); gives the others their defaults.

    Idempotent; a namespace from a parser whose defaults were not left out is left as it is."""
    defaults = getattr(args, "option_defaults", {})
    given = [name for name in defaults if hasattr(args, name)]
    for name, value in defaults.items():
        if not hasattr(args, name):
            setattr(args, name, value)
    return given


def refuse_with_resume(given: list[str], accepted: tuple[str, ...], what: str) -> None:
    """A one-line error naming the options given with --resume that it does not accept: they
    would be silently ignored, as what is resumed carries on with its saved options."""
    from deepconvnet.errors import DeepConvNetError

    refused = [_flag(name) for name in given if name not in accepted]
    if refused:
        others = [_flag(name) for name in accepted if name != "resume"]
        if not others:
            allowed = "no other option may be given with it"
        elif len(others) == 1:
            allowed = f"only {others[0]} may be given with it"
        else:
            allowed = f"only {', '.join(others[:-1])} and {others[-1]} may be given with it"
        raise DeepConvNetError(
            f"--resume carries on with the {what}'s saved options; drop {', '.join(refused)} "
            f"({allowed})"
        )


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def run_train(args: argparse.Namespace) -> int:
    from deepconvnet.train import load_config, recorded_threads, train

    given = given_options(args)
    resume = args.resume is not None
    run_dir: Path | None
    if resume:
        refuse_with_resume(given, RESUME_OPTIONS, "run")
        run_dir = Path(args.resume)
        config = load_config(run_dir)
        if "data_dir" in given:
            config.data_dir = args.data_dir
        config.threads = _resume_threads(args.threads, recorded_threads(run_dir))
    else:
        config = config_from_args(args)
        run_dir = Path(args.out) if args.out is not None else None
    result = train(config, run_dir, resume=resume, progress=not args.no_progress)
    print(f"test accuracy: {result.test_accuracy:.4f} ({result.correct}/{result.total})")
    print(f"run saved in {result.run_dir}")
    return 0


def _resume_threads(asked: int | None, used: int | None) -> int | None:
    """The thread count a resumed run computes with: the run's own unless --threads says
    otherwise (a run is bit-identical only at one count; "all cores" differs between machines)."""
    if asked is not None and asked != used:
        print(
            f"note: resuming with --threads {asked} (the run used {used}); "
            "results may differ in the last bits",
            file=sys.stderr,
        )
    return asked if asked is not None else used


def _register_evaluate(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "evaluate",
        help="accuracy, per-class accuracy and confusion matrix on the full test set",
        description=(
            "Evaluate a trained model on the full test set: accuracy, per-class accuracy and the "
            "confusion matrix (printed, and saved as plots/confusion.png beside the model; "
            "plots/confusion-DATASET.png for a --dataset other than the run's)."
        ),
    )
    add_model_argument(parser)
    add_data_options(parser, tests_a_model=True)
    add_threads_option(parser)
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {"accuracy", "correct", "total", "per_class": [per class], "confusion": '
        "[[rows: true class, columns: predicted]]}",
    )
    parser.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from deepconvnet.analysis import evaluate_predictions, format_confusion
    from deepconvnet.data import to_float
    from deepconvnet.plots import confusion_heatmap

    model_path, model = load_trained_model(args)
    dataset = load_test_dataset(args, model_path)
    images = to_float(dataset.test_images)
    check_fits_test_images(model, model_path, dataset)
    predicted = model.predict(images)
    report = evaluate_predictions(predicted, dataset.test_labels, len(dataset.class_names))
    plot = plot_or_warn(
        lambda: confusion_heatmap(
            report["confusion"],
            list(dataset.class_names),
            figure_beside(model_path, "confusion", dataset.name),
            title=f"Confusion matrix - {dataset.name} test set, accuracy {report['accuracy']:.4f}",
        ),
        "confusion plot",
    )
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"model:    {model_path}")
    print(
        f"accuracy: {report['accuracy']:.4f} ({report['correct']}/{report['total']}) "
        f"on the {dataset.name} test set"
    )
    print()
    print(format_confusion(report["confusion"], dataset.class_names))
    if plot:
        print(f"\nconfusion plot: {plot}")
    return 0
