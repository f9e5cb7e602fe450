"""Seeded mini-batches, prepared in a background thread.

The order of epoch ``e`` comes from its own stream, ``stream(seed, ORDER, e)``, and the augmentation
of batch ``i`` from ``stream(seed, AUGMENT, e, i)``: nothing carries over from one batch or epoch to
the next, so a run resumed at batch ``k`` sees exactly the batches an uninterrupted run would have
seen.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

import numpy as np

from deepconvnet.data.mnist import to_float
from deepconvnet.streams import AUGMENT, ORDER, stream

Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]
# How an epoch's indices are drawn: a permutation (every image once); n draws with replacement,
# as the book's Trainer does (``np.random.choice(train_size, batch_size)`` each step); in order.
SAMPLINGS = ("shuffle", "replacement", "sequential")
_POLL_S = 0.05  # how often a blocked producer checks whether the consumer has gone


class BatchLoader:
    """Batches ``(x float32 (B,1,H,W) in [0,1], t int64 (B,))`` of uint8 images and labels."""

    def __init__(
        self,
        images_uint8: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        *,
        seed: int,
        sampling: str = "shuffle",
        augment: Augment | None = None,
        drop_last: bool = False,
        prefetch: int = 2,
    ) -> None:
        if len(images_uint8) != len(labels):
            raise ValueError(f"{len(images_uint8)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {prefetch}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
        self.images = images_uint8
        self.labels = labels
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.sampling = sampling
        self.augment = augment
        self.drop_last = drop_last
        self.prefetch = int(prefetch)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The sample indices of ``epoch``, in the order they are served."""
        n = len(self.labels)
        if self.sampling == "sequential":
            return np.arange(n)
        rng = stream(self.seed, ORDER, epoch)
        if self.sampling == "replacement":
            return rng.integers(0, n, size=n)
        return rng.permutation(n)

    def batch(
        self, epoch: int, index: int, order: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``index`` of ``epoch`` (what :meth:`epoch` yields), computed in this thread."""
        if order is None:
            order = self.order(epoch)
        chosen = order[index * self.batch_size : (index + 1) * self.batch_size]
        x = to_float(self.images[chosen])
        if self.augment is not None:
            rng = stream(self.seed, AUGMENT, epoch, index)
            x = self.augment(x, rng)
        return x, self.labels[chosen].astype(np.int64)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield batches ``start_batch..`` of ``epoch``, prepared ahead in a background thread.

        An exception raised while preparing a batch is re-raised here; closing the generator
        early stops the thread.
        """
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch must be in [0, {len(self)}], got {start_batch}")
        order = self.order(epoch)
        indices = range(start_batch, len(self))
        if self.prefetch == 0:
            for i in indices:
                yield self.batch(epoch, i, order)
            return
        yield from self._prefetched(epoch, indices, order)

    def _prefetched(
        self, epoch: int, indices: range, order: np.ndarray
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        slots: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def offer(item: tuple) -> bool:
            while not stop.is_set():
                try:
                    slots.put(item, timeout=_POLL_S)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for i in indices:
                    if stop.is_set() or not offer(("batch", self.batch(epoch, i, order))):
                        return
                offer(("done", None))
            except BaseException as exc:  # handed to the consumer, re-raised there
                offer(("error", exc))

        worker = threading.Thread(target=produce, name=f"BatchLoader-epoch{epoch}", daemon=True)
        worker.start()
        try:
            while True:
                kind, item = slots.get()
                if kind == "done":
                    return
                if kind == "error":
                    raise item
                yield item
        finally:
            stop.set()
            worker.join()
