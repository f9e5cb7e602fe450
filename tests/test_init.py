"""He and Xavier: the book's formulas, fan-in from the weight's shape, zero biases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deepconvnet import init
from deepconvnet.layers import Affine, Convolution

CONV = (16, 8, 3, 3)  # (out, in, kh, kw): one output sums over 8 * 3 * 3 = 72 inputs
AFFINE = (1024, 50)  # (in, out): one output sums over 1024 inputs


def test_fan_in_from_conv_and_affine_shapes():
    assert init.fan_in(CONV) == 72
    assert init.fan_in((32, 16, 5, 3)) == 16 * 5 * 3  # non-square kernels count both sides
    assert init.fan_in(AFFINE) == 1024
    assert init.fan_in((1, 10)) == 1


@pytest.mark.parametrize("shape", [(10,), (2, 3, 4), (4, 0, 3, 3), (0, 10)])
def test_fan_in_of_an_unusable_shape_is_a_value_error(shape):
    with pytest.raises(ValueError, match=r"fan-in"):
        init.fan_in(shape)


def test_he_and_xavier_std_are_the_books_formulas():
    assert init.he_std(CONV) == pytest.approx(math.sqrt(2 / 72), rel=1e-15)
    assert init.he_std(AFFINE) == pytest.approx(math.sqrt(2 / 1024), rel=1e-15)
    # The book's Xavier: sqrt(1 / n), n the previous layer's node count (not 2 / (in + out)).
    assert init.xavier_std(CONV) == pytest.approx(math.sqrt(1 / 72), rel=1e-15)
    assert init.xavier_std(AFFINE) == pytest.approx(math.sqrt(1 / 1024), rel=1e-15)


def test_names_are_case_insensitive_and_unknown_ones_refused():
    assert init.check_name("He") == "he" and init.check_name("XAVIER") == "xavier"
    with pytest.raises(ValueError, match="unknown initializer 'glorot'"):
        init.check_name("glorot")


def assert_normal_with_std(w: np.ndarray, std: float) -> None:
    """Sample mean and std within 5 standard errors of N(0, std^2).

    For n normal draws the sample mean has standard error std / sqrt(n) and the sample std about
    std / sqrt(2 n), so a correct initializer fails this bound with probability below 1e-6, while
    a std off by the sqrt(2) between He and Xavier misses it by far more than 5 errors.
    """
    n = w.size
    values = w.astype(np.float64).ravel()
    assert abs(values.mean()) < 5 * std / math.sqrt(n)
    assert abs(values.std() - std) < 5 * std / math.sqrt(2 * n)


@pytest.mark.parametrize("name", ["he", "xavier"])
@pytest.mark.parametrize("shape", [(64, 32, 3, 3), (1024, 100)])
def test_sampled_weights_have_the_rule_s_std(name, shape):
    std = {"he": init.he_std, "xavier": init.xavier_std}[name](shape)
    w = init.initialize(name, shape, np.random.default_rng(7))
    assert w.shape == shape and w.dtype == np.float32
    assert_normal_with_std(w, std)


def test_same_seed_same_weights_other_seed_other_weights():
    a = init.initialize("he", CONV, np.random.default_rng(3), np.float64)
    b = init.initialize("he", CONV, np.random.default_rng(3), np.float64)
    c = init.initialize("he", CONV, np.random.default_rng(4), np.float64)
    assert a.dtype == np.float64
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize(
    "layer,fan",
    [
        (Convolution(32, 64, 3, weight_init="he"), 32 * 9),
        (Convolution(16, 32, (3, 5), weight_init="xavier"), 16 * 15),
        (Affine(1024, 100, weight_init="he"), 1024),
        (Affine(500, 200, weight_init="xavier"), 500),
    ],
)
def test_layers_draw_from_their_own_fan_in_and_zero_their_biases(layer, fan):
    layer.params["b"][...] = 1.0  # a stale bias must not survive a re-initialisation
    layer.initialize(np.random.default_rng(11))
    gain = 2.0 if layer.weight_init == "he" else 1.0
    assert_normal_with_std(layer.params["W"], math.sqrt(gain / fan))
    assert np.array_equal(layer.params["b"], np.zeros_like(layer.params["b"]))
