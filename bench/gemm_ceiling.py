"""How close the fast path's convolution GEMMs run to this machine's BLAS peak, on one core.

    python bench/gemm_ceiling.py                  # the grid convolutions of figure 8-1, batch 100
    python bench/gemm_ceiling.py --write          # ... and save bench/results/gemm_ceiling.md
    python bench/gemm_ceiling.py --write --name gemm_ceiling_intel   # ... as another file

The fast path spends most of a training step in matrix products of few output channels
(N = 16-64) and short rows (K = 3C = 48-192). This times them as the kernels issue them (one
block of ``kernels.fast._blocks``, forward: three GEMMs on shifted slices of the folded grid;
dW: three transposed products), and a 1024x1024 sgemm, each on one BLAS thread, and prints
GFLOP/s: if the convolutions' GEMMs already run near the large sgemm, a faster step needs fewer
FLOPs or a faster BLAS, not a better arrangement of the same GEMMs.

``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` are removed before NumPy loads (the script
re-executes itself without them), as in bench/speed.py; the kernel that ran is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

from speed import BLAS_ENV

RESULTS = Path(__file__).resolve().parent / "results"
# (height, in channels, out channels, pad) of figure 8-1's convolutions that take the grid path.
GRID_CONVS = ((28, 16, 16, 1), (14, 16, 32, 1), (14, 32, 32, 2), (8, 32, 64, 1), (8, 64, 64, 1))
KERNEL = 3


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up: first-touch page faults, BLAS buffers
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


def conv_cases() -> list[tuple[str, int, int, object, object]]:
    """``(layer, images, flops, forward, dW)`` for one block of each grid convolution."""
    import numpy as np

    from deepconvnet.kernels import fast

    rng = np.random.default_rng(0)
    cases = []
    for h, c, f, pad in GRID_CONVS:
        per_image = fast._grid_image_bytes(h, h, c, KERNEL, pad, 4)
        (start, stop), *_ = fast._blocks(0, 100, per_image)
        x = rng.standard_normal((stop - start, h, h, c), dtype=np.float32)
        g3, s, t = fast._grid_taps(x, KERNEL, pad)
        wf = rng.standard_normal((KERNEL, KERNEL * c, f), dtype=np.float32)
        m = (stop - start) * t
        dyg = rng.standard_normal((m, f), dtype=np.float32)
        flops = 2 * m * KERNEL * KERNEL * c * f  # per pass, grid positions included
        forward = partial(fast._grid_gemms, g3, wf, m, s)
        dw = partial(fast._grid_weight_grads, g3, dyg, KERNEL, m, s)
        cases.append((f"{h}x{h}, {c} -> {f}, pad {pad}", stop - start, flops, forward, dw))
    return cases


def measure(rounds: int, repeats: int) -> tuple[list[float], list[dict]]:
    """GFLOP/s of the sgemm and of every case, per round (rounds interleave, so that a busy
    moment of a shared machine hits one round of everything rather than one figure)."""
    import numpy as np

    a = np.random.default_rng(1).standard_normal((1024, 1024), dtype=np.float32)
    cases = conv_cases()
    peaks: list[float] = []
    rows = [{"layer": c[0], "images": c[1], "forward": [], "dW": []} for c in cases]
    for _ in range(rounds):
        peaks.append(2 * 1024**3 / median_ms(lambda: a @ a, max(5, repeats // 4)) / 1e6)
        for row, (_, _, flops, forward, dw) in zip(rows, cases, strict=True):
            row["forward"].append(flops / median_ms(forward, repeats) / 1e6)
            row["dW"].append(flops / median_ms(dw, repeats) / 1e6)
    return peaks, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=40, help="timed calls per figure")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median)")
    parser.add_argument("--write", action="store_true", help=f"save the table in {RESULTS.name}/")
    parser.add_argument("--name", default="gemm_ceiling", help="results file stem (with --write)")
    args = parser.parse_args(argv)
    if any(name in os.environ for name in BLAS_ENV):
        env = {k: v for k, v in os.environ.items() if k not in BLAS_ENV}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)

    import numpy  # noqa: F401  (BLAS must be loaded before it can be limited)
    from threadpoolctl import threadpool_limits

    from deepconvnet.threads import blas_info

    with threadpool_limits(limits=1, user_api="blas"):
        peaks, rows = measure(args.rounds, args.repeats)
        kernel = ", ".join(
            f"{lib['internal_api']} {lib['architecture']}, {lib['num_threads']} thread(s)"
            for lib in blas_info()
        )
    peak = statistics.median(peaks)
    lines = [
        f"BLAS: {kernel}; 1024x1024 sgemm: {peak:.0f} GFLOP/s "
        f"(median of {args.rounds} rounds; {min(peaks):.0f}-{max(peaks):.0f})",
        "",
        "| convolution (one block) | images | forward GFLOP/s | dW GFLOP/s |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        cells = [
            f"{statistics.median(row[key]):.0f} "
            f"({statistics.median(r / p for r, p in zip(row[key], peaks, strict=True)):.0%})"
            for key in ("forward", "dW")
        ]
        lines.append(f"| {row['layer']} | {row['images']} | {' | '.join(cells)} |")
    lines += ["", "(medians over the rounds; in brackets, of the same round's sgemm rate)"]
    report = "\n".join(lines)
    print(report)
    if args.write:
        from reproduce_book import describe_cpu

        from deepconvnet import __version__
        from deepconvnet.fileio import atomic_write_text
        from deepconvnet.threads import cpu_info

        stamp = time.strftime("%Y-%m-%d")
        title = f"# bench/gemm_ceiling.py — {stamp}, deepconvnet {__version__}"
        command = "python bench/gemm_ceiling.py " + " ".join(argv or sys.argv[1:])
        text = f"{title}\n\n`{command.strip()}` on {describe_cpu(cpu_info())}\n\n{report}\n"
        atomic_write_text(RESULTS / f"{args.name}.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
