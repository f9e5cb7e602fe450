"""Channels-last (NHWC) convolution and max-pooling, threaded; the same maths as the reference.

Contract (see :mod:`deepconvnet.kernels.reference`; ``x`` is NHWC here, ``W`` is still
``(F, C, kh, kw)``)::

    conv2d_forward(x, W, b, stride, pad, relu=False) -> (y (N, OH, OW, F), cache)
    conv2d_backward(dy, cache, input_grad=True) -> (dx (N, H, W, C) or None, dW, db)
    maxpool_forward(x, pool_h, pool_w, stride, pad) -> (y, cache)
    maxpool_backward(dy, cache) -> dx

Why it is fast (measured on 2 cores, see bench/speed.py):

* **No im2col for stride-1 square convolutions.** The images of a chunk are laid out in one flat,
  zero-padded grid whose rows have pitch ``S = W + pad`` (each row starts with ``pad`` zeros that
  double as the previous row's right padding) and whose images are ``H + pad`` rows apart
  (neighbours share their padding rows). Output pixel ``q`` of the grid then reads tap ``(i, j)``
  at grid position ``q + i*S + j``: every tap is a contiguous slice. The ``kw`` horizontal taps are
  folded into the channel axis (``G3[r] = [G[r], G[r+1], G[r+2]]``), so a 3x3 convolution is three
  GEMMs with ``K = 3C`` on contiguous row slices, and grid positions that are not output pixels
  are computed and dropped (7-27 % extra work instead of a 9x im2col copy).
* **dx is a convolution too**: the transposed convolution of ``dy`` with the flipped, transposed
  filters and padding ``k - 1 - pad``, through the same grid code. That padded grid of ``dy`` has
  the forward grid's pitch, so one grid is both dW's operand and dx's input. The first layer
  skips dx altogether (``input_grad=False``): training never uses it.
* **ReLU fused into the convolution** (``relu=True``; see ``Sequential._fuse_relu``): the
  block just written is rectified while still in cache, and backward multiplies ``dy`` by the
  mask ``y > 0`` while copying it onto the grid, so the ReLU layer costs no pass of its own.
* **Batch split across threads** (:mod:`deepconvnet.threads`): each chunk of images runs on its own
  thread with one BLAS thread; weight and bias gradients are summed in chunk order, so results
  are bit-identical run to run for a given thread count.
* **Freed memory is kept** (:func:`_keep_freed_memory`): every call allocates grids of a few MB;
  glibc would hand them to ``mmap`` and page-fault them in again on every call, and page faults
  from two threads serialise on the kernel's memory lock (2 threads: 117 -> 59 ms for the six
  convolutions and three poolings of a training step).
* **Pooling by strided views**, no im2col: ``kh*kw`` running maxima; backward sends each window's
  gradient to its first position equal to the maximum, found again from ``x`` and ``y``
  (no argmax stored, nothing computed for inference).

Every other configuration goes through an NHWC im2col path that is general and exact: stride > 1,
non-square kernels, padding of the kernel's size or more (pad > k - 1), and thin inputs whose
``kw * C`` is below 24 (such as the first layer's C = 1); see :func:`_uses_grid`.
"""

from __future__ import annotations

import ctypes
import sys
from functools import partial

import numpy as np
from numpy.lib.stride_tricks import as_strided

from deepconvnet.kernels.reference import output_size
from deepconvnet.threads import chunk_bounds, run_chunks

