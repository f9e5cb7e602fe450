"""``deepconvnet ensemble train`` and ``deepconvnet ensemble evaluate``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from deepconvnet.cli.common import (
    add_data_options,
    add_threads_option,
    load_test_dataset,
    nonempty_path,
    positive_int,
)
from deepconvnet.cli.train import (
    add_train_options,
    config_from_args,
    given_options,
    leave_out_defaults,
    refuse_with_resume,
)
from deepconvnet.errors import EXIT_INTERRUPTED

EXIT_FAILED = 1


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "ensemble",
        help="train N networks with different seeds and average their predictions",
        description="Ensembles: members trained in parallel, softmax outputs averaged.",
    )
    commands = parser.add_subparsers(
        dest="ensemble_command", metavar="COMMAND", parser_class=type(parser), required=True
    )
    _register_train(commands)
    _register_evaluate(commands)


def _register_train(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train",
        help="train the members (seeds seed, seed+1, ...) in parallel worker processes",
        description=(
            "Train N members into DIR/member-00, DIR/member-01, ... with seeds seed, seed+1, ...; "
            "every other option is a train option shared by all members. --threads is the total "
            "budget: W workers run at once with threads // W threads each. Ctrl-C stops every "
            "member after its current step (each checkpoints); --resume DIR finishes the rest, "
            "and deepconvnet train --resume DIR/member-XX carries on a single member."
        ),
    )
    parser.add_argument("--members", type=positive_int, default=5, help="members (default: 5)")
    parser.add_argument(
        "--out",
        type=nonempty_path,
        default=None,
        metavar="DIR",
        help="ensemble directory (required unless --resume)",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="W",
        help="members trained at once (default: min(members, threads))",
    )
    parser.add_argument(
        "--resume",
        type=nonempty_path,
        default=None,
        metavar="DIR",
        help="finish the unfinished members of DIR with its saved options (only --workers, "
        "--threads, --ray-address and --no-progress may be given with it)",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="run members as Ray tasks on the cluster at ADDR: HOST:PORT of a `ray start "
        "--head` (with RAY_AUTH_MODE=token where it uses token authentication, as `ray start` "
        "does by default since Ray 2.59), 'auto' for the one this machine belongs to, or "
        "'local' to start a Ray of its own; needs the 'ray' extra",
    )
    add_train_options(parser)
    parser.set_defaults(func=run_ensemble_train, option_defaults=leave_out_defaults(parser))


# Options `ensemble train --resume` accepts: how the rest is run, not what it computes.
RESUME_OPTIONS = ("resume", "workers", "threads", "ray_address", "no_progress")


def run_ensemble_train(args: argparse.Namespace) -> int:
    from deepconvnet.ensemble import (
        check_members_can_start,
        load_plan,
        new_ensemble,
        plan_ensemble,
        ray_connection,
        train_ensemble,
    )
    from deepconvnet.errors import DeepConvNetError

    given = given_options(args)
    if args.resume:
        refuse_with_resume(given, RESUME_OPTIONS, "ensemble")
        plan = load_plan(args.resume, args.workers, args.threads)
    else:
        if not args.out:
            raise DeepConvNetError("ensemble train needs --out DIR (or --resume DIR)")
        config = config_from_args(args)
        plan = plan_ensemble(config, args.out, args.members, args.workers, args.threads)
    if args.ray_address in (None, "local"):
        # Members on a remote Ray cluster read the data on their own machines, which this one
        # may not share; everywhere else the driver sees exactly what the members will see.
        check_members_can_start(plan)
    with ray_connection(args.ray_address):  # a wrong address is refused before anything is made
        if not args.resume:
            new_ensemble(plan)
        print(
            f"ensemble of {plan.members} x {plan.config.model} in {plan.directory}: "
            f"{plan.workers} worker(s) x {plan.member_threads} thread(s)",
            file=sys.stderr,
        )
        results = train_ensemble(plan, ray_address=args.ray_address)
    failed = [r for r in results if r.status == "failed"]
    interrupted = [r for r in results if r.status == "interrupted"]
    finished = [r for r in results if r.status == "finished"]
    print(f"{len(finished)}/{len(results)} members finished in {plan.directory}")
    for r in finished:
        print(f"  {r.run_dir.name}  test accuracy {r.test_accuracy:.4f}")
    for r in failed:
        print(f"  {r.run_dir.name}  FAILED: {r.error}")
    if failed:
        return EXIT_FAILED
    if interrupted:
        print(f"interrupted; resume with: deepconvnet ensemble train --resume {plan.directory}")
        return EXIT_INTERRUPTED
    print(f"evaluate with: deepconvnet ensemble evaluate {plan.directory}")
    return 0


def _register_evaluate(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "evaluate",
        help="accuracy of each member and of the ensemble (averaged probabilities, vote)",
        description=(
            "Average the members' softmax probabilities on the test set; also report the majority "
            "vote (ties go to the class with the higher averaged probability)."
        ),
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="DIR|RUN",
        help="an ensemble directory (all its members), run directories or model files",
    )
    add_data_options(parser, tests_a_model=True)
    add_threads_option(parser)
    parser.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        metavar="N",
        help="evaluate on the first N test images only (quick looks)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {"members": [accuracy...], "paths": [model file...], "ensemble", "vote"}',
    )
    parser.set_defaults(func=run_ensemble_evaluate)


def run_ensemble_evaluate(args: argparse.Namespace) -> int:
    from deepconvnet.data import to_float
    from deepconvnet.ensemble import evaluate_ensemble, member_model_paths
    from deepconvnet.threads import set_threads

    set_threads(args.threads)
    models = member_model_paths(args.paths)
    if args.dataset is None:
        _check_one_training_set(models)
    dataset = load_test_dataset(args, models[0])
    images, labels = dataset.test_images[: args.limit], dataset.test_labels[: args.limit]
    source = f"the {dataset.name} test images"
    classes = len(dataset.class_names)
    report = evaluate_ensemble(models, to_float(images), labels, source=source, classes=classes)
    if args.json:
        print(json.dumps(report))
        return 0
    for path, accuracy in zip(report["paths"], report["members"], strict=True):
        print(f"{accuracy:.4f}  {path}")
    n = len(report["members"])
    print(f"on the {dataset.name} test set ({len(labels)} images)")
    print(f"{report['ensemble']:.4f}  ensemble of {n} (averaged probabilities)")
    print(f"{report['vote']:.4f}  ensemble of {n} (majority vote)")
    return 0


def _check_one_training_set(models: list[Path]) -> None:
    """Refuse members trained on different datasets (without --dataset, the one to test them
    on): a one-line error, not a test whose dataset depends on the order of the members."""
    from deepconvnet.errors import DeepConvNetError
    from deepconvnet.train import trained_on

    datasets = {path: trained_on(path) or "mnist" for path in models}
    if len(set(datasets.values())) > 1:
        kinds = ", ".join(f"{path}: {name}" for path, name in datasets.items())
        raise DeepConvNetError(f"members trained on different datasets ({kinds}); give --dataset")
