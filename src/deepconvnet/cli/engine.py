"""`deepconvnet summary` and `deepconvnet gradcheck`: the model's shape and its maths, checked."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from deepconvnet.cli.common import add_model_name_option, int_up_to, nonnegative_int

# Every entry costs two float64 forward passes of the whole network on the reference kernels;
# unbounded, --samples 200 ran past a minute and a huge count until stopped.
MAX_SAMPLES = 50

if TYPE_CHECKING:  # numpy and the models load lazily, when a command runs
    import numpy as np

    from deepconvnet.models import Sequential

GRADCHECK_THRESHOLD = 1e-6
GRADCHECK_IMAGES = 2
GRADCHECK_IMAGES_BN = 8  # batch statistics of two images are near-degenerate (each feature +-1)


def register(subparsers: argparse._SubParsersAction) -> None:
    summary = subparsers.add_parser(
        "summary",
        help="per-layer output shapes, parameters, receptive fields, multiply-adds",
        description=(
            "Print a registered architecture layer by layer: output shape, parameters, receptive "
            "field and multiply-adds per image (figure 8-1's DeepConvNet has 123,552 parameters). "
            "--compare-filters adds section 8.1.3's point: stacked 3x3 convolutions see as far "
            "as one large filter with fewer weights (figures 8-5 and 8-6)."
        ),
    )
    add_model_name_option(summary)
    summary.add_argument(
        "--json",
        action="store_true",
        help='print {"name", "input_shape", "params", "macs", "layers": [{"name", "type", '
        '"output_shape", "params", "receptive_field", "macs"}, ...]}; with --compare-filters '
        'also "compare_filters": [{"layers", "receptive_field", "stacked_weights", '
        '"single_filter", "single_weights", "ratio"}, ...]',
    )
    summary.add_argument(
        "--compare-filters",
        action="store_true",
        help="also compare stacked 3x3 convs with one large filter (the book's 18 vs 25)",
    )
    summary.set_defaults(func=run_summary)

    check = subparsers.add_parser(
        "gradcheck",
        help="compare backprop with numerical gradients (float64, reference kernels)",
        description=(
            "Prove the backward passes right, as section 5.7 of the book does: on "
            f"{GRADCHECK_IMAGES} random images ({GRADCHECK_IMAGES_BN} with BatchNorm), compare "
            "backprop's gradient with central differences for --samples entries of every "
            "parameter, in float64 with the reference kernels and dropout masks held fixed. "
            "Prints the largest relative error per parameter (gradients that agree within "
            "float64 round-off, such as the zero gradient of a bias feeding BatchNorm, count "
            f"as agreeing); exits 1 if any exceeds {GRADCHECK_THRESHOLD:g}."
        ),
    )
    add_model_name_option(check)
    check.add_argument(
        "--json",
        action="store_true",
        help='print {"max_relative_error", "per_parameter": {name: error}}',
    )
    check.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default 0)")
    check.add_argument(
        "--samples",
        type=int_up_to(MAX_SAMPLES),
        default=5,
        help=f"entries checked per parameter array, 1 to {MAX_SAMPLES} (default 5)",
    )
    check.set_defaults(func=run_gradcheck)


def run_summary(args: argparse.Namespace) -> int:
    import numpy as np

    from deepconvnet.models import build_model, compare_stacked_filters, model_summary

    model = build_model(args.model, rng=np.random.default_rng(0), backend="reference")
    summary = model_summary(model)
    filters = compare_stacked_filters() if args.compare_filters else None
    if args.json:
        if filters is not None:
            summary["compare_filters"] = filters
        print(json.dumps(summary))
        return 0
    print(_summary_table(summary))
    if filters is not None:
        print()
        print(_filters_table(filters))
    return 0


def _summary_table(summary: dict) -> str:
    """Fixed-width columns; the first as wide as the longest layer name (22.BatchNormalization)."""
    w = max(18, *(len(row["name"]) + 1 for row in summary["layers"]))
    header = f"{'layer':<{w}}{'output':>12}{'params':>10}{'rf':>5}{'MACs':>12}"
    lines = [f"{summary['name']}  input {tuple(summary['input_shape'])}", header]
    for row in summary["layers"]:
        shape = "x".join(str(d) for d in row["output_shape"])
        lines.append(
            f"{row['name']:<{w}}{shape:>12}{row['params']:>10,}"
            f"{row['receptive_field']:>5}{row['macs']:>12,}"
        )
    lines.append(f"{'total':<{w}}{'':>12}{summary['params']:>10,}{'':>5}{summary['macs']:>12,}")
    return "\n".join(lines)


def _filters_table(rows: list[dict]) -> str:
    """Figures 8-5/8-6: k stacked 3x3 convs see as far as one (2k+1)x(2k+1) filter."""
    lines = [
        "Stacked 3x3 convolutions vs one large filter of the same receptive field",
        "(weights per input/output channel pair, biases aside)",
        f"{'3x3 layers':>10}{'receptive field':>17}{'3x3 stack':>11}{'one filter':>12}"
        f"{'its weights':>13}{'stack/one':>11}",
    ]
    for r in rows:
        size = f"{r['single_filter']}"
        lines.append(
            f"{r['layers']:>10}{r['receptive_field']:>17}{r['stacked_weights']:>11}"
            f"{size:>12}{r['single_weights']:>13}{r['ratio']:>11.2f}"
        )
    return "\n".join(lines) + "\n"


def run_gradcheck(args: argparse.Namespace) -> int:
    import numpy as np

    from deepconvnet.gradcheck import check_model
    from deepconvnet.models import build_model

    rng = np.random.default_rng(args.seed)
    model = build_model(args.model, rng=rng, dtype=np.float64, backend="reference")
    x, t = _gradcheck_batch(model, rng)
    result = check_model(model, x, t, rng, n_samples=args.samples, tolerance=GRADCHECK_THRESHOLD)
    if args.json:
        print(json.dumps(result))
    else:
        for name, error in result["per_parameter"].items():
            flag = "" if error <= GRADCHECK_THRESHOLD else "  FAIL"
            print(f"{name:<10}{error:10.2e}{flag}")
        print(f"max relative error {result['max_relative_error']:.2e}")
    return 0 if result["max_relative_error"] <= GRADCHECK_THRESHOLD else 1


def _gradcheck_batch(model: Sequential, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random images and labels; more of them with BatchNorm, whose statistics need a batch."""
    from deepconvnet.layers import BatchNormalization

    has_bn = any(isinstance(layer, BatchNormalization) for layer in model.layers)
    n = GRADCHECK_IMAGES_BN if has_bn else GRADCHECK_IMAGES
    classes = model.output_shapes()[-1][0]
    return rng.random((n, *model.input_shape)), rng.integers(0, classes, size=n)
