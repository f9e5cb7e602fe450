import numpy as np
import pytest

from deepconvnet.gradcheck import check_layer
from deepconvnet.kernels import fast as fast_kernels
from deepconvnet.layers import (
    Affine,
    BatchNormalization,
    Convolution,
    Dropout,
    MaxPooling,
    ReLU,
    SoftmaxWithLoss,
)
from deepconvnet.threads import split_bounds


def f64(layer, rng):
    layer.astype(np.float64)
    layer.initialize(rng)
    for v in layer.params.values():
        v += rng.standard_normal(v.shape) * 0.1
    return layer


@pytest.mark.parametrize(
    "k,stride,pad,hw",
    [(3, 1, 1, (6, 6)), (3, 2, 0, (7, 8)), ((2, 3), 2, 2, (5, 6)), ((1, 4), 1, 0, (4, 7))],
)
def test_convolution_gradients(rng, k, stride, pad, hw):
    layer = f64(Convolution(2, 3, k, stride, pad), rng)
    result = check_layer(layer, rng.standard_normal((2, 2, *hw)), rng)
    assert result["max_relative_error"] < 1e-6, result


@pytest.mark.parametrize("pool,stride,pad", [(2, 2, 0), (3, 1, 1), (2, 1, 0)])
def test_maxpooling_gradients(rng, pool, stride, pad):
    result = check_layer(
        MaxPooling(pool, pool, stride, pad), rng.standard_normal((2, 3, 6, 5)), rng
    )
    assert result["max_relative_error"] < 1e-6, result


def test_affine_relu_gradients(rng):
    assert (
        check_layer(f64(Affine(24, 5), rng), rng.standard_normal((3, 2, 3, 4)), rng)[
            "max_relative_error"
        ]
        < 1e-6
    )
    assert check_layer(ReLU(), rng.standard_normal((4, 7)), rng)["max_relative_error"] < 1e-6


@pytest.mark.parametrize("shape", [(5, 4), (4, 3, 3, 2)])
def test_batchnorm_train_gradients(rng, shape):
    layer = f64(BatchNormalization(shape[1]), rng)
    result = check_layer(layer, rng.standard_normal(shape) * 2 + 1, rng, train=True)
    assert result["max_relative_error"] < 1e-6, result


@pytest.mark.parametrize("mode", ["book", "inverted"])
def test_dropout_gradients_with_held_mask(rng, mode):
    layer = Dropout(0.4, mode)
    layer.rng = rng
    assert check_layer(layer, rng.standard_normal((6, 5)), rng)["max_relative_error"] < 1e-6


def test_softmax_with_loss_gradient_and_stability(rng):
    x = rng.standard_normal((4, 5)) * 3
    t = np.array([0, 4, 2, 2])
    layer = SoftmaxWithLoss()
    layer.forward(x, t)
    dx = layer.backward()
    num = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = 1e-6
        num[i] = (layer.forward(x + e, t) - layer.forward(x - e, t)) / 2e-6
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-9)
    # one-hot labels give the same loss and gradient; huge scores stay finite
    one_hot = np.eye(5)[t]
    assert layer.forward(x, one_hot) == pytest.approx(layer.forward(x, t), rel=1e-12)
    assert np.isfinite(layer.forward(x * 1e4, t))


@pytest.mark.parametrize("mode,train_scale,eval_scale", [("book", 1, 0.75), ("inverted", 4 / 3, 1)])
def test_dropout_train_and_eval(rng, mode, train_scale, eval_scale):
    layer = Dropout(0.25, mode)
    layer.rng = rng
    x = np.ones((200, 50), np.float32)
    y = layer.forward(x, train=True)
    assert set(np.unique(y).tolist()) <= {0.0, float(np.float32(train_scale))}
    assert abs((y == 0).mean() - 0.25) < 0.02
    np.testing.assert_array_equal(layer.forward(x, train=False), x * np.float32(eval_scale))
    assert layer.forward(x, train=False).dtype == np.float32


