"""``deepconvnet misclassified``, ``visualize`` and ``experiment depth``: seeing inside."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from deepconvnet.cli.common import (
    add_data_options,
    add_model_argument,
    add_threads_option,
    check_fits_test_images,
    dir_path,
    figure_beside,
    int_up_to,
    load_test_dataset,
    load_trained_model,
    nonempty_path,
    nonnegative_int,
    plot_or_warn,
    png_path,
    positive_int,
)
from deepconvnet.cli.train import given_options, leave_out_defaults, refuse_with_resume

# A 10x10 grid of mistakes is as many as a figure can show; unbounded, --max 1000 took 55 s
# and 1.1 GB (measured) and --max 100000 ran on until stopped.
MAX_FIGURE_IMAGES = 100


def register(sub: argparse._SubParsersAction) -> None:
    _register_misclassified(sub)
    _register_visualize(sub)
    _register_experiment(sub)


# -- misclassified ----------------------------------------------------------------------------
def _register_misclassified(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "misclassified",
        help="grid of the misclassified test images, most confident mistakes first",
        description=(
            "Find every test image the model gets wrong and draw the most confident mistakes "
            "(figure 8-2 of the book), each captioned with its true label, the prediction and "
            "the prediction's probability. --json prints all of them."
        ),
    )
    add_model_argument(parser)
    parser.add_argument(
        "--out",
        type=png_path,
        default=None,
        metavar="FILE.png",
        help="the figure (default: plots/misclassified.png beside the model; "
        "plots/misclassified-DATASET.png for a --dataset other than the run's)",
    )
    parser.add_argument(
        "--max",
        type=int_up_to(MAX_FIGURE_IMAGES),
        default=20,
        metavar="N",
        help=f"images in the figure, 1 to {MAX_FIGURE_IMAGES} (default 20; --json lists all)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print [{"index", "label", "predicted", "probability"}, ...] for all mistakes',
    )
    add_data_options(parser, tests_a_model=True)
    add_threads_option(parser)
    parser.set_defaults(func=run_misclassified)


def run_misclassified(args: argparse.Namespace) -> int:
    from deepconvnet.analysis import misclassified
    from deepconvnet.data import to_float
    from deepconvnet.plots import misclassified_grid

    model_path, model = load_trained_model(args)
    dataset = load_test_dataset(args, model_path)
    images = to_float(dataset.test_images)
    check_fits_test_images(model, model_path, dataset)
    mistakes = misclassified(model.predict_proba(images), dataset.test_labels)
    shown = mistakes[: args.max]
    out = Path(args.out) if args.out else figure_beside(model_path, "misclassified", dataset.name)
    total = len(dataset.test_labels)

    def draw() -> Path:
        return misclassified_grid(
            images[[r["index"] for r in shown], 0],
            shown,
            out,
            class_names=dataset.class_names,
            title=(
                f"Misclassified {dataset.name} test images: {len(mistakes):,} of {total:,}\n"
                f"(the {len(shown)} most confident mistakes)"
            ),
        )

    # A figure asked for with --out must be written; the default one beside the model is a
    # by-product, as evaluate's confusion plot is.
    plot = draw() if args.out else plot_or_warn(draw, "figure")
    if args.json:
        print(json.dumps(mistakes))
        return 0
    print(f"{len(mistakes)} of {total} test images misclassified ({len(mistakes) / total:.2%})")
    for r in shown:
        print(
            f"  #{r['index']:<6} true {r['label']}  predicted {r['predicted']}  "
            f"p={r['probability']:.3f}"
        )
    if plot is not None:
        print(f"figure: {plot}")
    return 0


# -- visualize --------------------------------------------------------------------------------
def _register_visualize(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "visualize",
        help="first-layer filters and one digit's feature maps through the layers",
        description=(
            "Draw what the network learned: DIR/filters.png (the first convolution's filters) "
            "and DIR/feature_maps.png (one test digit after every conv+ReLU and pooling stage)."
        ),
    )
    add_model_argument(parser)
    parser.add_argument(
        "--out", type=dir_path, required=True, metavar="DIR", help="directory for the figures"
    )
    parser.add_argument(
        "--index", type=nonnegative_int, default=0, metavar="I", help="test image (default 0)"
    )
    parser.add_argument(
        "--channels",
        type=positive_int,
        default=8,
        metavar="N",
        help="channels per stage (default 8; a stage with fewer shows all of its own, and "
        "more than the widest stage's are not drawn)",
    )
    add_data_options(parser, tests_a_model=True)
    add_threads_option(parser)
    parser.set_defaults(func=run_visualize)


def run_visualize(args: argparse.Namespace) -> int:
    from deepconvnet.analysis import feature_maps, first_conv_weights
    from deepconvnet.data import to_float
    from deepconvnet.errors import DeepConvNetError
    from deepconvnet.fileio import all_or_nothing
    from deepconvnet.plots import feature_maps_grid, filters_grid

    model_path, model = load_trained_model(args)
    weights = first_conv_weights(model)
    dataset = load_test_dataset(args, model_path)
    if args.index >= len(dataset.test_labels):
        raise DeepConvNetError(
            f"--index {args.index} is out of range (the test set has {len(dataset.test_labels)})"
        )
    image = to_float(dataset.test_images[args.index : args.index + 1])[0]
    check_fits_test_images(model, model_path, dataset)
    proba = model.predict_proba(image[None])[0]
    predicted = int(proba.argmax())
    label = int(dataset.test_labels[args.index])
    names = dataset.class_names
    out = Path(args.out)
    with all_or_nothing():  # both figures, or neither
        filters = filters_grid(
            weights,
            out / "filters.png",
            title=f"First convolution: {len(weights)} learned "
            f"{weights.shape[2]}x{weights.shape[3]} filters ({model.name})",
        )
        maps = feature_maps_grid(
            image[0],
            feature_maps(model, image),
            out / "feature_maps.png",
            channels=args.channels,
            title=f"Test image #{args.index} (label {names[label]}, predicted {names[predicted]}, "
            f"p={proba[predicted]:.2f}) through {model.name}",
        )
    print(f"filters:      {filters}")
    print(f"feature maps: {maps}")
    return 0


# -- experiment depth -------------------------------------------------------------------------
def _register_experiment(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "experiment",
        help="experiments that test the book's claims",
        description=(
            "Experiments that test the book's claims by training networks and measuring them. "
            "depth: section 8.1.3's claim that stacking small filters beats one large filter of "
            "the same receptive field (see deepconvnet experiment depth --help)."
        ),
    )
    kinds = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    depth = kinds.add_parser(
        "depth",
        help="stacked 3x3 convs vs single large filters of equal receptive field",
        description=(
            "Train two networks of equal receptive field - one of stacked 3x3 convolutions, one "
            "of single 5x5/7x7 filters, otherwise identical - on several training-set sizes with "
            "the same Trainer as 'train', and tabulate parameters, multiply-adds, training time "
            "and test accuracy (Markdown, JSON, and a plot against training-set size). The "
            "default takes about 10-20 minutes on 2 cores; --quick about half a minute."
        ),
    )
    depth.add_argument(
        "--sizes",
        default=None,
        metavar="N,N,...",
        help="training-set sizes (default 1000,5000,60000)",
    )
    depth.add_argument(
        "--epochs",
        default=None,
        metavar="E[,E,...]",
        help="epochs for all sizes, or one per size (default: 60,000 / size, kept within 4 to "
        "30 epochs: 30,12,4 for the default sizes)",
    )
    depth.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: sizes 500,2000 and 3 epochs (--sizes and --epochs still override)",
    )
    depth.add_argument(
        "--out",
        type=dir_path,
        default=None,
        metavar="DIR",
        help="where the table, plot and runs go (default: runs/depth-<timestamp>)",
    )
    depth.add_argument(
        "--seed",
        type=nonnegative_int,
        default=0,
        help="seed of both networks' runs: the same data order and dropout draws (default: 0)",
    )
    depth.add_argument(
        "--resume",
        type=nonempty_path,
        default=None,
        metavar="DIR",
        help="finish the stopped experiment in DIR with its recorded settings (only --threads "
        "and --data-dir may be given with it)",
    )
    add_threads_option(depth)
    add_data_options(depth)
    depth.set_defaults(func=run_experiment_depth, option_defaults=leave_out_defaults(depth))


def run_experiment_depth(args: argparse.Namespace) -> int:
    from deepconvnet.experiments import (
        DEFAULT_SIZES,
        QUICK_EPOCHS,
        QUICK_SIZES,
        DepthConfig,
        epochs_for_sizes,
        parse_epochs,
        parse_sizes,
        run_depth_experiment,
    )

    given = given_options(args)
    if args.resume is not None:
        refuse_with_resume(given, ("resume", "threads", "data_dir"), "experiment")
        out = Path(args.resume)
        given_settings = DepthConfig(threads=args.threads, data_dir=args.data_dir)
        record = run_depth_experiment(given_settings, out, log=_log, resume=True)
        return _print_depth_table(record, out)
    if args.quick:
        sizes = parse_sizes(args.sizes) if args.sizes else QUICK_SIZES
        epochs = parse_epochs(args.epochs) if args.epochs else (QUICK_EPOCHS,)
    else:
        sizes = parse_sizes(args.sizes) if args.sizes else DEFAULT_SIZES
        epochs = parse_epochs(args.epochs) if args.epochs else ()
    epochs = tuple(epochs_for_sizes(sizes, epochs))
    out = Path(args.out) if args.out else Path("runs") / time.strftime("depth-%Y%m%d-%H%M%S")
    config = DepthConfig(
        sizes=sizes,
        epochs=epochs,
        seed=args.seed,
        threads=args.threads,
        dataset=args.dataset,
        data_dir=args.data_dir,
        extra={"command": _depth_command(sizes, epochs, args)},
    )
    return _print_depth_table(run_depth_experiment(config, out, log=_log), out)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _print_depth_table(record: dict, out: Path) -> int:
    print(f"{'size':>7} {'epochs':>6}  {'network':<16}{'accuracy':>9}{'seconds':>9}")
    for c in record["cells"]:
        print(
            f"{c['train_size']:>7} {c['epochs']:>6}  {c['model']:<16}"
            f"{c['test_accuracy']:>9.4f}{c['train_seconds']:>9.1f}"
        )
    print(f"total {record['total_seconds'] / 60:.1f} min; table, JSON and plot in {out}")
    return 0


def _depth_command(sizes, epochs, args: argparse.Namespace) -> str:
    """The command that reruns exactly these cells (recorded in the table's notes)."""
    command = (
        f"deepconvnet experiment depth --sizes {','.join(map(str, sizes))} "
        f"--epochs {','.join(map(str, epochs))} --seed {args.seed}"
    )
    if args.threads:
        command += f" --threads {args.threads}"
    if args.dataset != "mnist":
        command += f" --dataset {args.dataset}"
    return command
