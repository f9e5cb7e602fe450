"""The ``deepconvnet`` command line: one subcommand per job, thin (parse, call, print).

Each module of this package registers its subcommands through ``register(subparsers)`` and sets
``func`` on its parser: a function taking the parsed arguments and returning an exit code. This
module owns the error policy for all of them: a :class:`DeepConvNetError`, an ``OSError`` naming a
file (a path the user gave: too long a name, no permission) or a bad argument is one line on stderr
and exit code 2; Ctrl-C is 130; anything else is an internal error, exit code 1, with the
traceback only under ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence

from deepconvnet import __version__
from deepconvnet.errors import EXIT_INTERRUPTED, DeepConvNetError, Interrupted

# Subcommand modules, in the order their commands appear in --help.
COMMAND_MODULES = (
    "engine",  # summary, gradcheck
    "data",  # data
    "train",  # train, evaluate
    "augment",  # augment-preview
    "ensemble",  # ensemble train|evaluate
    "analysis",  # misclassified, visualize, experiment
    "serve",  # predict, serve, import-book
)

EXIT_USAGE = 2
EXIT_INTERNAL = 1


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a single line (plus exit code 2), not usage + error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="deepconvnet",
        description=(
            "Build, train, explain and serve the deep convolutional network of chapter 8 of "
            "'Deep Learning from Scratch' - from scratch on NumPy."
        ),
    )
    parser.add_argument("--version", action="version", version=f"deepconvnet {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks instead of one-line errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"deepconvnet.cli.{name}")
        except ModuleNotFoundError as exc:  # a command module not written yet
            if exc.name != f"deepconvnet.cli.{name}":
                raise
            continue
        module.register(sub)
    _remember_command_parsers(parser)
    return parser


def _remember_command_parsers(parser: argparse.ArgumentParser) -> None:
    """Give every command's parser a ``command_parser`` default naming itself, so that an
    unknown option is reported by the command it was given to (``deepconvnet train: error``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                command.set_defaults(command_parser=command)
                _remember_command_parsers(command)


def _on_one_line(message: object) -> str:
    """An error as one line even when it quotes a path or a file's text holding a newline."""
    return str(message).replace("\r", "\\r").replace("\n", "\\n")


def main(argv: Sequence[str] | None = None) -> int:
    try:  # building the parser imports every command module: Ctrl-C may land there
        parser = build_parser()
        args, unknown = parser.parse_known_args(argv)
    except KeyboardInterrupt:
        print("deepconvnet: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if unknown:
        command = getattr(args, "command_parser", parser)
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except DeepConvNetError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"deepconvnet: error: {_on_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Interrupted as stop:  # a clean stop: the message says how to resume
        print(f"deepconvnet: {_on_one_line(stop)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("deepconvnet: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except Exception as exc:
        from deepconvnet.fileio import one_line  # numpy: imported only when it is needed

        if args.debug:
            traceback.print_exc()
        if isinstance(exc, OSError) and exc.filename is not None:  # a path the user gave
            print(f"deepconvnet: error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE
        print(
            f"deepconvnet: internal error: {type(exc).__name__}: {one_line(exc)} "
            "(deepconvnet --debug COMMAND ... shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
