"""The thread budget: how many worker threads the fast kernels use, and how many BLAS threads.

The fast kernels split each batch into ``n`` contiguous chunks and run them on ``n`` threads (NumPy
releases the GIL inside matmul and ufuncs). Each of those threads calls BLAS, so BLAS itself is
limited to one thread: ``n`` workers x 1 BLAS thread never oversubscribe ``n`` cores, and two BLAS
threads inside one Python thread measured only 1.15x where two Python threads gave 1.7x.

Results are bit-identical run to run for a given thread count: the split of a batch depends only on
its size and ``n``, and per-chunk partial sums are reduced in chunk order.
"""

from __future__ import annotations

import contextvars
import os
import platform
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from threadpoolctl import threadpool_info, threadpool_limits

from deepconvnet.errors import DeepConvNetError

T = TypeVar("T")

_lock = threading.Lock()
_threads: int | None = None
_executor: ThreadPoolExecutor | None = None
_blas_limiter: Any = None


def set_threads(n: int | None) -> int:
    """Use ``n`` worker threads for the fast kernels (None = all cores) and 1 BLAS thread each.

    Returns the thread count now in force. The BLAS limit is process-wide, so the reference kernels'
    BLAS calls run on one thread too.
    """
    global _threads, _executor, _blas_limiter
    if n is None:
        n = os.cpu_count() or 1
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DeepConvNetError(f"threads must be a positive integer, got {n!r}")
    with _lock:
        if _executor is not None:
            _executor.shutdown(wait=True)
        # n - 1 helpers: the calling thread always runs the first chunk itself.
        _executor = ThreadPoolExecutor(n - 1, thread_name_prefix="dcn-kernel") if n > 1 else None
        _blas_limiter = threadpool_limits(limits=1, user_api="blas")
        _threads = n
    return n


def get_threads() -> int:
    """The worker count in force; applies the default budget (all cores) on first use."""
    if _threads is None:
        set_threads(None)
    assert _threads is not None
    return _threads


CPUINFO = "/proc/cpuinfo"


def cpu_info(cpuinfo: str = CPUINFO) -> dict[str, Any]:
    """The CPU a run computed on: its model name, vendor family and model numbers, and cores.

    Recorded with every run, beside the BLAS kernel (:func:`blas_info`), because together they
    set the float32 round-off (AMD's family 25 is Zen 3 and Zen 4, 26 is Zen 5), and 12,000 Adam
    steps grow it into another trajectory: the same seed and code can end a few test images
    apart on two machines whose OpenBLAS runs different kernels. Without ``/proc/cpuinfo`` (not
    Linux) only what :mod:`platform` knows.
    """
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as file:
            for line in file:
                if not line.strip():
                    break  # the first processor's block describes them all
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return {
        "model": fields.get("model name") or platform.processor() or platform.machine(),
        "family": fields.get("cpu family"),
        "model_number": fields.get("model"),
        "cores": os.cpu_count(),
    }


def blas_info() -> list[dict]:
    """threadpoolctl's view of the loaded BLAS libraries: which library, kernel, thread count."""
    keys = ("user_api", "internal_api", "prefix", "version", "architecture", "num_threads")
    return [
        {k: lib.get(k) for k in keys} | {"filepath": lib.get("filepath")}
        for lib in threadpool_info()
        if lib.get("user_api") == "blas"
    ]


def split_bounds(total: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` ranges covering ``range(total)``; first ones get the remainder.

    Empty ranges are dropped, so a batch smaller than the thread count uses fewer threads.
    """
    parts = max(1, min(parts, total))
    base, extra = divmod(total, parts)
    bounds, start = [], 0
    for i in range(parts):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def chunk_bounds(total: int) -> list[tuple[int, int]]:
    """How a batch of ``total`` items is split under the current thread budget."""
    return split_bounds(total, get_threads())


def run_chunks(fn: Callable[[int, int], T], bounds: Sequence[tuple[int, int]]) -> list[T]:
    """Call ``fn(start, stop)`` for each chunk in parallel; results in chunk order.

    The caller's thread runs the first chunk, the pool the others, each in a copy of the caller's
    context, so that what the caller set there (``np.errstate``) holds for every chunk; the first
    exception raised (in chunk order) propagates once every chunk has finished.
    """
    get_threads()
    executor = _executor
    if len(bounds) <= 1 or executor is None:
        return [fn(a, z) for a, z in bounds]
    futures: list[Future[T]] = [
        executor.submit(contextvars.copy_context().run, fn, a, z) for a, z in bounds[1:]
    ]
    try:
        first = fn(*bounds[0])
    finally:
        wait(futures)
    return [first, *(f.result() for f in futures)]