__all__ = [
    "batchnorm_backward",
    "batchnorm_forward",
    "conv2d_backward",
    "conv2d_forward",
    "maxpool_backward",
    "maxpool_forward",
]

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def _keep_freed_memory() -> bool:
    """Ask glibc to reuse freed blocks up to 32 MB instead of unmapping them (Linux only).

    Process-wide and harmless elsewhere: it trades a little resident memory (freed blocks stay
    mapped) for not page-faulting every kernel's buffers in again. Returns whether it applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # glibc's maximum on 64-bit
        ok &= libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)
        ok &= libc.mallopt(_M_TOP_PAD, 16 << 20)
    except (OSError, AttributeError):
        return False
    return bool(ok)


MALLOC_TUNED = _keep_freed_memory()

# Bytes of unfolded input per block inside a thread's chunk (see _blocks).
BLOCK_BYTES = 3 << 19
# Batches up to this size keep each block's unfolded input from forward to backward.
KEEP_UNFOLDED_MAX = 256

# Below this K = kw*C a GEMM is too thin to pay for the grid; im2col's K = kh*kw*C is better.
_MIN_GRID_K = 24


def _uses_grid(c: int, kh: int, kw: int, stride: int, pad: int) -> bool:
    """Whether the shared-padding grid applies: stride 1, square kernel, pad < kernel."""
    return stride == 1 and kh == kw and pad <= kh - 1 and kw * c >= _MIN_GRID_K


# ---------------------------------------------------------------------------------------------
# Shared-padding grid convolution (stride 1)


def _grid(n: int, h: int, w: int, c: int, k: int, pad: int, dtype) -> tuple:
    """A zeroed flat grid for ``n`` images of (h, w, c), padded by ``pad`` for a k x k kernel.

    Returns ``(grid, body, s, t)``: ``body`` is the slice of ``grid`` whose row ``q`` is output
    position ``q`` (pitch ``s = w + pad``, images ``t = (h + pad) * s`` rows apart), so image pixel
    ``(r, col)`` is ``body[img * t + r * s + col]`` (see :func:`_images`).
    """
    s = w + pad
    t = (h + pad) * s
    origin = pad * s + pad
    grid = np.zeros((origin - pad + n * t + (k + pad) * s, c), dtype=dtype)
    return grid, grid[origin : origin + n * t], s, t


def _images(body: np.ndarray, n: int, h: int, w: int, s: int, t: int) -> np.ndarray:
    """The (n, h, w, c) view of a grid body where the images' pixels live."""
    return body.reshape(n, t // s, s, body.shape[1])[:, :h, :w, :]


def _fold(grid: np.ndarray, k: int, rows: int) -> np.ndarray:
    """The horizontally-folded grid ``G3`` (rows, k*C): ``G3[r] = [G[r], ..., G[r + k - 1]]``.

    Copied from an overlapping strided view of the flat grid ``G``: one pass with rows of ``k*C``
    contiguous values (three slice copies with rows of ``C`` values cost 3x more), and matmul
    could not use the overlapping view directly.
    """
    c, item = grid.shape[1], grid.itemsize
    folded = as_strided(grid, shape=(rows, k * c), strides=(c * item, item), writeable=False)
    return np.ascontiguousarray(folded)


def _grid_taps(x: np.ndarray, k: int, pad: int) -> tuple[np.ndarray, int, int]:
    """Lay ``x`` (n, H, W, C) out as the folded grid ``G3``; returns ``(G3, S, T)``."""
    n, h, w, c = x.shape
    grid, body, s, t = _grid(n, h, w, c, k, pad, x.dtype)
    _images(body, n, h, w, s, t)[...] = x
    return _fold(grid, k, n * t + (k - 1) * s), s, t


def _grid_gemms(g3: np.ndarray, wf: np.ndarray, m: int, s: int) -> np.ndarray:
    """Sum over the ``k`` vertical taps of ``G3[i*s : i*s + m] @ wf[i]``: (m, F) on the grid."""
    acc = g3[:m] @ wf[0]
    for i in range(1, wf.shape[0]):
        acc += g3[i * s : i * s + m] @ wf[i]
    return acc


def _grid_weight_grads(g3: np.ndarray, dyg: np.ndarray, k: int, m: int, s: int) -> np.ndarray:
    """dL/dWf (k, k*C, F) on the grid: row ``i`` is ``G3[i*s : i*s + m].T @ dy``, the vertical
    tap's shifted slice against ``dy`` laid out with the forward pass's pitch."""
    return np.stack([g3[i * s : i * s + m].T @ dyg for i in range(k)])


def _crop(
    acc: np.ndarray, n: int, s: int, t: int, out: np.ndarray, bias=None, relu: bool = False
) -> None:
    """Write the output pixels of grid result ``acc`` into ``out`` (n, OH, OW, F), + bias, ReLU."""
    valid = _images(acc, n, out.shape[1], out.shape[2], s, t)
    if bias is None:
        out[...] = valid
    else:
        np.add(valid, bias, out=out)  # bias in the same pass that drops the off-image positions
    if relu:
        np.maximum(out, 0, out=out)  # on the block just written, still in cache


def _blocks(a: int, z: int, image_bytes: int) -> list[tuple[int, int]]:
    """Split a chunk into blocks whose unfolded input stays within ``BLOCK_BYTES``.

    The GEMMs have K of 48-192 only, so they are memory-bound unless their operand is still in
    cache: blocks of ~1.5 MB measured 10 % faster than 50-image chunks, and they bound the
    scratch memory of big inference batches.
    """
    size = max(1, BLOCK_BYTES // max(1, image_bytes))
    return [(i, min(i + size, z)) for i in range(a, z, size)]


def _grid_image_bytes(h: int, w: int, c: int, k: int, pad: int, item: int) -> int:
    """Bytes of one image's folded grid ``G3``: ``(H + pad) * (W + pad)`` rows of ``k * C``."""
    return (h + pad) * (w + pad) * k * c * item


def _col_image_bytes(x: np.ndarray, kh: int, kw: int, stride: int, pad: int) -> int:
    """Bytes of one image's im2col rows: OH * OW rows of ``kh * kw * C`` values of x's dtype."""
    _, h, w, c = x.shape
    rows = output_size(h, kh, stride, pad) * output_size(w, kw, stride, pad)
    return rows * kh * kw * c * x.itemsize


def _grid_forward_chunk(x, wf, b, pad, relu, y, keep, a, z):
    """Forward of images ``a:z``; returns each block's grid (for dW) when ``keep``, else None."""
    kept = []
    _, h, w, c = x.shape
    k = wf.shape[0]
    for i, e in _blocks(a, z, _grid_image_bytes(h, w, c, k, pad, x.itemsize)):
        g3, s, t = _grid_taps(x[i:e], k, pad)
        _crop(_grid_gemms(g3, wf, (e - i) * t, s), e - i, s, t, y[i:e], b, relu)
        kept.append(g3 if keep else None)
    return kept


def _masked_dy(dy: np.ndarray, y: np.ndarray | None, out: np.ndarray) -> None:
    """``out = dy``, times the fused ReLU's mask ``y > 0`` when there is one.

    A multiply by the boolean mask: ``np.copyto(where=)`` and ``np.where`` measured 10x slower.
    """
    if y is None:
        out[...] = dy
    else:
        np.multiply(dy, y > 0, out=out)


def _grid_backward_chunk(dy, x, y, grids, wf_t, pad, dx, a, z):
    """Backward of images ``a:z``: returns this chunk's (dWf, db) partial sums, fills ``dx``.

    ``dy`` goes onto a zeroed grid with the forward pass's pitch; that grid is both the operand of
    dW (row ``q`` = output position ``q``) and, being ``dy`` padded by ``k - 1 - pad``, the input
    of the transposed convolution that gives ``dx``: one grid serves both. ``y`` is the fused
    ReLU's output (None when not fused); ``dx`` None skips the input gradient.
    """
    _, h, w, _ = x.shape
    k = wf_t.shape[0]
    _, oh, ow, f = dy.shape
    dwf = db = None
    blocks = _blocks(a, z, _grid_image_bytes(h, w, x.shape[3], k, pad, x.itemsize))
    for (i, e), g3 in zip(blocks, grids[a], strict=True):
        if g3 is None:
            g3 = _grid_taps(x[i:e], k, pad)[0]
        n = e - i
        grid, dyg, s, t = _grid(n, oh, ow, f, k, k - 1 - pad, dy.dtype)
        _masked_dy(dy[i:e], None if y is None else y[i:e], _images(dyg, n, oh, ow, s, t))
        m = n * t
        dwf_b = _grid_weight_grads(g3, dyg, k, m, s)
        db_b = np.ones(m, dtype=dy.dtype) @ dyg
        dwf = dwf_b if dwf is None else dwf + dwf_b
        db = db_b if db is None else db + db_b
        del g3
        if dx is not None:
            g3d = _fold(grid, k, m + (k - 1) * s)
            _crop(_grid_gemms(g3d, wf_t, m, s), n, s, t, dx[i:e])
    return dwf, db


# ---------------------------------------------------------------------------------------------
# General NHWC im2col convolution (any stride and padding; used for thin inputs such as C = 1)


def _im2col(x: np.ndarray, kh: int, kw: int, stride: int, pad: int) -> np.ndarray:
    """Unfold (n, H, W, C) into (n*OH*OW, kh*kw*C) rows ordered (i, j, c)."""
    n, h, w, c = x.shape
    oh, ow = output_size(h, kh, stride, pad), output_size(w, kw, stride, pad)
    xp = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)]) if pad else x
    cols = np.empty((n, oh, ow, kh, kw, c), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j, :] = xp[
                :, i : i + stride * (oh - 1) + 1 : stride, j : j + stride * (ow - 1) + 1 : stride
            ]
    return cols.reshape(n * oh * ow, kh * kw * c)


