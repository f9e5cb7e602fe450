"""Does deepconvnet train exactly as PyTorch would? Step by step, in float64.

Seed-to-seed spread hides small systematic errors: two implementations can both "train" and
differ by a few test images for reasons nobody can see. This check removes the randomness. One
DeepConvNet is built by deepconvnet and copied into PyTorch (bench/torch_peer.py); both then take
the same real MNIST batches with the same dropout masks, and each applies the book's Adam. After
every step the losses and all 123,552 parameters are compared. Agreement to ~1e-12 over many steps
means the forward pass, every backward pass and the update are the same mathematics, so any
difference in final accuracy between the two is the luck of the draw, not a bug.

    python bench/torch_crosscheck.py                    # fast backend, 50 steps
    python bench/torch_crosscheck.py --backend reference --steps 20

Needs torch; exits 1 when the largest relative difference exceeds --tol.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

try:
    import torch
except ImportError:  # the benchmark peer is an optional extra
    sys.exit("bench/torch_crosscheck.py needs PyTorch: pip install -e '.[bench]'")
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from torch_peer import deepconvnet as torch_deepconvnet

from deepconvnet.data.mnist import load_dataset, to_float
from deepconvnet.layers import Dropout
from deepconvnet.models import build_model
from deepconvnet.optimizers import Adam


class MaskDropout(nn.Module):
    """The book's train-time Dropout, with the mask deepconvnet drew handed in from outside."""

    def __init__(self) -> None:
        super().__init__()
        self.mask: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask


def torch_layout(array: np.ndarray) -> np.ndarray:
    """A deepconvnet parameter as PyTorch holds it: affine weights are (in, out) as in the book,
    nn.Linear's are (out, in); conv weights and biases are the same in both."""
    return array.T if array.ndim == 2 else array


def torch_twin(model) -> tuple[nn.Sequential, list[MaskDropout], list[torch.Tensor]]:
    """PyTorch's figure 8-1 holding a float64 copy of ``model``'s parameters.

    Returns the network, its dropouts in order, and its parameters in deepconvnet's key order.
    """
    layers = [MaskDropout() if isinstance(m, nn.Dropout) else m for m in torch_deepconvnet()]
    net = nn.Sequential(*layers).double()
    ours = list(model.params().values())  # W, b of each conv then each affine, in order
    theirs = [p for m in net if isinstance(m, nn.Conv2d | nn.Linear) for p in (m.weight, m.bias)]
    with torch.no_grad():
        for mine, their in zip(ours, theirs, strict=True):
            their.copy_(torch.from_numpy(np.ascontiguousarray(torch_layout(mine))))
    return net, [m for m in net if isinstance(m, MaskDropout)], theirs


def book_adam_step(params: list[torch.Tensor], state: list[dict], t: int, lr: float) -> None:
    """The book's Adam (bias correction folded into lr_t, eps 1e-7 outside the root)."""
    lr_t = lr * (1.0 - 0.999**t) ** 0.5 / (1.0 - 0.9**t)
    with torch.no_grad():
        for p, s in zip(params, state, strict=True):
            s["m"] += 0.1 * (p.grad - s["m"])
            s["v"] += 0.001 * (p.grad**2 - s["v"])
            p -= lr_t * s["m"] / (s["v"].sqrt() + 1e-7)


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--backend", choices=["fast", "reference"], default="fast")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tol", type=float, default=1e-9)
    args = parser.parse_args()
    torch.set_num_threads(1)

    ds = load_dataset("mnist")
    rng = np.random.default_rng(args.seed)
    model = build_model(
        "deepconvnet", rng=np.random.default_rng(args.seed), dtype=np.float64, backend=args.backend
    )
    optimizer = Adam(lr=0.001)
    net, torch_dropouts, torch_params = torch_twin(model)
    state = [{"m": torch.zeros_like(p), "v": torch.zeros_like(p)} for p in torch_params]
    our_dropouts = [layer for layer in model.layers if isinstance(layer, Dropout)]
    loss_fn = nn.CrossEntropyLoss()

    worst = 0.0
    print("step   loss (deepconvnet)   loss rel. diff   params max rel. diff")
    for step in range(1, args.steps + 1):
        chosen = rng.choice(len(ds.train_labels), 100)  # the book's Trainer draws batches so
        x = to_float(ds.train_images[chosen]).astype(np.float64)
        t = ds.train_labels[chosen].astype(np.int64)
        masks = [rng.random((100, 50)) > 0.5, rng.random((100, 10)) > 0.5]
        for ours, theirs, mask in zip(our_dropouts, torch_dropouts, masks, strict=True):
            ours.hold_mask(mask)
            theirs.mask = torch.from_numpy(mask.astype(np.float64))

        loss = model.loss(x, t)
        model.backward(input_grad=False)
        optimizer.step(model.params(), model.grads())

        for p in torch_params:
            p.grad = None
        torch_loss = loss_fn(net(torch.from_numpy(x)), torch.from_numpy(t))
        torch_loss.backward()
        book_adam_step(torch_params, state, step, 0.001)

        loss_diff = abs(loss - torch_loss.item()) / torch_loss.item()
        param_diff = max(
            relative(torch_layout(mine), their.detach().numpy())
            for mine, their in zip(model.params().values(), torch_params, strict=True)
        )
        worst = max(worst, param_diff)
        if step in (1, 2, 5) or step % 10 == 0 or step == args.steps:
            print(f"{step:4d}   {loss:18.12f}   {loss_diff:14.2e}   {param_diff:20.2e}")

    verdict = "agree" if worst <= args.tol else "DISAGREE"
    print(f"\n{args.backend} backend vs torch {torch.__version__}, float64, {args.steps} steps:")
    print(f"largest relative parameter difference {worst:.2e} (tolerance {args.tol:g}): {verdict}")
    return 0 if worst <= args.tol else 1


if __name__ == "__main__":
    raise SystemExit(main())
