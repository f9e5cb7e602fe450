import json

from deepconvnet.cli import main


def test_summary_json(capsys):
    assert main(["summary", "--json", "--compare-filters"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] == 123552
    assert out["macs"] == sum(r["macs"] for r in out["layers"])
    rows = out["compare_filters"]
    assert [(r["receptive_field"], r["stacked_weights"], r["single_weights"]) for r in rows] == [
        (3, 9, 9),
        (5, 18, 25),
        (7, 27, 49),
        (9, 36, 81),
    ]


def test_gradcheck_json(capsys):
    assert main(["gradcheck", "--json", "--seed", "1", "--samples", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["max_relative_error"] < 1e-6
    assert len(out["per_parameter"]) == 16


def test_unknown_model_exit_2(capsys):
    assert main(["summary", "--model", "nope"]) == 2
    assert "unknown model" in capsys.readouterr().err
