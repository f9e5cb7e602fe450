"""Speed of one training step and of inference: fast path vs reference vs PyTorch CPU, side by side.

    python bench/speed.py                  # threads = all cores, 5 alternating pairs
    python bench/speed.py --quick          # fewer steps and pairs: a look in ~1 minute
    python bench/speed.py --threads 2 --steps 60 --pairs 7

Every measurement runs in its own subprocess (clean memory: its peak resident memory is that
configuration's) with ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` removed from its environment,
since they must be unset before NumPy loads OpenBLAS and they slow it down. Fast and PyTorch
runs alternate (fast, torch, fast, torch, ...) so that load from other processes hits both alike;
the table gives medians (and the fastest step, less sensitive to load) and the fast/torch
ratios. When those variables are set in the calling
environment, a second pass repeats the pairs with them kept, to show what they cost.

Input is random (no MNIST needed): batch 100 of (1, 28, 28) float32 for training (forward +
backward + Adam, dropout 0.5 on), 10,000 images for inference in batches of INFERENCE_BATCH
(200) for both engines. An epoch is extrapolated from 600 steps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

INFERENCE_BATCH = 200  # deepconvnet's default; the same for PyTorch, so both do the same work

BATCH = 100
STEPS_PER_EPOCH = 60_000 // BATCH
INFER_IMAGES = 10_000
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


# ---------------------------------------------------------------------------------------------
# Worker: one configuration, in its own process; prints one JSON line.


def _batches(rng, count: int):
    import numpy as np

    return [
        (rng.random((BATCH, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, BATCH))
        for _ in range(count)
    ]


def _time_steps(step, batches, warmup: int, steps: int) -> list[float]:
    for i in range(warmup):
        step(*batches[i % len(batches)])
    times = []
    for i in range(steps):
        x, t = batches[i % len(batches)]
        start = time.perf_counter()
        step(x, t)
        times.append(time.perf_counter() - start)
    return times


def _time_inference(predict, images) -> float:
    predict(images[:1000])  # warm-up
    start = time.perf_counter()
    predict(images)
    return time.perf_counter() - start


def worker_numpy(backend: str, threads: int, steps: int, infer_images: int) -> dict:
    import numpy as np

    from deepconvnet.models import build_model
    from deepconvnet.optimizers import build_optimizer
    from deepconvnet.threads import blas_info, set_threads

    set_threads(threads)
    rng = np.random.default_rng(0)
    model = build_model("deepconvnet", rng=np.random.default_rng(1), backend=backend)
    model.set_backend(backend)
    optimizer = build_optimizer("adam", lr=0.001)

    def step(x, t):  # what deepconvnet.train does per batch (no gradient for the images)
        model.loss(x, t, train=True)
        model.backward(input_grad=False)
        optimizer.step(model.params(), model.grads())

    times = _time_steps(step, _batches(rng, 8), warmup=3, steps=steps)
    images = rng.random((infer_images, 1, 28, 28), dtype=np.float32)
    infer = _time_inference(lambda x: model.predict(x, batch_size=INFERENCE_BATCH), images)
    return {"step_s": times, "infer_s": infer, "infer_images": infer_images, "blas": blas_info()}


def worker_torch(threads: int, steps: int, infer_images: int) -> dict:
    import numpy as np

    sys.path.insert(0, str(Path(__file__).parent))
    import torch
    from torch_peer import Peer

    rng = np.random.default_rng(0)
    peer = Peer(threads)
    times = _time_steps(peer.train_step, _batches(rng, 8), warmup=3, steps=steps)
    images = rng.random((infer_images, 1, 28, 28), dtype=np.float32)
    infer = _time_inference(lambda x: peer.predict(x, batch_size=INFERENCE_BATCH), images)
    return {
        "step_s": times,
        "infer_s": infer,
        "infer_images": infer_images,
        "blas": [{"library": f"torch {torch.__version__}", "threads": torch.get_num_threads()}],
    }


def run_worker(args: argparse.Namespace) -> None:
    import resource

    if args.worker == "torch":
        result = worker_torch(args.threads, args.steps, args.infer_images)
    else:
        result = worker_numpy(args.worker, args.threads, args.steps, args.infer_images)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


# ---------------------------------------------------------------------------------------------
# Driver


def measure(
    kind: str, threads: int, steps: int, infer_images: int, blas_env: dict[str, str]
) -> dict | None:
    """Run one configuration in a subprocess with exactly ``blas_env`` of the OpenBLAS variables.

    Returns None (with the reason printed) if it failed.
    """
    env = {k: v for k, v in os.environ.items() if k not in BLAS_ENV} | blas_env
    cmd = [sys.executable, __file__, "--worker", kind, "--threads", str(threads)]
    cmd += ["--steps", str(steps), "--infer-images", str(infer_images)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        print(f"  {kind}: failed ({tail[0]})", file=sys.stderr)
        return None
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    ms = statistics.median(result["step_s"]) * 1e3
    print(f"  {kind:9s} {ms:7.1f} ms/step  {result['infer_s']:6.2f} s inference", flush=True)
    return result


def torch_available() -> bool:
    proc = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True)
    return proc.returncode == 0


def summarise(runs: list[dict]) -> dict:
    """Medians over runs of each run's median step time, inference time and peak memory."""
    step_ms = statistics.median(statistics.median(r["step_s"]) * 1e3 for r in runs)
    infer_s = statistics.median(r["infer_s"] * INFER_IMAGES / r["infer_images"] for r in runs)
    best_ms = statistics.median(min(r["step_s"]) * 1e3 for r in runs)
    return {
        "step_ms": step_ms,
        "best_step_ms": best_ms,
        "epoch_s": step_ms * STEPS_PER_EPOCH / 1e3,
        "infer_s": infer_s,
        "images_per_s": INFER_IMAGES / infer_s,
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "runs": len(runs),
        "blas": runs[0]["blas"],
    }


