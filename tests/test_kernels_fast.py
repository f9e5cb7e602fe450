"""The fast NHWC kernels agree with the reference (book) kernels, and threads change nothing.

float64 must agree to ~1e-12 relative (only summation order differs); float32 within a tolerance
scaled to the reduction length. Shapes sweep the network's own layers, the first layer's C = 1,
pad 0/1/2/3, odd and non-square sizes, non-square kernels and pooling windows, stride 2 (the
im2col fallback), batch 1 and batches that do not divide by the thread count.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from deepconvnet import threads
from deepconvnet.errors import DeepConvNetError
from deepconvnet.kernels import fast, reference


def to_nhwc(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def to_nchw(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def case_id(template: str):
    """Parametrize ids with a non-square kernel (kh, kw) written as khxkw."""
    return lambda case: template.format(*case).replace("(", "").replace(", ", "x").replace(")", "")


def case_seed(case: tuple) -> int:
    """A seed per case: the sum of its numbers, a kernel pair counted as its two sides."""
    return sum(sum(v) if isinstance(v, tuple) else v for v in case)


def rel_err(actual: np.ndarray, expected: np.ndarray) -> float:
    assert actual.shape == expected.shape
    scale = max(float(np.abs(expected).max()), 1e-30)
    return float(np.abs(actual.astype(np.float64) - expected).max()) / scale


@pytest.fixture(autouse=True)
def two_threads():
    """Run every test with 2 workers (the project's machine), restore the default afterwards."""
    threads.set_threads(2)
    yield
    threads.set_threads(None)


def conv_both(rng, n, c, h, w, f, k, stride, pad, dtype):
    """Forward + backward through both kernels: returns (fast results, reference results, path)."""
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    kh, kw = (k, k) if isinstance(k, int) else k
    W = rng.standard_normal((f, c, kh, kw)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    y_ref, cache_ref = reference.conv2d_forward(x, W, b, stride, pad)
    dy = rng.standard_normal(y_ref.shape).astype(dtype)
    ref = (y_ref, *reference.conv2d_backward(dy, cache_ref))
    y, cache = fast.conv2d_forward(to_nhwc(x), W, b, stride, pad)
    dx, dW, db = fast.conv2d_backward(to_nhwc(dy), cache)
    return (to_nchw(y), to_nchw(dx), dW, db), ref, cache[0]


# (n, c, h, w, f, k, stride, pad): the network's six convolutions, then the awkward cases.
CONV_CASES = [
    (5, 1, 28, 28, 16, 3, 1, 1),
    (5, 16, 28, 28, 16, 3, 1, 1),
    (3, 16, 14, 14, 32, 3, 1, 1),
    (3, 32, 14, 14, 32, 3, 1, 2),
    (3, 32, 8, 8, 64, 3, 1, 1),
    (3, 64, 8, 8, 64, 3, 1, 1),
    (1, 16, 9, 7, 8, 3, 1, 1),  # batch 1, odd, non-square
    (7, 12, 6, 5, 4, 3, 1, 0),  # pad 0
    (4, 8, 7, 9, 8, 5, 1, 2),  # 5x5
    (3, 24, 6, 5, 4, 3, 1, 3),  # pad > k - 1: fallback
    (3, 16, 9, 7, 8, 3, 2, 1),  # stride 2: fallback
    (2, 3, 11, 10, 5, 3, 2, 0),
    (3, 2, 5, 5, 3, 1, 1, 0),  # 1x1
    (2, 6, 8, 9, 4, (3, 5), 1, 1),  # non-square kernels: im2col
    (2, 6, 9, 7, 4, (5, 2), 1, 2),
    (2, 4, 9, 8, 3, (1, 3), 2, 1),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=case_id("n{}c{}h{}w{}f{}k{}s{}p{}"))
def test_conv_float64_matches_reference(case):
    rng = np.random.default_rng(case_seed(case))
    got, want, _ = conv_both(rng, *case, np.float64)
    for name, g, e in zip(("y", "dx", "dW", "db"), got, want, strict=True):
        assert g.dtype == np.float64
        assert rel_err(g, e) < 1e-12, name


def test_grid_and_fallback_paths_are_both_exercised():
    rng = np.random.default_rng(0)
    paths = {conv_both(rng, *case, np.float64)[2] for case in CONV_CASES[:2] + CONV_CASES[-6:]}
    assert paths == {"grid", "col"}


@pytest.mark.parametrize("case", CONV_CASES[:6], ids=lambda c: f"c{c[1]}f{c[4]}h{c[2]}p{c[7]}")
def test_conv_float32_close_to_reference(case):
    rng = np.random.default_rng(100 + sum(case))
    got, want, _ = conv_both(rng, *case, np.float32)
    for name, g, e in zip(("y", "dx", "dW", "db"), got, want, strict=True):
        assert g.dtype == np.float32
        assert rel_err(g, e.astype(np.float64)) < 2e-5, name


def pool_both(x, dy_rng, ph, pw, stride, pad):
    y_ref, cache_ref = reference.maxpool_forward(x, ph, pw, stride, pad)
    dy = dy_rng.standard_normal(y_ref.shape).astype(x.dtype)
    dx_ref = reference.maxpool_backward(dy, cache_ref)
    y, cache = fast.maxpool_forward(to_nhwc(x), ph, pw, stride, pad)
    dx = fast.maxpool_backward(to_nhwc(dy), cache)
    return to_nchw(y), to_nchw(dx), y_ref, dx_ref


# (n, c, h, w, pool, stride, pad): tiling 2x2, odd sizes (last row dropped), overlap, padding.
POOL_CASES = [
    (5, 16, 28, 28, 2, 2, 0),
    (3, 32, 16, 16, 2, 2, 0),
    (1, 64, 8, 8, 2, 2, 0),
    (3, 4, 7, 9, 2, 2, 0),
    (3, 4, 7, 7, 3, 2, 1),
    (2, 3, 8, 8, 2, 1, 0),
    (2, 3, 9, 8, 3, 3, 0),
    (3, 4, 8, 9, (2, 3), 2, 0),  # non-square windows
    (2, 3, 9, 7, (3, 1), 1, 1),
]


@pytest.mark.parametrize("case", POOL_CASES, ids=case_id("n{}c{}h{}w{}k{}s{}p{}"))
def test_pool_with_exact_ties_routes_to_first_maximum(case):
    n, c, h, w, k, stride, pad = case
    ph, pw = (k, k) if isinstance(k, int) else k
    rng = np.random.default_rng(case_seed(case))
    # Few distinct values (and ReLU-like zeros): most windows hold exact ties.
    x = np.maximum(rng.integers(-2, 3, (n, c, h, w)), 0).astype(np.float64)
    y, dx, y_ref, dx_ref = pool_both(x, rng, ph, pw, stride, pad)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, dx_ref)


def test_pool_tie_goes_to_the_first_element_of_the_window():
    x = np.zeros((1, 2, 2, 1), dtype=np.float32)  # NHWC, one all-tied window
    y, cache = fast.maxpool_forward(x, 2, 2, 2, 0)
    dx = fast.maxpool_backward(np.full_like(y, 3.0), cache)
    np.testing.assert_array_equal(dx[0, :, :, 0], [[3.0, 0.0], [0.0, 0.0]])


def test_pool_float32_random_matches_reference():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 16, 28, 28)).astype(np.float32)
    y, dx, y_ref, dx_ref = pool_both(x, rng, 2, 2, 2, 0)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, dx_ref)


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_threaded_results_are_bit_identical_run_to_run(n_threads):
    threads.set_threads(n_threads)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 28, 28, 16)).astype(np.float32)  # 7: not divisible by 2 or 3
    W = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)

    def run():
        y, cache = fast.conv2d_forward(x, W, b, 1, 1)
        p, pcache = fast.maxpool_forward(y, 2, 2, 2, 0)
        dy = fast.maxpool_backward(np.ones_like(p), pcache)
        return (y, p, *fast.conv2d_backward(dy, cache))

    first, second = run(), run()
    for a, b_ in zip(first, second, strict=True):
        assert a.tobytes() == b_.tobytes()


