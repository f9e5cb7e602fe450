"""Does deepconvnet's float32 arithmetic lose more than PyTorch's? Gradients against float64.

torch_crosscheck.py shows that deepconvnet and PyTorch compute the same mathematics, in float64.
Both train in float32, though, and a kernel that rounds badly could still cost a few test images
over 12,000 steps. This check measures the rounding. For each real MNIST batch (with fixed dropout
masks), it computes the gradient of all 123,552 parameters four ways:

- in float64 (the "truth");
- with deepconvnet's fast path in float32;
- with its reference path (the book's im2col) in float32;
- with PyTorch in float32.

It prints each float32 gradient's relative error, ||g - truth|| / ||truth||, per parameter. It
does this at He initialisation and, with --model, at a trained checkpoint.

    python bench/float32_check.py
    python bench/float32_check.py --model RUN_DIR/model.npz --batches 5

Needs torch; exits 1 when deepconvnet's fast path errs more than --factor times PyTorch's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

try:
    import torch
except ImportError:  # the benchmark peer is an optional extra
    sys.exit("bench/float32_check.py needs PyTorch: pip install -e '.[bench]'")
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from torch_crosscheck import torch_layout, torch_twin

from deepconvnet.checkpoint import load_model
from deepconvnet.data.mnist import load_dataset, to_float
from deepconvnet.layers import Dropout
from deepconvnet.models import Sequential, build_model

PATHS = ("fast", "reference", "torch")


def deepconvnet_grads(model: Sequential, x: np.ndarray, t: np.ndarray, masks) -> list[np.ndarray]:
    for layer, mask in zip(
        [layer for layer in model.layers if isinstance(layer, Dropout)], masks, strict=True
    ):
        layer.hold_mask(mask)
    model.loss(x.astype(model.dtype), t)
    model.backward(input_grad=False)
    return [g.astype(np.float64) for g in model.grads().values()]


def torch_float32_grads(model64: Sequential, x: np.ndarray, t: np.ndarray, masks) -> list:
    net, dropouts, params = torch_twin(model64)
    net.float()
    for dropout, mask in zip(dropouts, masks, strict=True):
        dropout.mask = torch.from_numpy(mask.astype(np.float32))
    loss = nn.CrossEntropyLoss()(net(torch.from_numpy(x.astype(np.float32))), torch.from_numpy(t))
    loss.backward()
    return [torch_layout(p.grad.double().numpy()) for p in params]


def with_backend(model64: Sequential, backend: str) -> Sequential:
    """A float32 copy of ``model64``'s parameters on the given kernel path."""
    model = model64.copy(np.float32)
    model.set_backend(backend)
    return model


def relative_errors(grads: list[np.ndarray], truth: list[np.ndarray]) -> np.ndarray:
    pairs = zip(grads, truth, strict=True)
    return np.array([np.linalg.norm(g - h) / max(np.linalg.norm(h), 1e-300) for g, h in pairs])


def measure(model64: Sequential, ds, batches: int, rng: np.random.Generator) -> dict:
    """Per path: an array (batches, parameters) of float32 gradient errors against float64."""
    errors: dict[str, list] = {path: [] for path in PATHS}
    float32 = {backend: with_backend(model64, backend) for backend in ("fast", "reference")}
    for _ in range(batches):
        chosen = rng.choice(len(ds.train_labels), 100, replace=False)
        x = to_float(ds.train_images[chosen]).astype(np.float64)
        t = ds.train_labels[chosen].astype(np.int64)
        masks = [rng.random((100, 50)) > 0.5, rng.random((100, 10)) > 0.5]
        truth = deepconvnet_grads(model64, x, t, masks)
        for backend, model in float32.items():
            errors[backend].append(relative_errors(deepconvnet_grads(model, x, t, masks), truth))
        errors["torch"].append(relative_errors(torch_float32_grads(model64, x, t, masks), truth))
    return {path: np.array(rows) for path, rows in errors.items()}


def report(label: str, names: list[str], errors: dict) -> None:
    print(f"\n{label}: relative error of float32 gradients (median over batches / worst)")
    print(f"{'param':8s}" + "".join(f"{path:>22s}" for path in PATHS))
    for i, name in enumerate(names):
        cells = [f"{np.median(errors[p][:, i]):10.1e} / {errors[p][:, i].max():.1e}" for p in PATHS]
        print(f"{name:8s}" + "".join(f"{cell:>22s}" for cell in cells))
    medians = {path: float(np.median(errors[path])) for path in PATHS}
    print("all     " + "".join(f"{medians[p]:>22.1e}" for p in PATHS))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="also measure at this trained model.npz")
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--factor", type=float, default=2.0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    ds = load_dataset("mnist")
    rng = np.random.default_rng(args.seed)
    points = [("He initialisation", build_model("deepconvnet", rng=rng, dtype=np.float64))]
    if args.model:
        points.append((str(args.model), load_model(args.model).copy(np.float64)))
    worst_ratio = 0.0
    for label, model64 in points:
        errors = measure(model64, ds, args.batches, rng)
        report(label, list(model64.params()), errors)
        ratio = np.median(errors["fast"]) / np.median(errors["torch"])
        worst_ratio = max(worst_ratio, float(ratio))
    verdict = "no worse" if worst_ratio <= args.factor else "WORSE"
    print(f"\nmedian float32 gradient error, fast path / torch {torch.__version__}:")
    print(f"at most {worst_ratio:.2f}x (allowed {args.factor:g}x): {verdict}")
    return 0 if worst_ratio <= args.factor else 1


if __name__ == "__main__":
    raise SystemExit(main())
