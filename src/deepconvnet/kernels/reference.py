"""The book's im2col/col2im convolution and max-pooling, NCHW, vectorised over images and pixels.

This is the ground truth the fast (NHWC) kernels are tested against, so it stays as close to
*Deep Learning from Scratch* (``common/util.py`` and ``common/layers.py``) as possible: the only
Python loop is the book's loop over filter offsets.

Contract shared with :mod:`deepconvnet.kernels.fast` (``x`` is NCHW here)::

    conv2d_forward(x, W, b, stride, pad, relu=False) -> (y, cache)   W: (out, in, kh, kw), b: (out,)
    conv2d_backward(dy, cache, input_grad=True) -> (dx or None, dW, db)
    maxpool_forward(x, pool_h, pool_w, stride, pad) -> (y, cache)
    maxpool_backward(dy, cache) -> dx

``stride`` and ``pad`` are ints (the same on both axes). Output size is
``(H + 2*pad - kh) // stride + 1``. Convolution pads with zeros; max-pooling pads with ``-inf``
(as PyTorch does) so a padded cell never wins a window. Max-pooling sends each window's gradient
to its FIRST maximum in row-major window order (``argmax``): MNIST has exact ties. Every output
keeps the input's dtype; ``cache`` is opaque to callers. ``relu=True`` is a ReLU layer fused into
the convolution (``y = max(0, conv)``; ``dy`` then flows back through ``y > 0``), and
``input_grad=False`` skips dx (the first layer's input gradient is never used in training).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "col2im",
    "conv2d_backward",
    "conv2d_forward",
    "im2col",
    "maxpool_backward",
    "maxpool_forward",
    "output_size",
]


def output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Length of one spatial output axis; raises ValueError when the window does not fit.

    The arguments are checked before the division, so a stride of 0 from a hand-edited spec is a
    ValueError naming it rather than a ZeroDivisionError.
    """
    if kernel < 1 or stride < 1 or pad < 0:
        raise ValueError(
            f"need kernel >= 1, stride >= 1 and pad >= 0, got {kernel}, {stride}, {pad}"
        )
    out = (size + 2 * pad - kernel) // stride + 1
    if out < 1:
        raise ValueError(
            f"window {kernel} with stride {stride}, pad {pad} does not fit an input of size {size}"
        )
    return out


def im2col(
    x: np.ndarray, kh: int, kw: int, stride: int, pad: int, pad_value: float = 0.0
) -> np.ndarray:
    """Unfold (N, C, H, W) into rows (N*OH*OW, C*kh*kw), one row per output pixel (the book's)."""
    n, c, h, w = x.shape
    oh, ow = output_size(h, kh, stride, pad), output_size(w, kw, stride, pad)
    img = x
    if pad:
        img = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)], constant_values=pad_value)
    col = np.empty((n, oh, ow, c, kh, kw), dtype=x.dtype)
    for i in range(kh):
        i_max = i + stride * oh
        for j in range(kw):
            j_max = j + stride * ow
            col[:, :, :, :, i, j] = img[:, :, i:i_max:stride, j:j_max:stride].transpose(0, 2, 3, 1)
    return col.reshape(n * oh * ow, c * kh * kw)


def col2im(
    col: np.ndarray, x_shape: tuple[int, ...], kh: int, kw: int, stride: int, pad: int
) -> np.ndarray:
    """Fold rows back into (N, C, H, W), summing overlapping windows: the adjoint of im2col."""
    n, c, h, w = x_shape
    oh, ow = output_size(h, kh, stride, pad), output_size(w, kw, stride, pad)
    col = col.reshape(n, oh, ow, c, kh, kw).transpose(0, 3, 4, 5, 1, 2)
    img = np.zeros((n, c, h + 2 * pad + stride - 1, w + 2 * pad + stride - 1), dtype=col.dtype)
    for i in range(kh):
        i_max = i + stride * oh
        for j in range(kw):
            j_max = j + stride * ow
            img[:, :, i:i_max:stride, j:j_max:stride] += col[:, :, i, j, :, :]
    return np.ascontiguousarray(img[:, :, pad : h + pad, pad : w + pad])


def conv2d_forward(
    x: np.ndarray, W: np.ndarray, b: np.ndarray, stride: int, pad: int, relu: bool = False
) -> tuple[np.ndarray, tuple]:
    """Cross-correlate (N, C, H, W) with W (F, C, kh, kw), add b (F,): returns (N, F, OH, OW)."""
    n, c, h, w = x.shape
    f, c_w, kh, kw = W.shape
    if c != c_w:
        raise ValueError(f"input has {c} channels but the filters expect {c_w}")
    oh, ow = output_size(h, kh, stride, pad), output_size(w, kw, stride, pad)
    col = im2col(x, kh, kw, stride, pad)
    col_W = W.reshape(f, -1)
    y = col @ col_W.T
    y += b
    y = np.ascontiguousarray(y.reshape(n, oh, ow, f).transpose(0, 3, 1, 2))
    if relu:
        y = np.maximum(y, 0)
    return y, (x.shape, col, W, stride, pad, y if relu else None)


def conv2d_backward(
    dy: np.ndarray, cache: tuple, input_grad: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of :func:`conv2d_forward` w.r.t. x, W and b, given dL/dy (N, F, OH, OW)."""
    x_shape, col, W, stride, pad, relu_out = cache
    f, _, kh, kw = W.shape
    if relu_out is not None:
        dy = dy * (relu_out > 0)
    dy_rows = dy.transpose(0, 2, 3, 1).reshape(-1, f)
    db = dy_rows.sum(axis=0)
    dW = (dy_rows.T @ col).reshape(W.shape)
    if not input_grad:
        return None, dW, db
    dcol = dy_rows @ W.reshape(f, -1)
    dx = col2im(dcol, x_shape, kh, kw, stride, pad)
    return dx, dW, db


def maxpool_forward(
    x: np.ndarray, pool_h: int, pool_w: int, stride: int, pad: int
) -> tuple[np.ndarray, tuple]:
    """Max over each (pool_h, pool_w) window: (N, C, H, W) -> (N, C, OH, OW)."""
    n, c, h, w = x.shape
    oh, ow = output_size(h, pool_h, stride, pad), output_size(w, pool_w, stride, pad)
    col = im2col(x, pool_h, pool_w, stride, pad, pad_value=-np.inf).reshape(-1, pool_h * pool_w)
    arg_max = np.argmax(col, axis=1)
    y = np.take_along_axis(col, arg_max[:, None], axis=1).reshape(n, oh, ow, c)
    y = np.ascontiguousarray(y.transpose(0, 3, 1, 2))
    return y, (x.shape, arg_max, pool_h, pool_w, stride, pad)


def maxpool_backward(dy: np.ndarray, cache: tuple) -> np.ndarray:
    """Route each output gradient to the first maximum of its window; zero elsewhere."""
    x_shape, arg_max, pool_h, pool_w, stride, pad = cache
    dy_flat = dy.transpose(0, 2, 3, 1).reshape(-1)
    dmax = np.zeros((dy_flat.size, pool_h * pool_w), dtype=dy.dtype)
    dmax[np.arange(dy_flat.size), arg_max] = dy_flat
    dcol = dmax.reshape(dy_flat.size // x_shape[1], -1)
    return col2im(dcol, x_shape, pool_h, pool_w, stride, pad)
