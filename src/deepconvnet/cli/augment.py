"""``deepconvnet augment-preview``: see what an ``--augment`` spec does to training digits."""

from __future__ import annotations

import argparse

from deepconvnet.cli.common import (
    add_data_options,
    int_up_to,
    nonnegative_int,
    png_path,
    warn_if_flipping_digits,
)

# A picture to look at, not a dataset dump: 50 rows of 20 variants is 1,050 subplots, a
# 1900 x 4500 px PNG drawn in ~20 s and ~0.5 GB (measured). Unbounded, --count 100000 asked for
# 60,000 rows of subplots and ate 7.6 GB in a minute without writing anything.
MAX_COUNT = 50
MAX_VARIANTS = 20


def register(subparsers: argparse._SubParsersAction) -> None:
    from deepconvnet.data.augment import SPEC_HELP

    parser = subparsers.add_parser(
        "augment-preview",
        help="draw training digits next to augmented versions of them",
        description="Pick --count training images at random (by --seed), draw --variants augmented "
        "versions of each with the --augment spec, and save the grid as a PNG (originals in the "
        "first, framed column; the spec in the title). Ranges: crop=PAD 1-14, elastic alpha "
        "0-1000 and sigma 0.1-28 pixels.",
    )
    parser.add_argument(
        "--out",
        type=png_path,
        required=True,
        metavar="FILE.png",
        help="where to write the PNG",
    )
    parser.add_argument(
        "--augment",
        default="standard",
        metavar="SPEC",
        help=f"augmentation (default: standard): {SPEC_HELP}",
    )
    parser.add_argument(
        "--count",
        type=int_up_to(MAX_COUNT),
        default=6,
        help=f"digits (rows), 1 to {MAX_COUNT}, default 6",
    )
    parser.add_argument(
        "--variants",
        type=int_up_to(MAX_VARIANTS),
        default=8,
        help=f"augmented versions per digit, 1 to {MAX_VARIANTS}, default 8",
    )
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default 0)")
    add_data_options(parser)
    parser.set_defaults(func=run_augment_preview)


def run_augment_preview(args: argparse.Namespace) -> int:
    import numpy as np

    from deepconvnet import plots
    from deepconvnet.data import load_dataset, to_float
    from deepconvnet.data.augment import augmented_variants, parse_augment
    from deepconvnet.errors import DeepConvNetError

    augmenter = parse_augment(args.augment)
    if augmenter is None:
        raise DeepConvNetError(f"--augment {args.augment!r}: no augmentation, nothing to preview")
    warn_if_flipping_digits(augmenter, args.dataset)
    dataset = load_dataset(args.dataset, args.data_dir)
    rng = np.random.default_rng(args.seed)
    count = min(args.count, len(dataset.train_images))
    chosen = np.sort(rng.choice(len(dataset.train_images), count, replace=False))
    images = to_float(dataset.train_images[chosen])
    variants = augmented_variants(images, augmenter, args.variants, rng)
    labels = [dataset.class_names[i] for i in dataset.train_labels[chosen]]
    title = f"{dataset.name}: --augment {augmenter.spec} (seed {args.seed})"
    path = plots.augmentation_grid(images[:, 0], variants[:, :, 0], labels, args.out, title=title)
    print(f"wrote {path}")
    return 0
