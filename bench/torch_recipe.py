"""The book's recipe trained in PyTorch: is 99.38% the recipe's, or one lucky run's?

A cross-check for bench/reproduce_book.py that shares no code with deepconvnet's engine: figure
8-1 built in PyTorch (bench/torch_peer.py) and trained the book's way — He-normal weights from the
fan-in, zero biases, Adam lr 0.001 (eps 1e-7 as the book's), batch 100, 20 epochs of all 60,000
images, and the book's Dropout (a 0/1 mask in training, x0.5 at test; not PyTorch's inverted
dropout, which scales the class scores the softmax sees). The test set is read once, at the end.

    python bench/torch_recipe.py                      # seeds 0-2, 20 epochs, 2 threads
    python bench/torch_recipe.py --seeds 0 --epochs 1 # a quick look
    python bench/torch_recipe.py --seeds 3 4 5 --name torch_recipe_more_seeds

Needs torch (``pip install torch==2.13.0``); writes bench/results/NAME.{json,md} (NAME:
torch_recipe unless --name). The seeds train one after another in one process, so a row's peak
RSS is the process's peak so far.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

try:
    import torch
except ImportError:  # the benchmark peer is an optional extra
    sys.exit("bench/torch_recipe.py needs PyTorch: pip install -e '.[bench]'")
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from reproduce_book import table
from torch_crosscheck import book_adam_step
from torch_peer import deepconvnet

from deepconvnet.data.mnist import load_dataset, to_float
from deepconvnet.fileio import atomic_write_text

RESULTS = Path(__file__).parent / "results"


class BookDropout(nn.Module):
    """The book's Dropout: keep each value with probability 1 - p, and scale by 1 - p at test."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return x * (torch.rand_like(x) > self.p)
        return x * (1.0 - self.p)


def book_model() -> nn.Sequential:
    """torch_peer's figure 8-1 with the book's Dropout and the book's He-normal initialisation."""
    layers = [BookDropout(m.p) if isinstance(m, nn.Dropout) else m for m in deepconvnet()]
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Conv2d | nn.Linear):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0.0, (2.0 / fan_in) ** 0.5)
                m.bias.zero_()
    return model


class BookAdam:
    """The book's Adam (eps outside the root of the uncorrected v) with torch.optim's interface.

    torch.optim.Adam adds eps to the root of the bias-corrected v instead: the same update but for
    eps, which the book's form enlarges early on (about 3e-6 at step 1, 1.3e-7 by step 1,000).
    """

    def __init__(self, params, lr: float) -> None:
        self.params, self.lr, self.t = list(params), lr, 0
        self.state = [{"m": torch.zeros_like(p), "v": torch.zeros_like(p)} for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        self.t += 1
        book_adam_step(self.params, self.state, self.t, self.lr)


def build_optimizer(kind: str, model: nn.Module):
    if kind == "book":
        return BookAdam(model.parameters(), lr=0.001)
    return torch.optim.Adam(model.parameters(), lr=0.001, eps=1e-7)


def train_one(ds, seed: int, epochs: int, threads: int, adam: str = "torch") -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x_train = torch.from_numpy(to_float(ds.train_images))
    t_train = torch.from_numpy(ds.train_labels.astype(np.int64))
    model = book_model()
    optimizer = build_optimizer(adam, model)
    loss_fn = nn.CrossEntropyLoss()
    epoch_seconds, epoch_losses = [], []
    for epoch in range(epochs):
        model.train()
        start = time.perf_counter()
        batches = torch.from_numpy(rng.permutation(len(x_train))).split(100)
        total = 0.0
        for batch in batches:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_train[batch]), t_train[batch])
            loss.backward()
            optimizer.step()
            total += loss.item()
        epoch_seconds.append(time.perf_counter() - start)
        epoch_losses.append(total / len(batches))
        print(
            f"seed {seed} epoch {epoch + 1}/{epochs}: loss {epoch_losses[-1]:.4f} "
            f"({epoch_seconds[-1]:.1f} s)",
            flush=True,
        )
    model.eval()
    with torch.no_grad():
        x_test = torch.from_numpy(to_float(ds.test_images))
        scores = torch.cat([model(x) for x in x_test.split(1000)])
    t_test = torch.from_numpy(ds.test_labels.astype(np.int64))
    predicted = scores.argmax(1).numpy()
    correct = int((predicted == ds.test_labels).sum())
    return {
        "seed": seed,
        "test_accuracy": correct / len(predicted),
        "correct": correct,
        "test_loss": float(loss_fn(scores, t_test)),  # cross-entropy, dropout off (x0.5)
        "train_loss_per_epoch": epoch_losses,  # dropout on, as deepconvnet's metrics.jsonl
        "seconds_per_epoch": statistics.mean(epoch_seconds),
        "wall_seconds": sum(epoch_seconds),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--name",
        default="torch_recipe",
        help="results file stem under bench/results/ (default: torch_recipe)",
    )
    parser.add_argument(
        "--adam",
        choices=["torch", "book"],
        default="torch",
        help="torch.optim.Adam (default) or the book's Adam, which places eps differently",
    )
    args = parser.parse_args()
    ds = load_dataset("mnist")
    rows = [train_one(ds, seed, args.epochs, args.threads, args.adam) for seed in args.seeds]
    report = table(rows)
    print()
    print(report)
    meta = {
        "torch": torch.__version__,
        "threads": args.threads,
        "epochs": args.epochs,
        "adam": args.adam,
    }
    atomic_write_text(
        RESULTS / f"{args.name}.json", json.dumps({**meta, "runs": rows}, indent=2) + "\n"
    )
    atomic_write_text(RESULTS / f"{args.name}.md", report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