def _col_forward_chunk(x, wm, b, kh, kw, stride, pad, relu, y, keep, a, z):
    kept = []
    for i, e in _blocks(a, z, _col_image_bytes(x, kh, kw, stride, pad)):
        cols = _im2col(x[i:e], kh, kw, stride, pad)
        np.matmul(cols, wm, out=y[i:e].reshape(cols.shape[0], -1))
        y[i:e] += b
        if relu:
            np.maximum(y[i:e], 0, out=y[i:e])
        kept.append(cols if keep else None)
    return kept


def _col_backward_chunk(dy, x, y, colss, wm, kh, kw, stride, pad, dx, a, z):
    _, oh, ow, f = dy.shape
    _, h, w, c = x.shape
    dwm = db = None
    blocks = _blocks(a, z, _col_image_bytes(x, kh, kw, stride, pad))
    for (i, e), cols in zip(blocks, colss[a], strict=True):
        if cols is None:
            cols = _im2col(x[i:e], kh, kw, stride, pad)
        dy2 = dy[i:e] if y is None else dy[i:e] * (y[i:e] > 0)
        dy2 = dy2.reshape(-1, f)
        dwm_b = cols.T @ dy2
        db_b = np.ones(dy2.shape[0], dtype=dy.dtype) @ dy2
        dwm = dwm_b if dwm is None else dwm + dwm_b
        db = db_b if db is None else db + db_b
        del cols
        if dx is None:
            continue
        dcols = (dy2 @ wm.T).reshape(e - i, oh, ow, kh, kw, c)
        dxp = np.zeros((e - i, h + 2 * pad, w + 2 * pad, c), dtype=dy.dtype)
        for p in range(kh):
            for q in range(kw):
                dxp[
                    :,
                    p : p + stride * (oh - 1) + 1 : stride,
                    q : q + stride * (ow - 1) + 1 : stride,
                ] += dcols[:, :, :, p, q, :]
        dx[i:e] = dxp[:, pad : pad + h, pad : pad + w]
    return dwm, db