def run_pass(args: argparse.Namespace, blas_env: dict[str, str], with_torch: bool) -> dict:
    """Alternating fast/torch pairs, then the reference once; returns summaries by name."""
    runs: dict[str, list[dict]] = {"fast": [], "torch": []}
    for i in range(args.pairs):
        print(f"pair {i + 1}/{args.pairs}", flush=True)
        for kind in ("fast", "torch") if with_torch else ("fast",):
            result = measure(kind, args.threads, args.steps, INFER_IMAGES, blas_env)
            if result:
                runs[kind].append(result)
    if args.ref_steps:
        ref = measure("reference", args.threads, args.ref_steps, args.ref_images, blas_env)
        runs["reference"] = [ref] if ref else []
    summaries = {k: summarise(v) for k, v in runs.items() if v}
    if "fast" in runs and "torch" in runs and runs["torch"]:
        ratios = [
            (statistics.median(f["step_s"]) / statistics.median(t["step_s"]), f, t)
            for f, t in zip(runs["fast"], runs["torch"], strict=False)
        ]
        summaries["ratio"] = {
            "step": statistics.median(r for r, _, _ in ratios),
            "infer": statistics.median(f["infer_s"] / t["infer_s"] for _, f, t in ratios),
        }
    return summaries


def table(summaries: dict, title: str) -> str:
    lines = [
        f"### {title}",
        "",
        "| path | ms/step | best ms/step | s/epoch | inference img/s | peak RSS (MiB) | runs |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in ("fast", "reference", "torch"):
        s = summaries.get(name)
        if s:
            lines.append(
                f"| {name} | {s['step_ms']:.1f} | {s['best_step_ms']:.1f} | {s['epoch_s']:.1f} "
                f"| {s['images_per_s']:,.0f} "
                f"| {s['peak_rss_mib']:.0f} | {s['runs']} |"
            )
    if "ratio" in summaries:
        r = summaries["ratio"]
        lines += [
            "",
            f"fast / torch (median of per-pair ratios): training step {r['step']:.2f}, "
            f"inference of {INFER_IMAGES:,} images {r['infer']:.2f}",
        ]
    blas = summaries.get("fast", {}).get("blas") or []
    for lib in blas:
        lines.append(
            f"fast path BLAS: {lib.get('internal_api')} {lib.get('version')}, kernel "
            f"{lib.get('architecture')}, {lib.get('num_threads')} BLAS thread(s) per worker"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per run")
    parser.add_argument("--pairs", type=int, default=5, help="alternating fast/torch runs")
    parser.add_argument("--ref-steps", type=int, default=5, help="reference steps (0: skip)")
    parser.add_argument("--ref-images", type=int, default=2000, help="reference inference")
    parser.add_argument("--quick", action="store_true", help="15 steps, 3 pairs, 3 ref steps")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    parser.add_argument(
        "--blas-env",
        action="append",
        default=[],
        metavar="VAR=VALUE",
        help="second pass with this OpenBLAS variable set (default: those in the environment)",
    )
    parser.add_argument("--json", type=Path, help="also write the summaries here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--infer-images", type=int, default=INFER_IMAGES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for item in args.blas_env:
        if item.split("=", 1)[0] not in BLAS_ENV or "=" not in item:
            parser.error(f"--blas-env takes one of {BLAS_ENV} as VAR=VALUE, got {item!r}")
    if args.quick:
        args.steps, args.pairs, args.ref_steps = 15, 3, 3
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
        return 0
    with_torch = not args.no_torch and torch_available()
    if not args.no_torch and not with_torch:
        print("torch is not installed (pip install '.[bench]'): fast and reference only")
    print(f"{args.threads} thread(s), batch {BATCH}, {args.steps} timed steps per run")
    kept = {v: os.environ[v] for v in BLAS_ENV if v in os.environ}
    kept |= dict(item.split("=", 1) for item in args.blas_env)
    results = {"clean": run_pass(args, {}, with_torch=with_torch)}
    out = [table(results["clean"], f"{', '.join(BLAS_ENV)} unset")]
    if kept:
        label = ", ".join(f"{k}={v}" for k, v in kept.items())
        print(f"second pass with {label}")
        results["blas_env"] = run_pass(args, kept, with_torch=with_torch)
        out.append(table(results["blas_env"], f"with {label}"))
    else:
        out.append(f"({', '.join(BLAS_ENV)} not set in this environment: no second pass)")
    print("\n" + "\n\n".join(out))
    if args.json:
        from deepconvnet.fileio import atomic_write_text

        atomic_write_text(args.json, json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
