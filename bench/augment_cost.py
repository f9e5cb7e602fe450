"""What augmentation costs per epoch: the same short run with and without `--augment`, in pairs.

Issue 6 asks that augmentation, done in the loader's background thread, add at most ~10% to an
epoch's wall time. Each pair trains one epoch on the first N training images without and then
with augmentation (separate `deepconvnet train` processes, same seed); the table gives the median
seconds per epoch of each and the median of the per-pair ratios.

    python bench/augment_cost.py                       # 10,000 images, 3 pairs, both models
    python bench/augment_cost.py --augment elastic --models deepconvnet

Results are written to bench/results/augment_cost.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from reproduce_book import RESULTS, train_one

from deepconvnet.fileio import atomic_write_text

TARGET = 1.10


def measure_pair(model: str, spec: str, limit: int, threads: int | None, tmp: Path) -> dict:
    """Seconds per epoch without and with augmentation (one epoch each, back to back)."""
    base = ["--model", model, "--train-limit", str(limit)]
    pair = {}
    for name, extra in (("plain", base), ("augmented", [*base, "--augment", spec])):
        out = Path(tempfile.mkdtemp(dir=tmp, prefix=f"{model}-{name}-"))
        pair[name] = train_one(0, 1, threads, out, extra)["seconds_per_epoch"]
    return pair


def summarise(model: str, pairs: list[dict]) -> dict:
    ratios = [p["augmented"] / p["plain"] for p in pairs]
    return {
        "model": model,
        "plain_s": statistics.median(p["plain"] for p in pairs),
        "augmented_s": statistics.median(p["augmented"] for p in pairs),
        "ratio": statistics.median(ratios),
        "pairs": pairs,
    }


def table(rows: list[dict], spec: str, limit: int) -> str:
    lines = [
        f"| model | s/epoch, {limit:,} images | with `--augment {spec}` | ratio (median) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        verdict = "met" if r["ratio"] <= TARGET else "not met"
        lines.append(
            f"| {r['model']} | {r['plain_s']:.1f} | {r['augmented_s']:.1f} | "
            f"{r['ratio']:.3f} ({verdict}: target <= {TARGET:.2f}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--augment", default="standard", help="augmentation spec (default: standard)"
    )
    parser.add_argument("--models", nargs="+", default=["deepconvnet", "deepconvnet-bn"])
    parser.add_argument("--train-limit", type=int, default=10_000, help="images per epoch")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="default: all cores")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="augment-cost-") as tmp:
        for model in args.models:
            pairs = [
                measure_pair(model, args.augment, args.train_limit, args.threads, Path(tmp))
                for _ in range(args.pairs)
            ]
            rows.append(summarise(model, pairs))
    text = table(rows, args.augment, args.train_limit)
    print(text)
    report = {"augment": args.augment, "train_limit": args.train_limit, "rows": rows}
    atomic_write_text(args.results / "augment_cost.json", json.dumps(report, indent=2) + "\n")
    command = " ".join(["python", "bench/augment_cost.py", *(argv or sys.argv[1:])])
    atomic_write_text(
        args.results / "augment_cost.md",
        f"# Augmentation cost per epoch (issue 6)\n\nCommand: `{command}`\n\n{text}\n",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