# ---------------------------------------------------------------------------------------------
# Public convolution


def conv2d_forward(
    x: np.ndarray, W: np.ndarray, b: np.ndarray, stride: int, pad: int, relu: bool = False
) -> tuple[np.ndarray, tuple]:
    """Cross-correlate NHWC ``x`` with ``W`` (F, C, kh, kw), add ``b``: returns (N, OH, OW, F).

    ``relu`` applies ``max(0, .)`` to each block while it is still in cache (a fused ReLU layer).
    """
    n, h, w, c = x.shape
    f, c_w, kh, kw = W.shape
    if c != c_w:
        raise ValueError(f"input has {c} channels but the filters expect {c_w}")
    oh, ow = output_size(h, kh, stride, pad), output_size(w, kw, stride, pad)
    if not np.issubdtype(x.dtype, np.floating):  # integer pixels: compute in W's float type
        x = x.astype(W.dtype if np.issubdtype(W.dtype, np.floating) else np.float64)
    W = W.astype(x.dtype, copy=False)
    b = b.astype(x.dtype, copy=False)
    y = np.empty((n, oh, ow, f), dtype=x.dtype)
    bounds = chunk_bounds(n)
    # Training batches keep their unfolded input for dW; big (inference) batches rebuild it.
    keep = n <= KEEP_UNFOLDED_MAX
    if _uses_grid(c, kh, kw, stride, pad):
        wf = np.ascontiguousarray(W.transpose(2, 3, 1, 0)).reshape(kh, kw * c, f)
        work = run_chunks(partial(_grid_forward_chunk, x, wf, b, pad, relu, y, keep), bounds)
        kind = "grid"
    else:
        wm = np.ascontiguousarray(W.transpose(2, 3, 1, 0)).reshape(kh * kw * c, f)
        fn = partial(_col_forward_chunk, x, wm, b, kh, kw, stride, pad, relu, y, keep)
        work = run_chunks(fn, bounds)
        kind = "col"
    per_chunk = {a: kept for (a, _), kept in zip(bounds, work, strict=True)}
    return y, (kind, x, y if relu else None, W, stride, pad, bounds, per_chunk)