def test_thread_count_changes_only_the_summation_order():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 14, 14, 32))
    W = rng.standard_normal((32, 32, 3, 3))
    b = rng.standard_normal(32)
    results = []
    for n in (1, 2, 4):
        threads.set_threads(n)
        y, cache = fast.conv2d_forward(x, W, b, 1, 2)
        results.append((y, *fast.conv2d_backward(y, cache)))
    for other in results[1:]:
        for a, e in zip(other, results[0], strict=True):
            assert rel_err(a, e) < 1e-12


def test_the_callers_errstate_holds_in_every_chunk():
    """Chunks run on pool threads in the caller's context: np.errstate set around a kernel call
    (training silences overflow and checks the loss itself) must reach them all."""
    threads.set_threads(3)
    settings = threads.run_chunks(lambda a, z: np.geterr()["over"], threads.split_bounds(9, 3))
    assert settings == ["warn"] * 3
    with np.errstate(over="ignore"):
        settings = threads.run_chunks(lambda a, z: np.geterr()["over"], threads.split_bounds(9, 3))
    assert settings == ["ignore"] * 3


def test_split_bounds_cover_the_batch_in_order():
    assert threads.split_bounds(7, 2) == [(0, 4), (4, 7)]
    assert threads.split_bounds(1, 4) == [(0, 1)]
    assert threads.split_bounds(9, 3) == [(0, 3), (3, 6), (6, 9)]


