"""BatchLoader: seeded order, exact resume, full coverage, background errors, clean shutdown."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from deepconvnet.data.loader import BatchLoader
from deepconvnet.streams import AUGMENT, ORDER, stream


def dataset(n: int = 23):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n)


def noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return x + rng.random(x.shape, dtype=np.float32)


def collect(loader, epoch, start=0):
    return list(loader.epoch(epoch, start))


def loader_threads():
    return [t for t in threading.enumerate() if t.name.startswith("BatchLoader")]


def test_len_and_batch_sizes():
    images, labels = dataset(23)
    assert len(BatchLoader(images, labels, 5, seed=0)) == 5
    assert len(BatchLoader(images, labels, 5, seed=0, drop_last=True)) == 4
    sizes = [len(t) for _, t in collect(BatchLoader(images, labels, 5, seed=0), 0)]
    assert sizes == [5, 5, 5, 5, 3]
    sizes = [len(t) for _, t in collect(BatchLoader(images, labels, 5, seed=0, drop_last=True), 0)]
    assert sizes == [5, 5, 5, 5]


def test_batches_are_exact_floats_and_int64_labels_in_seeded_order():
    images, labels = dataset()
    loader = BatchLoader(images, labels, 4, seed=11)
    order = stream(11, ORDER, 3).permutation(len(labels))
    batches = collect(loader, 3)
    t_all = np.concatenate([t for _, t in batches])
    np.testing.assert_array_equal(t_all, order)
    x, t = batches[1]
    assert x.dtype == np.float32 and x.shape == (4, 1, 28, 28) and t.dtype == np.int64
    np.testing.assert_array_equal(x[:, 0], images[order[4:8]].astype(np.float32) / np.float32(255))


def test_every_sample_once_per_epoch_and_epochs_differ():
    images, labels = dataset(50)
    loader = BatchLoader(images, labels, 8, seed=1)
    epochs = [np.concatenate([t for _, t in collect(loader, e)]) for e in range(3)]
    for order in epochs:
        assert sorted(order.tolist()) == list(range(50))
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])


def test_replacement_sampling_draws_n_indices_with_repeats_like_the_books_trainer():
    images, labels = dataset(200)
    loader = BatchLoader(images, labels, 8, seed=1, sampling="replacement")
    epochs = [np.concatenate([t for _, t in collect(loader, e)]) for e in range(2)]
    for drawn in epochs:
        assert len(drawn) == 200 and drawn.min() >= 0 and drawn.max() < 200
        # n draws from n: about 1 - 1/e = 63% distinct, never a permutation at this size.
        assert 0.5 < len(np.unique(drawn)) / 200 < 0.75
    assert not np.array_equal(epochs[0], epochs[1])
    np.testing.assert_array_equal(epochs[0], np.concatenate([t for _, t in collect(loader, 0)]))


def test_unknown_sampling_is_refused():
    images, labels = dataset(10)
    with pytest.raises(ValueError, match="sampling must be one of"):
        BatchLoader(images, labels, 3, seed=0, sampling="random")


def test_no_shuffle_keeps_order():
    images, labels = dataset(10)
    t = np.concatenate(
        [t for _, t in collect(BatchLoader(images, labels, 3, seed=0, sampling="sequential"), 4)]
    )
    np.testing.assert_array_equal(t, np.arange(10))


def test_same_seed_same_batches_other_seed_other_batches():
    images, labels = dataset()
    a = collect(BatchLoader(images, labels, 6, seed=5, augment=noise), 2)
    b = collect(BatchLoader(images, labels, 6, seed=5, augment=noise), 2)
    c = collect(BatchLoader(images, labels, 6, seed=6, augment=noise), 2)
    for (xa, ta), (xb, tb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ta, tb)
    assert not np.array_equal(a[0][1], c[0][1])


@pytest.mark.parametrize("start", [1, 3, 4])
def test_resume_at_start_batch_is_identical(start):
    images, labels = dataset()
    loader = BatchLoader(images, labels, 6, seed=9, augment=noise)
    full = collect(loader, 7)
    resumed = collect(BatchLoader(images, labels, 6, seed=9, augment=noise), 7, start)
    assert len(resumed) == len(full) - start
    for (xf, tf), (xr, tr) in zip(full[start:], resumed, strict=True):
        np.testing.assert_array_equal(xf, xr)
        np.testing.assert_array_equal(tf, tr)
    assert collect(loader, 7, len(loader)) == []


def test_augment_gets_the_per_batch_generator():
    images, labels = dataset(12)
    draws = []

    def record(x, rng):
        draws.append(rng.integers(1 << 62))
        return x

    collect(BatchLoader(images, labels, 4, seed=3, augment=record, prefetch=0), 5)
    assert draws == [stream(3, AUGMENT, 5, i).integers(1 << 62) for i in range(3)]


def test_prefetch_zero_matches_background_thread():
    images, labels = dataset()
    a = collect(BatchLoader(images, labels, 5, seed=2, augment=noise, prefetch=0), 1)
    b = collect(BatchLoader(images, labels, 5, seed=2, augment=noise, prefetch=3), 1)
    for (xa, ta), (xb, tb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ta, tb)


def test_background_exception_reaches_the_consumer_after_good_batches():
    images, labels = dataset(20)
    calls = []

    def fail_on_third(x, rng):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("augment broke")
        return x

    got = []
    with pytest.raises(RuntimeError, match="augment broke"):
        for batch in BatchLoader(images, labels, 4, seed=0, augment=fail_on_third).epoch(0):
            got.append(batch)
    assert len(got) == 2
    assert loader_threads() == []


def test_closing_early_stops_the_thread():
    images, labels = dataset(200)
    produced = []

    def count(x, rng):
        produced.append(1)
        return x

    batches = BatchLoader(images, labels, 2, seed=0, augment=count, prefetch=2).epoch(0)
    next(batches)
    assert len(loader_threads()) == 1
    batches.close()
    assert loader_threads() == []
    assert len(produced) <= 1 + 2 + 1  # consumed + queue + one in hand: no run-ahead
    assert len(BatchLoader(images, labels, 2, seed=0)) == 100


def test_bad_arguments():
    images, labels = dataset(5)
    with pytest.raises(ValueError, match="5 images but 4 labels"):
        BatchLoader(images, labels[:4], 2, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(images, labels, 0, seed=0)
    with pytest.raises(ValueError, match="start_batch"):
        next(BatchLoader(images, labels, 2, seed=0).epoch(0, start_batch=4))