def test_batchnorm_eval_uses_running_statistics():
    layer = BatchNormalization(2, momentum=0.5, eps=0.0)
    x = np.array([[1.0, 2.0], [3.0, 6.0]], np.float32)
    layer.forward(x, train=True)
    np.testing.assert_array_equal(layer.buffers["running_mean"], [1.0, 2.0])  # 0.5*0 + 0.5*mean
    np.testing.assert_array_equal(layer.buffers["running_var"], [1.0, 2.5])  # 0.5*1 + 0.5*var
    y = layer.forward(np.array([[3.0, 2.0]], np.float32), train=False)
    np.testing.assert_allclose(y, [[2.0, 0.0]], rtol=1e-6)


def test_affine_flattens_nhwc_in_nchw_order(rng):
    layer = Affine(12, 3)
    layer.initialize(rng)
    x = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    ref = layer.forward(x)
    layer.layout = "NHWC"
    np.testing.assert_array_equal(layer.forward(np.ascontiguousarray(x.transpose(0, 2, 3, 1))), ref)
    dx = layer.backward(np.ones((2, 3), np.float32))
    assert dx.shape == (2, 2, 2, 3)


@pytest.mark.parametrize("shape", [(6, 5), (4, 3, 5, 7), (5, 4, 6, 3)])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("relu", [False, True])
def test_batchnorm_fast_kernel_matches_the_readable_layer(rng, monkeypatch, shape, train, relu):
    # The readable NCHW path (then a ReLU layer) against the channels-last kernel (ReLU fused);
    # the last shape goes through the threaded path (5 images on 2 threads: 3 + 2).
    if shape[0] == 5:
        monkeypatch.setattr(fast_kernels, "_BN_THREADED_MIN", 1)
        monkeypatch.setattr(fast_kernels, "chunk_bounds", lambda n: split_bounds(n, 2))
    channels = shape[1]
    x = rng.standard_normal(shape) * 2 + 1
    dout = rng.standard_normal(shape)
    layers = {}
    for layout in ("NCHW", "NHWC"):
        layer = f64(BatchNormalization(channels, momentum=0.8), rng)
        layer.params["gamma"][...] = np.linspace(0.5, 2, channels)
        layer.params["beta"][...] = np.linspace(-1, 1, channels)
        layer.buffers["running_mean"][...] = 0.3
        layer.buffers["running_var"][...] = 1.7
        layer.layout = layout
        layers[layout] = layer
    to_last = (lambda a: a) if len(shape) == 2 else (lambda a: a.transpose(0, 2, 3, 1).copy())
    to_first = (lambda a: a) if len(shape) == 2 else (lambda a: a.transpose(0, 3, 1, 2))
    ref, fast = layers["NCHW"], layers["NHWC"]
    relu_layer = ReLU()
    y_ref = ref.forward(x, train=train)
    if relu:
        y_ref = relu_layer.forward(y_ref)
    fast.fused_relu = relu
    y_fast = to_first(fast.forward(to_last(x), train=train))
    np.testing.assert_allclose(y_fast, y_ref, rtol=1e-12, atol=1e-12)
    dx_ref = ref.backward(relu_layer.backward(dout) if relu else dout)
    dx_fast = to_first(fast.backward(to_last(dout)))
    np.testing.assert_allclose(dx_fast, dx_ref, rtol=1e-10, atol=1e-12)
    for store in ("grads", "buffers"):
        for key, want in getattr(ref, store).items():
            np.testing.assert_allclose(getattr(fast, store)[key], want, rtol=1e-12, err_msg=key)


def test_batchnorm_fast_kernel_gradients(rng):
    layer = f64(BatchNormalization(3), rng)
    layer.layout = "NHWC"
    result = check_layer(layer, rng.standard_normal((4, 3, 2, 3)) * 2 + 1, rng, train=True)
    assert result["max_relative_error"] < 1e-6, result
