"""The same DeepConvNet (figure 8-1) in PyTorch, for the speed benchmark only.

The package never imports torch; bench/speed.py runs this in its own subprocess. Same layers,
widths, pads, batch size, loss and optimizer (Adam) as ``build_model("deepconvnet")``; the thread
count is set with ``torch.set_num_threads``.
"""

from __future__ import annotations

import sys

try:
    import torch
except ImportError:  # the benchmark peer is an optional extra
    sys.exit("bench/torch_peer.py needs PyTorch: pip install -e '.[bench]'")
from torch import nn

WIDTHS = (16, 16, 32, 32, 64, 64)
PADS = (1, 1, 1, 2, 1, 1)


def deepconvnet(hidden: int = 50, classes: int = 10, dropout: float = 0.5) -> nn.Sequential:
    """conv-ReLU-conv-ReLU-pool x3, Affine 1024->50, ReLU, Dropout, Affine 50->10, Dropout."""
    layers: list[nn.Module] = []
    channels, size = 1, 28
    for i, (width, pad) in enumerate(zip(WIDTHS, PADS, strict=True)):
        layers += [nn.Conv2d(channels, width, 3, 1, pad), nn.ReLU()]
        channels, size = width, size + 2 * pad - 2
        if i % 2 == 1:
            layers.append(nn.MaxPool2d(2, 2))
            size //= 2
    layers += [
        nn.Flatten(),
        nn.Linear(channels * size * size, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, classes),
        nn.Dropout(dropout),
    ]
    return nn.Sequential(*layers)


class Peer:
    """A model + Adam + loss with the step and inference the benchmark times."""

    def __init__(self, threads: int, seed: int = 0, lr: float = 0.001) -> None:
        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.model = deepconvnet()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.loss = nn.CrossEntropyLoss()

    def train_step(self, x, t) -> float:
        """One forward + backward + Adam step on NumPy arrays (converted without copying)."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.model(torch.from_numpy(x)), torch.from_numpy(t))
        loss.backward()
        self.optimizer.step()
        return float(loss)

    @torch.no_grad()
    def predict(self, x, batch_size: int = 1000):
        """Class indices for NCHW images, in eval mode, batch by batch."""
        self.model.eval()
        return torch.cat(
            [
                self.model(torch.from_numpy(x[i : i + batch_size])).argmax(1)
                for i in range(0, len(x), batch_size)
            ]
        ).numpy()
