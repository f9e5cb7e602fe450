import numpy as np

from deepconvnet.gradcheck import check_layer, relative_error
from deepconvnet.layers import Convolution


def test_relative_error_definition():
    assert relative_error(np.array([1.0]), np.array([3.0]))[0] == 0.5
    assert relative_error(np.array([0.0]), np.array([0.0]))[0] == 0.0


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
