"""Learning-rate schedules: values from their formulas, warm-up, specs and errors."""

from __future__ import annotations

import itertools
import math

import pytest

from deepconvnet.errors import DeepConvNetError
from deepconvnet.schedules import (
    Constant,
    Cosine,
    Exponential,
    Step,
    Warmup,
    number_text,
    parse_schedule,
    whole_number,
)

BASE, TOTAL = 0.1, 20


def rates(spec: str, base: float = BASE, total: int = TOTAL) -> list[float]:
    schedule = parse_schedule(spec)
    return [schedule.lr(epoch, base, total) for epoch in range(total)]


def test_constant_is_the_base_rate_every_epoch():
    assert rates("constant") == [BASE] * TOTAL
    assert parse_schedule(None) == Constant() and parse_schedule("") == Constant()


def test_exponential():
    assert rates("exp:0.95") == pytest.approx([BASE * 0.95**e for e in range(TOTAL)], rel=1e-12)
    assert parse_schedule("exp:0.95").lr(3, 0.2, 10) == pytest.approx(0.2 * 0.95**3, rel=1e-12)


def test_step_multiplies_once_every_n_epochs():
    got = rates("step:10:0.5", total=25)
    assert got[:10] == [BASE] * 10
    assert got[10:20] == pytest.approx([BASE * 0.5] * 10, rel=1e-12)
    assert got[20:] == pytest.approx([BASE * 0.25] * 5, rel=1e-12)


@pytest.mark.parametrize("floor", [0.0, 0.01])
def test_cosine_from_base_to_floor_over_the_run(floor):
    spec = "cosine" if floor == 0 else f"cosine:{floor}"
    expected = [
        BASE * (floor + (1 - floor) * (1 + math.cos(math.pi * e / TOTAL)) / 2) for e in range(TOTAL)
    ]
    got = rates(spec)
    assert got == pytest.approx(expected, rel=1e-12)
    assert got[0] == BASE and got[TOTAL // 2] == pytest.approx(BASE * (1 + floor) / 2)
    assert all(a > b for a, b in itertools.pairwise(got))
    assert got[-1] > BASE * floor  # the last epoch still learns
    # Past the end (a run extended on resume) it stays at the floor.
    assert parse_schedule(spec).lr(TOTAL + 3, BASE, TOTAL) == pytest.approx(BASE * floor)


def test_warmup_starts_low_and_reaches_base_at_the_end_of_warmup():
    got = rates("warmup:2+cosine")
    assert got[0] == pytest.approx(BASE / 3) and got[1] == pytest.approx(2 * BASE / 3)
    assert got[2] == pytest.approx(BASE)
    rest = TOTAL - 2
    expected = [BASE * (1 + math.cos(math.pi * e / rest)) / 2 for e in range(rest)]
    assert got[2:] == pytest.approx(expected, rel=1e-12)


def test_warmup_then_constant_and_then_step():
    assert rates("warmup:4", total=6) == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1, 0.1])
    got = rates("warmup:1+step:2:0.1", total=6)
    assert got == pytest.approx([0.05, 0.1, 0.1, 0.01, 0.01, 0.001])


def test_fractional_epochs_interpolate_for_per_step_updates():
    warmup = parse_schedule("warmup:2")
    assert warmup.lr(0.5, BASE, 10) == pytest.approx(BASE * 1.5 / 3)
    assert parse_schedule("step:2:0.5").lr(1.99, BASE, 10) == BASE


@pytest.mark.parametrize(
    ("spec", "schedule"),
    [
        ("constant", Constant()),
        ("exp:0.95", Exponential(0.95)),
        ("step:10:0.5", Step(10, 0.5)),
        ("cosine", Cosine()),
        ("cosine:0.01", Cosine(0.01)),
        ("warmup:2+cosine", Warmup(2, Cosine())),
        ("warmup:3", Warmup(3)),
        ("warmup:1+exp:0.9", Warmup(1, Exponential(0.9))),
    ],
)
def test_spec_round_trip(spec, schedule):
    assert parse_schedule(spec) == schedule
    assert schedule.spec == spec
    assert parse_schedule(schedule.spec) == schedule


def test_specs_are_normalised():
    assert parse_schedule(" EXP:0.950 ").spec == "exp:0.95"
    assert parse_schedule("warmup:2+constant").spec == "warmup:2"
    assert parse_schedule("step:5:1.0").spec == "step:5:1"


@pytest.mark.parametrize(
    ("spec", "culprit"),
    [
        ("linear", "linear"),
        ("exp", "exp"),
        ("exp:1.5", "1.5"),
        ("exp:0", "exp:0"),
        ("exp:abc", "abc"),
        ("step:10", "step:10"),
        ("step:0:0.5", "step:0:0.5"),
        ("step:2.5:0.5", "2.5"),
        ("step:10:-1", "-1"),
        ("cosine:1", "cosine:1"),
        ("cosine:0.1:2", "cosine:0.1:2"),
        ("constant:1", "constant:1"),
        ("warmup", "warmup"),
        ("warmup:0+cosine", "warmup:0+cosine"),
        ("warmup:2+", "warmup:2+"),
        ("warmup:2+warmup:1", "warmup:2+warmup:1"),
        ("cosine+exp:0.9", "cosine+exp:0.9"),
        ("warmup:2+bogus", "bogus"),
        ("step:²:0.5", "'²' is not a whole number"),  # isdigit() but not int()-able
        ("warmup:³", "'³' is not a whole number"),
        ("warmup:¹+cosine", "'¹' is not a whole number"),
    ],
)
def test_bad_specs_raise_one_line(spec, culprit):
    with pytest.raises(DeepConvNetError) as info:
        parse_schedule(spec)
    message = str(info.value)
    assert "\n" not in message and culprit in message


def test_negative_epoch_is_a_programming_error():
    with pytest.raises(ValueError, match="epoch"):
        parse_schedule("constant").lr(-1, BASE, 10)
    with pytest.raises(ValueError, match="total_epochs"):
        parse_schedule("cosine").lr(0, BASE, 0)


def test_whole_number_reads_ascii_digits_only():
    assert whole_number("0") == 0 and whole_number("12") == 12
    for text in ("", "²", "-1", "+1", "1.0", " 1", "1_0", "\u0663"):  # U+0663: Arabic-Indic 3
        assert whole_number(text) is None, text


def test_number_text_is_the_shortest_text_that_reads_back():
    assert [number_text(v) for v in (15.0, 0.15, 2, 1e-05)] == ["15", "0.15", "2", "1e-05"]
    for value in (0.1, 1 / 3, 34.0, 0.95):
        assert float(number_text(value)) == value
