"""Every random stream of a training run, each drawn from its own key.

A run's seed feeds several purposes: weight initialisation, dropout masks, the validation split, the
order of each epoch and the augmentation of each batch. Each must be independent of the others.
NumPy's ``SeedSequence`` pads a key with zeros, so ``default_rng(s)``, ``default_rng([s, 0])`` and
``default_rng([s, 0, 0])`` are one and the same stream; keys that merely differ in length collide.
Every key is therefore ``[seed, purpose, *indices]`` with a distinct non-zero purpose and a fixed
number of indices per purpose, which no zero padding can make equal.
"""

from __future__ import annotations

import numpy as np

INIT = 1  # the model's initial weights
DROPOUT = 2  # dropout masks, one continuing stream for the whole run
VAL_SPLIT = 3  # which training images are held out for validation
ORDER = 4  # index: epoch
AUGMENT = 5  # indices: epoch, batch

# how many indices each purpose takes after the seed and the purpose
_INDICES = {INIT: 0, DROPOUT: 0, VAL_SPLIT: 0, ORDER: 1, AUGMENT: 2}

# Bumped whenever a key changes: a run directory records it, and a run made with other keys cannot
# be resumed bit-identically. Version 1 (unrecorded) used [seed, 0] for init and [seed, epoch] for
# the order, the same stream for epoch 0.
VERSION = 2


def stream(seed: int, purpose: int, *indices: int) -> np.random.Generator:
    """The generator for ``purpose`` of a run seeded ``seed``, at ``indices`` if it takes any."""
    if purpose not in _INDICES:
        raise ValueError(f"unknown stream purpose {purpose!r}")
    if len(indices) != _INDICES[purpose]:
        raise ValueError(f"stream {purpose} takes {_INDICES[purpose]} indices, got {len(indices)}")
    return np.random.default_rng([seed, purpose, *indices])
