import numpy as np
import pytest

from deepconvnet.gradcheck import (
    EPS,
    TOLERANCE,
    check_layer,
    check_model,
    relative_error,
    resolution,
)
from deepconvnet.layers import Affine, BatchNormalization, Convolution, ReLU, SoftmaxWithLoss
from deepconvnet.models import Sequential


def test_relative_error_definition():
    assert relative_error(np.array([1.0]), np.array([3.0]))[0] == 0.5
    assert relative_error(np.array([0.0]), np.array([0.0]))[0] == 0.0
    assert relative_error(np.array([1e-18]), np.array([1e-11]), floor=1e-4)[0] < 1e-6


def test_detects_a_wrong_backward(rng):
    layer = Convolution(2, 2, 3, 1, 1)
    layer.astype(np.float64)
    layer.initialize(rng)
    backward = layer.backward

    def buggy(dout):
        dx = backward(dout)
        layer.grads["W"] = layer.grads["W"] * 1.001
        return dx

    layer.backward = buggy
    result = check_layer(layer, rng.standard_normal((2, 2, 5, 5)), rng)
    assert result["per_parameter"]["W"] > 1e-4
    assert result["per_parameter"]["x"] < 1e-6


def _bn_model(rng: np.random.Generator, out_scale: float = 1.0):
    """conv -> BatchNorm -> ReLU -> affine on 8 images: the conv bias's true gradient is 0.

    ``out_scale`` shrinks the affine weights, and with them every gradient below the affine.
    """
    layers = [Convolution(1, 3, 3, 1, 1), BatchNormalization(3), ReLU(), Affine(108, 4)]
    model = Sequential([*layers, SoftmaxWithLoss()], (1, 6, 6), rng, dtype=np.float64)
    model.initialize()
    model.layers[3].params["W"] *= out_scale
    return model, rng.random((8, 1, 6, 6)), rng.integers(0, 4, 8)


def test_zero_gradient_of_a_bias_feeding_batchnorm_passes(rng):
    model, x, t = _bn_model(rng)
    result = check_model(model, x, t, rng, n_samples=5)
    assert np.abs(model.grads()["0.b"]).max() < 1e-15  # BatchNorm subtracts it again
    assert result["max_relative_error"] <= TOLERANCE, result


def _scale_dx(layer, factor):
    backward = layer.backward
    layer.backward = lambda dout: backward(dout) * factor


def _zero_grads(layer, name):
    backward = layer.backward

    def broken(dout):
        dx = backward(dout)
        layer.grads[name][...] = 0
        return dx

    layer.backward = broken


@pytest.mark.parametrize(
    ("break_it", "checked"),
    [
        (lambda m: _scale_dx(m.layers[1], 1.01), "0.W"),
        (lambda m: _zero_grads(m.layers[1], "beta"), "1.beta"),
    ],
)
def test_errors_on_gradients_under_the_floor_still_fail(rng, break_it, checked):
    model, x, t = _bn_model(rng, out_scale=1e-3)
    floor = resolution(model.loss(x, t, train=True), EPS / 2) / TOLERANCE
    model.backward()
    assert np.abs(model.grads()[checked]).max() < floor  # judged by the floor, not |a| + |n|
    break_it(model)
    result = check_model(model, x, t, rng, n_samples=5)
    assert result["per_parameter"][checked] > 1e-3, result