def conv2d_backward(
    dy: np.ndarray, cache: tuple, input_grad: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients w.r.t. x, W and b, given NHWC dL/dy (after the fused ReLU, if any).

    ``input_grad=False`` returns None for dx: the first layer's input gradient is never used in
    training, and it is a whole transposed convolution.
    """
    kind, x, y, W, stride, pad, bounds, per_chunk = cache
    f, c, kh, kw = W.shape
    dy = np.ascontiguousarray(dy, dtype=W.dtype)
    dx = np.empty(x.shape, dtype=W.dtype) if input_grad else None
    if kind == "grid":
        # dx = stride-1 convolution of dy with the flipped, transposed filters, pad k-1-pad.
        wf_t = W[:, :, ::-1, ::-1].transpose(2, 3, 0, 1)
        wf_t = np.ascontiguousarray(wf_t).reshape(kh, kw * f, c)
        fn = partial(_grid_backward_chunk, dy, x, y, per_chunk, wf_t, pad, dx)
    else:
        wm = np.ascontiguousarray(W.transpose(2, 3, 1, 0)).reshape(kh * kw * c, f)
        fn = partial(_col_backward_chunk, dy, x, y, per_chunk, wm, kh, kw, stride, pad, dx)
    parts = [part for part in run_chunks(fn, bounds) if part[0] is not None]  # empty batch: none
    dwf = np.zeros((kh, kw * c, f) if kind == "grid" else (kh * kw * c, f), dtype=W.dtype)
    db = np.zeros(f, dtype=W.dtype)
    for dwf_i, db_i in parts:  # fixed order: bit-identical for a given thread count
        dwf += dwf_i
        db += db_i
    dW = np.ascontiguousarray(dwf.reshape(kh, kw, c, f).transpose(3, 2, 0, 1))
    return dx, dW, db


# ---------------------------------------------------------------------------------------------
# Max-pooling by strided views


def _window_taps(xp: np.ndarray, ph: int, pw: int, stride: int, oh: int, ow: int):
    """Yield the strided view of every window position (i, j) in row-major order."""
    for i in range(ph):
        for j in range(pw):
            yield xp[
                :, i : i + stride * (oh - 1) + 1 : stride, j : j + stride * (ow - 1) + 1 : stride
            ]


def _pool_forward_chunk(xp, ph, pw, stride, y, a, z):
    out = y[a:z]
    taps = _window_taps(xp[a:z], ph, pw, stride, *out.shape[1:3])
    out[...] = next(taps)
    for view in taps:
        np.maximum(out, view, out=out)


def _pool_backward_chunk(dy, xp, y, ph, pw, stride, pad, tiles, dx, a, z):
    """Route each window's gradient to its first maximum (earlier taps win ties).

    ``found`` marks windows whose maximum an earlier tap already took; only the ``x == y`` test
    and the write touch strided memory, the mask arithmetic is on small contiguous arrays.
    """
    oh, ow = dy.shape[1:3]
    yc, dyc = y[a:z], dy[a:z]
    if pad == 0:
        dxp = dx[a:z]  # write in place: no padding to crop
        if not tiles:
            dxp[...] = 0
    else:
        dxp = np.zeros(xp[a:z].shape, dy.dtype)
    last = ph * pw - 1
    x_taps = _window_taps(xp[a:z], ph, pw, stride, oh, ow)
    dx_taps = _window_taps(dxp, ph, pw, stride, oh, ow)
    found = np.zeros(yc.shape, dtype=bool)
    for k, (xv, dv) in enumerate(zip(x_taps, dx_taps, strict=True)):
        if k == last:
            wins = np.logical_not(found, out=found)
        else:
            hit = xv == yc
            wins = np.greater(hit, found)
            found |= hit
        if tiles:
            np.multiply(dyc, wins, out=dv)
        else:
            dv += dyc * wins
    if pad:
        h, w = dx.shape[1:3]
        dx[a:z] = dxp[:, pad : pad + h, pad : pad + w]


def maxpool_forward(
    x: np.ndarray, pool_h: int, pool_w: int, stride: int, pad: int
) -> tuple[np.ndarray, tuple]:
    """Max over each (pool_h, pool_w) window of NHWC ``x``; padding is ``-inf``."""
    n, h, w, c = x.shape
    oh, ow = output_size(h, pool_h, stride, pad), output_size(w, pool_w, stride, pad)
    xp = x
    if pad:
        xp = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)], constant_values=-np.inf)
    y = np.empty((n, oh, ow, c), dtype=x.dtype)
    # Memory-bound: measured slower when split over threads, so it runs on the calling thread.
    _pool_forward_chunk(xp, pool_h, pool_w, stride, y, 0, n)
    return y, (xp, y, pool_h, pool_w, stride, pad, x.shape)


def maxpool_backward(dy: np.ndarray, cache: tuple) -> np.ndarray:
    """Gradient of :func:`maxpool_forward`: each window's to its first maximum, zero elsewhere."""
    xp, y, ph, pw, stride, pad, x_shape = cache
    dy = np.ascontiguousarray(dy, dtype=y.dtype)
    # Windows that tile the input exactly write every cell once: no zeroing, no accumulation.
    tiles = (
        pad == 0
        and ph == pw == stride
        and x_shape[1] == stride * dy.shape[1]
        and x_shape[2] == stride * dy.shape[2]
    )
    dx = np.empty(x_shape, dtype=y.dtype)
    # Unlike the forward pass, this is several ufunc passes per tap: threads measured 5 % faster.
    fn = partial(_pool_backward_chunk, dy, xp, y, ph, pw, stride, pad, tiles, dx)
    run_chunks(fn, chunk_bounds(len(dx)))
    return dx


# ---------------------------------------------------------------------------------------------
# Batch normalisation over the last (channel) axis


# Below this many values, BatchNorm's passes run on one thread: measured slower split in two.
_BN_THREADED_MIN = 1 << 19


def _row_chunks(x: np.ndarray) -> list[tuple[int, int]]:
    """The thread chunks of a channels-last batch, as row ranges of its (rows, C) view."""
    per_image = x.size // max(1, x.shape[0] * x.shape[-1])
    if x.size < _BN_THREADED_MIN:
        return [(0, x.shape[0] * per_image)]
    return [(a * per_image, z * per_image) for a, z in chunk_bounds(x.shape[0])]


def _channel_sum(fn, bounds: list[tuple[int, int]]) -> np.ndarray:
    """Sum over the chunks of ``fn(a, z)`` (per-channel partial sums), in chunk order."""
    parts = run_chunks(fn, bounds)
    total = parts[0].copy()
    for part in parts[1:]:
        total += part
    return total


def _ones_at(rows: np.ndarray) -> np.ndarray:
    return np.ones(len(rows), dtype=rows.dtype)


def batchnorm_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    mean: np.ndarray | None,
    var: np.ndarray | None,
    eps: float,
    relu: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
    """Normalise each channel of channels-last ``x``; returns ``(y, batch_mean, batch_var, cache)``.

    ``mean`` / ``var`` None (training) uses the batch's statistics, else those given (eval).
    The same maths as ``BatchNormalization``'s readable path, in fewer passes and on the kernel
    threads: channel sums are ``ones @ x`` per chunk (a GEMV, ~10x faster than ``mean`` over the
    leading axes), the centred input is normalised in place, and ``relu`` rectifies the output
    in place (a fused ReLU layer). Passes over 5 MB activations are memory-bound per core, so
    each thread takes its own rows.
    """
    x2 = x.reshape(-1, x.shape[-1])
    dt = x.dtype.type
    bounds = _row_chunks(x)
    xn = np.empty_like(x2)
    y = np.empty_like(x2)
    if mean is None:
        mean = _channel_sum(lambda a, z: _ones_at(x2[a:z]) @ x2[a:z], bounds) / dt(len(x2))

        def centre(a: int, z: int) -> np.ndarray:
            np.subtract(x2[a:z], mean, out=xn[a:z])
            np.square(xn[a:z], out=y[a:z])  # y as scratch
            return _ones_at(y[a:z]) @ y[a:z]

        var = _channel_sum(centre, bounds) / dt(len(x2))
    else:
        mean = mean.astype(x.dtype, copy=False)
        run_chunks(lambda a, z: np.subtract(x2[a:z], mean, out=xn[a:z]), bounds)
    inv_std = (1.0 / np.sqrt(var + eps)).astype(x.dtype)

    def normalise(a: int, z: int) -> None:
        xn[a:z] *= inv_std
        np.multiply(xn[a:z], gamma, out=y[a:z])
        y[a:z] += beta
        if relu:
            np.maximum(y[a:z], 0, out=y[a:z])

    run_chunks(normalise, bounds)
    y = y.reshape(x.shape)
    return y, mean, var, (xn, inv_std, gamma, y if relu else None, bounds)


def batchnorm_backward(
    dy: np.ndarray, cache: tuple, train: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients ``(dx, dgamma, dbeta)`` of :func:`batchnorm_forward` given dL/dy.

    With batch statistics, ``dx = k * (dy - mean(dy) - xn * mean(dy * xn))`` where
    ``k = gamma * inv_std``.
    """
    xn, inv_std, gamma, relu_out, bounds = cache
    dy2 = np.ascontiguousarray(dy, dtype=xn.dtype).reshape(xn.shape)
    masked = np.empty_like(dy2) if relu_out is not None else dy2
    work = np.empty_like(dy2)
    relu2 = None if relu_out is None else relu_out.reshape(xn.shape)

    def sums(a: int, z: int) -> np.ndarray:
        if relu2 is not None:
            np.multiply(dy2[a:z], relu2[a:z] > 0, out=masked[a:z])
        np.multiply(masked[a:z], xn[a:z], out=work[a:z])
        ones = _ones_at(work[a:z])
        return np.stack([ones @ masked[a:z], ones @ work[a:z]])

    dbeta, dgamma = _channel_sum(sums, bounds)
    k = (gamma * inv_std).astype(dy2.dtype)
    count = dy2.dtype.type(len(dy2))
    a_coef, b_coef = -k * dgamma / count, -k * dbeta / count
    dx = np.empty_like(dy2)

    def input_grad(a: int, z: int) -> None:
        np.multiply(masked[a:z], k, out=dx[a:z])
        if train:
            np.multiply(xn[a:z], a_coef, out=work[a:z])
            dx[a:z] += work[a:z]
            dx[a:z] += b_coef

    run_chunks(input_grad, bounds)
    return dx.reshape(dy.shape), dgamma, dbeta