def test_set_threads_limits_blas_and_rejects_nonsense():
    assert threads.set_threads(3) == 3
    assert threads.get_threads() == 3
    assert all(lib["num_threads"] == 1 for lib in threads.blas_info())
    with pytest.raises(DeepConvNetError):
        threads.set_threads(0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kh,kw,stride,pad", [(3, 3, 2, 1), (2, 3, 1, 0), (1, 4, 2, 2)])
def test_im2col_block_size_counts_the_real_bytes(dtype, kh, kw, stride, pad):
    x = np.zeros((2, 9, 7, 3), dtype)
    one_image = fast._im2col(x[:1], kh, kw, stride, pad)
    assert fast._col_image_bytes(x, kh, kw, stride, pad) == one_image.nbytes


def test_channel_mismatch_is_refused_before_any_chunk_runs():
    x = np.zeros((4, 5, 5, 3))
    with pytest.raises(ValueError, match="input has 3 channels but the filters expect 4"):
        fast.conv2d_forward(x, np.zeros((2, 4, 3, 3)), np.zeros(2), 1, 1)


@pytest.mark.parametrize("c", [1, 16], ids=["im2col", "grid"])
def test_kernel_errors_propagate_from_worker_threads(monkeypatch, rng, c):
    """An error inside the second chunk, run by a pool thread, reaches the caller intact."""
    ran = []
    name = "_col_forward_chunk" if c == 1 else "_grid_forward_chunk"
    real_chunk = getattr(fast, name)

    def failing_chunk(*args):
        a, z = args[-2:]
        ran.append((a, threading.current_thread().name))
        if a > 0:
            raise RuntimeError(f"chunk {a}:{z} failed")
        return real_chunk(*args)

    monkeypatch.setattr(fast, name, failing_chunk)
    x = rng.standard_normal((4, 6, 6, c))
    with pytest.raises(RuntimeError, match=r"^chunk 2:4 failed$"):
        fast.conv2d_forward(x, rng.standard_normal((3, c, 3, 3)), np.zeros(3), 1, 1)
    workers = {a: thread for a, thread in ran}
    assert workers[0] == threading.current_thread().name  # the caller ran chunk 0 to the end
    assert workers[2].startswith("dcn-kernel")  # the failing chunk ran on a pool thread


def model_gradients(
    backend: str, dtype, name: str = "deepconvnet"
) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
    models = pytest.importorskip("deepconvnet.models")
    model = models.build_model(name, rng=np.random.default_rng(1), dtype=dtype, dropout_ratio=0.0)
    model.set_backend(backend)
    data = np.random.default_rng(2)
    x = data.random((6, 1, 28, 28)).astype(dtype)
    t = data.integers(0, 10, 6)
    loss = model.loss(x, t, train=True)
    dx = model.backward()
    return dx, {k: v.copy() for k, v in model.grads().items()}, loss


@pytest.mark.parametrize("name", ["deepconvnet", "deepconvnet-bn"])
def test_whole_model_fast_matches_reference_float64(name):
    dx_f, grads_f, loss_f = model_gradients("fast", np.float64, name)
    dx_r, grads_r, loss_r = model_gradients("reference", np.float64, name)
    assert abs(loss_f - loss_r) < 1e-12 * abs(loss_r)
    assert rel_err(dx_f, dx_r) < 1e-10
    assert grads_f.keys() == grads_r.keys()
    for key in grads_r:
        if np.abs(grads_r[key]).max() < 1e-12:  # a bias just before BatchNorm: exactly 0 in theory
            assert np.abs(grads_f[key]).max() < 1e-12, key
            continue
        assert rel_err(grads_f[key], grads_r[key]) < 1e-10, key


def test_whole_model_fast_close_to_reference_float32():
    # A ReLU input within rounding of zero can flip sides between the two summation orders, so
    # compare with a tolerance rather than bit for bit.
    dx_f, grads_f, loss_f = model_gradients("fast", np.float32)
    dx_r, grads_r, loss_r = model_gradients("reference", np.float32)
    assert abs(loss_f - loss_r) < 1e-5 * abs(loss_r)
    assert rel_err(dx_f, dx_r) < 1e-3
    for key in grads_r:
        assert rel_err(grads_f[key], grads_r[key]) < 1e-3, key


def test_blocked_and_recomputed_paths_match_reference(monkeypatch):
    # Tiny blocks and no kept unfolded input: the path big inference batches take.
    monkeypatch.setattr(fast, "BLOCK_BYTES", 1)  # one image per block
    monkeypatch.setattr(fast, "KEEP_UNFOLDED_MAX", 3)
    rng = np.random.default_rng(5)
    for case in [(7, 16, 9, 7, 8, 3, 1, 1), (5, 1, 8, 8, 4, 3, 1, 1), (5, 8, 9, 7, 8, 3, 2, 1)]:
        got, want, _ = conv_both(rng, *case, np.float64)
        for name, g, e in zip(("y", "dx", "dW", "db"), got, want, strict=True):
            assert rel_err(g, e) < 1e-12, (case, name)


def test_empty_batch_gives_empty_outputs_and_zero_parameter_gradients():
    W, b = np.ones((4, 8, 3, 3)), np.ones(4)
    y, cache = fast.conv2d_forward(np.zeros((0, 6, 6, 8)), W, b, 1, 1)
    assert y.shape == (0, 6, 6, 4)
    dx, dW, db = fast.conv2d_backward(y, cache)
    assert dx.shape == (0, 6, 6, 8)
    assert not dW.any() and not db.any()


def relu_after_conv(kernels, x, W, b, stride, pad, dy):
    """Convolution then the book's ReLU layer (mask ``pre > 0``), forward and backward."""
    pre, cache = kernels.conv2d_forward(x, W, b, stride, pad)
    mask = pre > 0
    dx, dW, db = kernels.conv2d_backward(dy * mask, cache)
    return pre * mask, dx, dW, db


@pytest.mark.parametrize("kernels", [fast, reference], ids=["fast", "reference"])
@pytest.mark.parametrize(
    "case", [(4, 16, 9, 7, 8, 1, 1), (3, 1, 8, 8, 4, 1, 1), (3, 8, 9, 7, 8, 2, 1)]
)
def test_fused_relu_equals_convolution_then_relu(kernels, case):
    # Blank image rows and zero biases make many pre-activations exactly 0: the fused mask must
    # give them zero gradient, as the book's ReLU does (grid, C = 1 and stride-2 paths).
    n, c, h, w, f, stride, pad = case
    rng = np.random.default_rng(11)
    x = rng.standard_normal((n, c, h, w))
    x[:, :, : h // 2] = 0
    W, b = rng.standard_normal((f, c, 3, 3)), np.zeros(f)
    if kernels is fast:
        x = to_nhwc(x)
    y_shape = kernels.conv2d_forward(x, W, b, stride, pad)[0].shape
    dy = rng.standard_normal(y_shape)
    want = relu_after_conv(kernels, x, W, b, stride, pad, dy)
    assert (want[0] == 0).mean() > 0.5  # the blank rows and the negative half
    y, cache = kernels.conv2d_forward(x, W, b, stride, pad, relu=True)
    got = (y, *kernels.conv2d_backward(dy, cache))
    for name, g, e in zip(("y", "dx", "dW", "db"), got, want, strict=True):
        assert rel_err(g, e) < 1e-12, name


@pytest.mark.parametrize("kernels", [fast, reference], ids=["fast", "reference"])
def test_input_grad_false_skips_dx_and_keeps_the_parameter_gradients(kernels):
    rng = np.random.default_rng(12)
    for c, stride in [(16, 1), (1, 1), (8, 2)]:
        x = rng.standard_normal((3, 9, 7, c) if kernels is fast else (3, c, 9, 7))
        W, b = rng.standard_normal((8, c, 3, 3)), rng.standard_normal(8)
        y, cache = kernels.conv2d_forward(x, W, b, stride, 1)
        dy = rng.standard_normal(y.shape)
        _, dW, db = kernels.conv2d_backward(dy, cache)
        dx, dW_skip, db_skip = kernels.conv2d_backward(dy, cache, input_grad=False)
        assert dx is None
        np.testing.assert_array_equal(dW_skip, dW)
        np.testing.assert_array_equal(db_skip, db)


def test_integer_pixels_are_convolved_in_the_weights_float_type(rng):
    x = rng.integers(0, 256, (2, 5, 5, 1))  # raw uint8-like pixels, NHWC
    W, b = rng.standard_normal((3, 1, 3, 3)).astype(np.float32), np.zeros(3, np.float32)
    y, _ = fast.conv2d_forward(x, W, b, 1, 1)
    expected, _ = reference.conv2d_forward(to_nchw(x).astype(np.float32), W, b, 1, 1)
    assert y.dtype == np.float32
    np.testing.assert_allclose(to_nchw(y), expected, rtol=1e-5, atol=1e-3)


def test_cpu_info_reads_the_first_processor_of_cpuinfo(tmp_path):
    """The CPU is recorded with every run: float32 round-off, and so results, differ by CPU."""
    cpuinfo = tmp_path / "cpuinfo"
    first = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\n"
    second = "processor\t: 1\ncpu family\t: 25\nmodel name\t: Another CPU\n"
    cpuinfo.write_text(first + "model name\t: AMD EPYC 9005\n\n" + second)
    assert threads.cpu_info(str(cpuinfo)) == {
        "model": "AMD EPYC 9005",
        "family": "26",
        "model_number": "2",
        "cores": os.cpu_count(),
    }
    missing = threads.cpu_info(str(tmp_path / "absent"))
    assert missing["family"] is None and missing["model"] and missing["cores"] == os.cpu_count()
