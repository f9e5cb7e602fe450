import numpy as np
import pytest

from deepconvnet.kernels import reference as R


def naive_conv(x, W, b, stride, pad):
    xp = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)])
    n, _, h, w = xp.shape
    f, _, kh, kw = W.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    y = np.zeros((n, f, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * stride : i * stride + kh, j * stride : j * stride + kw]
            y[:, :, i, j] = np.einsum("nchw,fchw->nf", patch, W) + b
    return y


@pytest.mark.parametrize(
    "shape,k,stride,pad",
    [((2, 3, 7, 6), (3, 2), 1, 0), ((1, 2, 8, 8), (3, 3), 2, 1), ((2, 1, 5, 7), (1, 4), 1, 2)],
)
def test_conv_forward_equals_direct_convolution(rng, shape, k, stride, pad):
    x = rng.standard_normal(shape)
    W = rng.standard_normal((4, shape[1], *k))
    b = rng.standard_normal(4)
    y, _ = R.conv2d_forward(x, W, b, stride, pad)
    np.testing.assert_allclose(y, naive_conv(x, W, b, stride, pad), rtol=1e-12, atol=1e-12)


def test_col2im_is_adjoint_of_im2col(rng):
    x = rng.standard_normal((2, 3, 6, 5))
    col = R.im2col(x, 3, 2, 2, 1)
    c = rng.standard_normal(col.shape)
    lhs = np.sum(col * c)
    rhs = np.sum(x * R.col2im(c, x.shape, 3, 2, 2, 1))
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_maxpool_tied_maxima_send_gradient_to_first_only():
    x = np.zeros((1, 1, 2, 4))
    x[0, 0, :, 2:] = 1.0  # second window: all four tied at 1
    y, cache = R.maxpool_forward(x, 2, 2, 2, 0)
    assert y.tolist() == [[[[0.0, 1.0]]]]
    dx = R.maxpool_backward(np.array([[[[3.0, 5.0]]]]), cache)
    expected = np.zeros_like(x)
    expected[0, 0, 0, 0] = 3.0  # first (row-major) of the all-zero window
    expected[0, 0, 0, 2] = 5.0
    assert np.array_equal(dx, expected)


def test_kernels_keep_float32():
    x = np.ones((1, 1, 4, 4), np.float32)
    y, cache = R.conv2d_forward(x, np.ones((2, 1, 3, 3), np.float32), np.zeros(2, np.float32), 1, 1)
    dx, dW, db = R.conv2d_backward(np.ones_like(y), cache)
    assert {a.dtype for a in (y, dx, dW, db)} == {np.dtype(np.float32)}


def test_output_size_formula_and_bad_geometry():
    assert R.output_size(28, 3, 1, 1) == 28
    assert R.output_size(28, 2, 2, 0) == 14
    assert R.output_size(7, 3, 2, 0) == 3
    # Checked before dividing: a stride of 0 is a ValueError, not a ZeroDivisionError.
    with pytest.raises(ValueError, match="stride >= 1"):
        R.output_size(28, 3, 0, 1)
    with pytest.raises(ValueError, match="kernel >= 1"):
        R.output_size(28, 0, 1, 0)
    with pytest.raises(ValueError, match="pad >= 0"):
        R.output_size(28, 3, 1, -1)
    with pytest.raises(ValueError, match="does not fit an input of size 2"):
        R.output_size(2, 5, 1, 0)
