"""Optimizers with the book's update rules (``common/optimizer.py``), in place and allocation-free.

``step(params, grads)`` updates the parameter arrays themselves (the model's live arrays), using
in-place ufuncs on one scratch buffer per parameter, so float32 stays float32 and a step allocates
nothing after the first. ``lr`` may be changed between steps (schedules). ``state_dict()`` is a
flat ``dict[str, np.ndarray]`` (step count, hyperparameters, per-parameter slots such as
``"m.0.W"``) that ``load_state_dict`` restores exactly, for resume.

Weight decay (``weight_decay > 0``) adds ``weight_decay * p`` to the gradient of every weight
(arrays with more than one dimension; biases and BatchNorm vectors are not decayed, as in the
book, whose L2 term covers the ``W`` matrices only).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from deepconvnet.errors import DeepConvNetError

EPS = 1e-7  # the book's constant in AdaGrad, RMSprop and Adam


class Optimizer:
    """Common machinery: step count, weight decay, scratch buffers, per-parameter state slots."""

    slots: tuple[str, ...] = ()
    # Slots that are sums or averages of squared gradients: a negative value is a damaged file.
    non_negative_slots: tuple[str, ...] = ()
    hyperparameters: tuple[str, ...] = ()

    def __init__(self, lr: float, weight_decay: float = 0.0) -> None:
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.t = 0
        self.state: dict[str, dict[str, np.ndarray]] = {slot: {} for slot in self.slots}
        self._scratch: dict[str, np.ndarray] = {}

    def step(self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> None:
        """Update every array of ``params`` in place from ``grads`` (same keys)."""
        self.t += 1
        for key, p in params.items():
            g = grads[key]
            tmp = self._buffer(self._scratch, key, p)
            if self.weight_decay and p.ndim > 1:
                g = self._decayed(key, p, g)
            self._update(key, p, g, tmp)

    def _decayed(self, key: str, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        out = self._buffer(self._scratch, "wd:" + key, p)
        np.multiply(p, self.weight_decay, out=out)
        out += g
        return out

    def _update(self, key: str, p: np.ndarray, g: np.ndarray, tmp: np.ndarray) -> None:
        raise NotImplementedError

    def slot(self, name: str, key: str, like: np.ndarray) -> np.ndarray:
        """Per-parameter state (zeros on first use).

        Unlike scratch space, state that no longer fits its parameter is an error, not a reset:
        silently zeroing Adam's moments would change the run without a word.
        """
        buf = self.state[name].get(key)
        if buf is None:
            buf = self.state[name][key] = np.zeros_like(like)
        elif buf.shape != like.shape or buf.dtype != like.dtype:
            raise DeepConvNetError(
                f"optimizer state {name}.{key} is {buf.dtype}{list(buf.shape)} but the parameter "
                f"is {like.dtype}{list(like.shape)}"
            )
        return buf

    @staticmethod
    def _buffer(store: dict[str, np.ndarray], key: str, like: np.ndarray) -> np.ndarray:
        buf = store.get(key)
        if buf is None or buf.shape != like.shape or buf.dtype != like.dtype:
            buf = store[key] = np.zeros_like(like)
        return buf

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat arrays: ``"t"``, ``"lr"``, hyperparameters, and ``"{slot}.{param}"`` copies."""
        out = {"t": np.array(self.t, dtype=np.int64), "lr": np.array(self.lr)}
        out["weight_decay"] = np.array(self.weight_decay)
        for name in self.hyperparameters:
            out[name] = np.array(getattr(self, name))
        for slot, arrays in self.state.items():
            for key, arr in arrays.items():
                out[f"{slot}.{key}"] = arr.copy()
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict` output (copies, so later steps do not alias ``state``)."""
        try:
            self.t = int(state["t"])
            self.lr = float(state["lr"])
            self.weight_decay = float(state.get("weight_decay", self.weight_decay))
            for name in self.hyperparameters:
                setattr(self, name, float(state[name]))
        except KeyError as exc:
            raise DeepConvNetError(f"optimizer state lacks {exc.args[0]!r}") from None
        self.state = {slot: {} for slot in self.slots}
        for name, arr in state.items():
            slot, _, key = name.partition(".")
            if key and slot in self.state:
                self.state[slot][key] = np.array(arr, copy=True)

    def __repr__(self) -> str:
        hyper = "".join(f", {h}={getattr(self, h)}" for h in self.hyperparameters)
        return f"{type(self).__name__}(lr={self.lr}{hyper}, weight_decay={self.weight_decay})"


class SGD(Optimizer):
    """p -= lr * g"""

    def __init__(self, lr: float = 0.01, weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)

    def _update(self, key, p, g, tmp):
        np.multiply(g, self.lr, out=tmp)
        p -= tmp


class Momentum(Optimizer):
    """v = momentum * v - lr * g; p += v"""

    slots = ("v",)
    hyperparameters = ("momentum",)

    def __init__(self, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)
        self.momentum = float(momentum)

    def _update(self, key, p, g, tmp):
        v = self.slot("v", key, p)
        v *= self.momentum
        np.multiply(g, self.lr, out=tmp)
        v -= tmp
        p += v


class Nesterov(Momentum):
    """The book's formulation: v = m*v - lr*g; p += m*m*v - (1 + m)*lr*g."""

    def _update(self, key, p, g, tmp):
        m = self.momentum
        v = self.slot("v", key, p)
        v *= m
        np.multiply(g, self.lr, out=tmp)
        v -= tmp
        np.multiply(v, m * m, out=tmp)
        p += tmp
        np.multiply(g, (1 + m) * self.lr, out=tmp)
        p -= tmp


class AdaGrad(Optimizer):
    """h += g*g; p -= lr * g / (sqrt(h) + 1e-7)"""

    slots = ("h",)
    non_negative_slots = ("h",)

    def __init__(self, lr: float = 0.01, weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)

    def _update(self, key, p, g, tmp):
        h = self.slot("h", key, p)
        np.multiply(g, g, out=tmp)
        h += tmp
        _apply_scaled(p, g, h, self.lr, tmp)


class RMSprop(Optimizer):
    """h = decay*h + (1 - decay)*g*g; p -= lr * g / (sqrt(h) + 1e-7)"""

    slots = ("h",)
    non_negative_slots = ("h",)
    hyperparameters = ("decay_rate",)

    def __init__(self, lr: float = 0.01, decay_rate: float = 0.99, weight_decay: float = 0.0):
        super().__init__(lr, weight_decay)
        self.decay_rate = float(decay_rate)

    def _update(self, key, p, g, tmp):
        h = self.slot("h", key, p)
        h *= self.decay_rate
        np.multiply(g, g, out=tmp)
        tmp *= 1 - self.decay_rate
        h += tmp
        _apply_scaled(p, g, h, self.lr, tmp)


def _apply_scaled(p: np.ndarray, g: np.ndarray, h: np.ndarray, lr: float, tmp: np.ndarray):
    """p -= lr * g / (sqrt(h) + EPS), through ``tmp``."""
    np.sqrt(h, out=tmp)
    tmp += EPS
    np.divide(g, tmp, out=tmp)
    tmp *= lr
    p -= tmp


class Adam(Optimizer):
    """The book's Adam: lr_t = lr*sqrt(1-b2^t)/(1-b1^t); m += (1-b1)(g-m); v += (1-b2)(g^2-v);
    p -= lr_t * m / (sqrt(v) + 1e-7)."""

    slots = ("m", "v")
    non_negative_slots = ("v",)
    hyperparameters = ("beta1", "beta2")

    def __init__(
        self,
        lr: float = 0.001,
        beta1: float = 0.9,
        beta2: float = 0.999,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr, weight_decay)
        self.beta1, self.beta2 = float(beta1), float(beta2)

    def _update(self, key, p, g, tmp):
        b1, b2, t = self.beta1, self.beta2, self.t
        lr_t = self.lr * np.sqrt(1.0 - b2**t) / (1.0 - b1**t)
        m, v = self.slot("m", key, p), self.slot("v", key, p)
        np.subtract(g, m, out=tmp)
        tmp *= 1 - b1
        m += tmp
        np.multiply(g, g, out=tmp)
        tmp -= v
        tmp *= 1 - b2
        v += tmp
        np.sqrt(v, out=tmp)
        tmp += self._eps()
        np.divide(m, tmp, out=tmp)
        tmp *= float(lr_t)
        p -= tmp

    def _eps(self) -> float:
        """What is added to sqrt(v): the book's constant."""
        return EPS


class PaperAdam(Adam):
    """Adam as Kingma & Ba's paper (Algorithm 1) and torch.optim.Adam write it:
    p -= lr * m_hat / (sqrt(v_hat) + 1e-7), with m_hat = m/(1-b1^t), v_hat = v/(1-b2^t).

    The same update as the book's but for where eps sits: the book adds it to sqrt(v), the paper
    to sqrt(v_hat), which is the book's rule with eps scaled by sqrt(1-b2^t) (0.03x at step 1,
    0.8x at step 1000, 1x by the end of 20 epochs). Offered to measure whether that matters.
    """

    def _eps(self) -> float:
        return EPS * float(np.sqrt(1.0 - self.beta2**self.t))


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": AdaGrad,
    "rmsprop": RMSprop,
    "adam": Adam,
    "adam-paper": PaperAdam,
}


def build_optimizer(name: str, lr: float | None = None, **kwargs: float) -> Optimizer:
    """An optimizer by name (a key of ``OPTIMIZERS``); ``lr=None`` keeps
    the book's default for that optimizer."""
    try:
        cls = OPTIMIZERS[name.lower()]
    except KeyError:
        raise DeepConvNetError(
            f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}"
        ) from None
    if lr is not None:
        kwargs["lr"] = lr
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise DeepConvNetError(f"optimizer {name!r}: {exc}") from None
