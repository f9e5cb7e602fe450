"""A run's random streams: one per purpose, none shared (NumPy pads seed keys with zeros)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from deepconvnet.streams import AUGMENT, DROPOUT, INIT, ORDER, VAL_SPLIT, stream


def first_draws(rng: np.random.Generator) -> tuple[int, ...]:
    return tuple(rng.integers(0, 2**63, size=4))


def test_zero_padding_is_why_keys_carry_a_purpose():
    """The collision the module exists to avoid: keys that differ only by trailing zeros."""
    assert first_draws(np.random.default_rng(5)) == first_draws(np.random.default_rng([5, 0]))


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_every_stream_of_a_run_is_distinct(seed):
    keys = [(INIT,), (DROPOUT,), (VAL_SPLIT,)]
    keys += [(ORDER, e) for e in range(3)]
    keys += [(AUGMENT, e, i) for e in range(3) for i in range(3)]
    draws = {key: first_draws(stream(seed, *key)) for key in keys}
    for a, b in itertools.combinations(keys, 2):
        assert draws[a] != draws[b], f"streams {a} and {b} of seed {seed} coincide"
    # nor may one seed's stream be another seed's: members of an ensemble use seeds s, s+1, ...
    other = {first_draws(stream(seed + 1, *key)) for key in keys}
    assert not other & set(draws.values())


def test_streams_are_reproducible_and_checked():
    assert first_draws(stream(3, ORDER, 2)) == first_draws(stream(3, ORDER, 2))
    with pytest.raises(ValueError, match="takes 1 indices"):
        stream(3, ORDER)
    with pytest.raises(ValueError, match="unknown stream purpose"):
        stream(3, 0)
