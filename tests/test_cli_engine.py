"""`deepconvnet summary` and `deepconvnet gradcheck` from the command line."""

import argparse
import json

import pytest

from deepconvnet.cli import build_parser, main


def test_summary_json(capsys):
    assert main(["summary", "--json", "--compare-filters"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] == 123552
    # Figure 8-1 by hand: a 3x3 convolution makes C_in * 9 multiply-adds per output value
    # (C_out x H x W of them), an affine layer in x out; pooling, ReLU and dropout none.
    convs = [(1, 16, 28), (16, 16, 28), (16, 32, 14), (32, 32, 16), (32, 64, 8), (64, 64, 8)]
    by_hand = [c_in * 9 * c_out * side * side for c_in, c_out, side in convs]
    by_hand += [64 * 4 * 4 * 50, 50 * 10]
    assert [r["macs"] for r in out["layers"] if r["macs"]] == by_hand
    assert out["macs"] == sum(by_hand) == 8_772_340
    assert [r["receptive_field"] for r in out["layers"] if r["type"] == "MaxPooling"] == [6, 16, 36]
    rows = out["compare_filters"]
    assert [(r["receptive_field"], r["stacked_weights"], r["single_weights"]) for r in rows] == [
        (3, 9, 9),
        (5, 18, 25),
        (7, 27, 49),
        (9, 36, 81),
    ]


def test_summary_table_columns_line_up_whatever_the_layer_names(capsys):
    """deepconvnet-bn's '11.BatchNormalization' overflowed the name column and shifted its row."""
    assert main(["summary", "--model", "deepconvnet-bn"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert "11.BatchNormalization" in "\n".join(rows)
    assert len({len(row) for row in rows if not row.startswith("total")}) == 1
    header = rows[0]
    for column in ("output", "params", "MACs"):
        end = header.index(column) + len(column)
        assert all(row[end - 1] != " " and row[end : end + 1] in ("", " ") for row in rows[1:-1])


def test_gradcheck_json(capsys):
    assert main(["gradcheck", "--json", "--seed", "1", "--samples", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["max_relative_error"] < 1e-6
    assert len(out["per_parameter"]) == 16


def test_gradcheck_passes_the_batchnorm_model(capsys):
    # Its conv biases feed BatchNorm (true gradient 0): round-off must not fail them.
    argv = ["gradcheck", "--model", "deepconvnet-bn", "--json", "--seed", "1", "--samples", "1"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["max_relative_error"] <= 1e-6
    assert len(out["per_parameter"]) == 30


@pytest.mark.parametrize("command", ["summary", "gradcheck"])
def test_unknown_model_exit_2(command, capsys):
    with pytest.raises(SystemExit) as exit_info:  # argparse refuses it: one line, exit 2
        main([command, "--model", "nope"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "invalid choice: 'nope'" in err and "deepconvnet-bn" in err
    assert len(err.splitlines()) == 1


def _subcommands(parser: argparse.ArgumentParser, prefix: str = "deepconvnet"):
    """Every (name, parser) of the command tree, nested ones (ensemble train) included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub
                yield from _subcommands(sub, f"{prefix} {name}")


def test_every_command_explains_itself_in_its_help():
    """--help of each command says what it does, not only which options it takes."""
    commands = dict(_subcommands(build_parser()))
    assert len(commands) >= 15
    missing = [name for name, sub in commands.items() if not (sub.description or "").strip()]
    assert missing == []


@pytest.mark.parametrize(
    "argv,prog",
    [
        (["train", "--bogus"], "deepconvnet train"),
        (["ensemble", "train", "-x"], "deepconvnet ensemble train"),
    ],
)
def test_an_unknown_option_is_reported_by_the_command_it_was_given_to(argv, prog, capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(argv)
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert err == f"{prog}: error: unrecognized arguments: {argv[-1]} (see {prog} --help)\n"
