"""The layers of chapter 8: forward and backward by hand, as in the book, plus a layout switch.

Every layer follows one contract: ``params`` / ``grads`` dicts (``params`` arrays are updated in
place by the optimizer; ``backward`` *replaces* each ``grads`` entry with a new array, so read
``grads`` after ``backward`` rather than keeping references), ``forward(x, train=False)``,
``backward(dout)``, ``spec()`` (JSON-able constructor arguments plus ``"type"``) and
``output_shape(input_shape)`` on per-sample NCHW shapes. Constructors check their arguments and
raise ValueError naming the bad one, so a hand-edited spec fails where it is read. ``layout`` is
``"NCHW"`` (reference kernels) or ``"NHWC"`` (fast kernels); :class:`~deepconvnet.models.Sequential`
sets it for every layer at once. Parameters have one shape whatever the layout, so checkpoints
work with both.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from deepconvnet import init
from deepconvnet.kernels import for_layout
from deepconvnet.kernels.reference import output_size

Shape = tuple[int, ...]


def _whole_number(name: str, value: Any) -> int:
    """``value`` if it is an integer (not a bool, float or string), else a ValueError naming
    ``name``: a spec in a file is untrusted, and ``int()`` would quietly read ``"35"``, ``1.7``
    or ``true`` as sizes, and fail on ``Infinity`` with an OverflowError."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _pair(value: int | tuple[int, int] | list[int], name: str = "kernel_size") -> tuple[int, int]:
    """An int ``k`` as ``(k, k)``, or a two-integer sequence as a tuple."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value), int(value)
    if not isinstance(value, tuple | list | np.ndarray) or len(value) != 2:
        raise ValueError(f"{name} must be an integer or two integers, got {value!r}")
    return _whole_number(name, value[0]), _whole_number(name, value[1])


def _at_least(name: str, value: int, low: int) -> int:
    """``value`` as an int, or a ValueError naming ``name`` when it is not an integer or is
    below ``low``.

    A zero stride or kernel in a spec would otherwise surface far away, as a ZeroDivisionError in
    the kernels or the initializer.
    """
    number = _whole_number(name, value)
    if number < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
    return number


def _check_channels(layer: str, expected: int, input_shape: Shape) -> None:
    """Raise ValueError when the input's channel (or feature) count is not the layer's."""
    if input_shape[0] != expected:
        raise ValueError(f"{layer} expects {expected} channels, got input shape {input_shape}")


class Layer:
    """Base class: no parameters, identity shape, NCHW layout."""

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.layout = "NCHW"

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-able)."""
        return {}

    def spec(self) -> dict[str, Any]:
        return {"type": type(self).__name__, **self.config()}

    def output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape)

    def initialize(self, rng: np.random.Generator) -> None:
        """Draw fresh parameters (no-op for parameter-free layers)."""

    def astype(self, dtype: np.dtype) -> None:
        """Convert parameters, gradients and buffers to ``dtype`` (new arrays)."""
        for store in (self.params, self.grads, self.buffers):
            for key, value in store.items():
                store[key] = value.astype(dtype)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class _WeightedLayer(Layer):
    """A layer with weights ``W`` (drawn by its ``weight_init`` rule) and biases ``b`` (zero)."""

    weight_init: str

    def initialize(self, rng: np.random.Generator) -> None:
        W = self.params["W"]
        W[...] = init.initialize(self.weight_init, W.shape, rng, W.dtype)
        self.params["b"][...] = 0


class Convolution(_WeightedLayer):
    """2-D cross-correlation with ``out_channels`` filters of ``kernel_size`` (int or (kh, kw))."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int = 1,
        pad: int = 0,
        weight_init: str = "he",
    ) -> None:
        super().__init__()
        self.in_channels = _at_least("in_channels", in_channels, 1)
        self.out_channels = _at_least("out_channels", out_channels, 1)
        kh, kw = _pair(kernel_size)
        self.kernel_size = (_at_least("kernel height", kh, 1), _at_least("kernel width", kw, 1))
        self.stride, self.pad = _at_least("stride", stride, 1), _at_least("pad", pad, 0)
        self.weight_init = init.check_name(weight_init)
        kh, kw = self.kernel_size
        self.params["W"] = np.zeros((self.out_channels, self.in_channels, kh, kw), np.float32)
        self.params["b"] = np.zeros(self.out_channels, np.float32)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._cache: Any = None
        # Set by Sequential when the next layer is a ReLU it runs here (see ReLU.fused).
        self.fused_relu = False

    def config(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": self.stride,
            "pad": self.pad,
            "weight_init": self.weight_init,
        }

    def output_shape(self, input_shape: Shape) -> Shape:
        _, h, w = input_shape
        _check_channels("Convolution", self.in_channels, input_shape)
        kh, kw = self.kernel_size
        return (
            self.out_channels,
            output_size(h, kh, self.stride, self.pad),
            output_size(w, kw, self.stride, self.pad),
        )

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        kernels = for_layout(self.layout)
        y, self._cache = kernels.conv2d_forward(
            x, self.params["W"], self.params["b"], self.stride, self.pad, relu=self.fused_relu
        )
        return y

    def backward(self, dout: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """dL/dx (None when ``input_grad`` is False: the first layer's is never used)."""
        kernels = for_layout(self.layout)
        dx, dW, db = kernels.conv2d_backward(dout, self._cache, input_grad=input_grad)
        self.grads["W"] = dW
        self.grads["b"] = db
        return dx


class MaxPooling(Layer):
    """Max over ``pool_h`` x ``pool_w`` windows; gradient to the first maximum of each window."""

    def __init__(
        self, pool_h: int = 2, pool_w: int | None = None, stride: int | None = None, pad: int = 0
    ) -> None:
        super().__init__()
        self.pool_h = _at_least("pool_h", pool_h, 1)
        self.pool_w = self.pool_h if pool_w is None else _at_least("pool_w", pool_w, 1)
        self.stride = self.pool_h if stride is None else _at_least("stride", stride, 1)
        self.pad = _at_least("pad", pad, 0)
        if self.pad >= min(self.pool_h, self.pool_w):
            # A window of padding only would output -inf.
            raise ValueError(f"pad {self.pad} must be smaller than the pooling window")
        self._cache: Any = None

    def config(self) -> dict[str, Any]:
        return {
            "pool_h": self.pool_h,
            "pool_w": self.pool_w,
            "stride": self.stride,
            "pad": self.pad,
        }

    def output_shape(self, input_shape: Shape) -> Shape:
        c, h, w = input_shape
        return (
            c,
            output_size(h, self.pool_h, self.stride, self.pad),
            output_size(w, self.pool_w, self.stride, self.pad),
        )

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        kernels = for_layout(self.layout)
        y, self._cache = kernels.maxpool_forward(x, self.pool_h, self.pool_w, self.stride, self.pad)
        return y

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return for_layout(self.layout).maxpool_backward(dout, self._cache)


class Affine(_WeightedLayer):
    """``x @ W + b`` on the flattened input; flattens in NCHW order whatever the layout."""

    def __init__(self, in_features: int, out_features: int, weight_init: str = "he") -> None:
        super().__init__()
        self.in_features = _at_least("in_features", in_features, 1)
        self.out_features = _at_least("out_features", out_features, 1)
        self.weight_init = init.check_name(weight_init)
        self.params["W"] = np.zeros((self.in_features, self.out_features), np.float32)
        self.params["b"] = np.zeros(self.out_features, np.float32)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._x2d: np.ndarray | None = None
        self._x_shape: Shape = ()

    def config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "weight_init": self.weight_init,
        }

    def output_shape(self, input_shape: Shape) -> Shape:
        n_in = int(np.prod(input_shape))
        if n_in != self.in_features:
            raise ValueError(f"Affine expects {self.in_features} inputs, got shape {input_shape}")
        return (self.out_features,)

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        self._x_shape = x.shape
        if self.layout == "NHWC" and x.ndim == 4:
            x = x.transpose(0, 3, 1, 2)  # back to NCHW so the flat order matches the weights
        self._x2d = x.reshape(x.shape[0], -1)
        out = self._x2d @ self.params["W"]
        out += self.params["b"]
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.grads["W"] = self._x2d.T @ dout
        self.grads["b"] = dout.sum(axis=0)
        dx = dout @ self.params["W"].T
        if self.layout == "NHWC" and len(self._x_shape) == 4:
            n, h, w, c = self._x_shape
            return np.ascontiguousarray(dx.reshape(n, c, h, w).transpose(0, 2, 3, 1))
        return dx.reshape(self._x_shape)


class ReLU(Layer):
    """``max(0, x)``; the gradient at exactly 0 is 0, as in the book.

    ``fused`` means the Convolution or BatchNormalization before it already applies the ReLU
    (forward) and its mask (backward) in its own passes; this layer then passes data through.
    """

    def __init__(self) -> None:
        super().__init__()
        self._mask: np.ndarray | None = None
        self.fused = False

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        if self.fused:
            return x
        self._mask = x > 0
        return np.maximum(x, 0, dtype=x.dtype)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if self.fused:
            return dout
        return dout * self._mask


DROPOUT_MODES = ("book", "inverted")


class Dropout(Layer):
    """Drop units with probability ``ratio`` at train time.

    ``mode="book"`` keeps surviving units unscaled and multiplies by ``1 - ratio`` at test time (the
    book's rule, needed for its published weights); ``mode="inverted"`` scales survivors by
    ``1 / (1 - ratio)`` at train time and is the identity at test time. Masks come from ``rng``
    (set by the model to ``Sequential.rng``). :meth:`hold_mask` freezes the last mask so that the
    network is a fixed function for gradient checking.
    """

    def __init__(self, ratio: float = 0.5, mode: str = "book") -> None:
        super().__init__()
        if not 0.0 <= float(ratio) < 1.0:
            raise ValueError(f"dropout ratio must be in [0, 1), got {ratio}")
        if mode not in DROPOUT_MODES:
            raise ValueError(f"unknown dropout mode {mode!r}; expected one of {DROPOUT_MODES}")
        self.ratio = float(ratio)
        self.mode = mode
        self.rng: np.random.Generator | None = None
        self.mask: np.ndarray | None = None
        self.held = False
        self._scale = 1.0
        self._train = False

    def config(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "mode": self.mode}

    def hold_mask(self, mask: np.ndarray | None = None) -> None:
        """Reuse ``mask`` (or the last drawn one) for every train-mode forward until released."""
        if mask is not None:
            self.mask = np.asarray(mask, dtype=bool)
        if self.mask is None and self.ratio > 0:
            raise ValueError("no dropout mask to hold: run a train-mode forward first")
        self.held = True

    def release_mask(self) -> None:
        self.held = False

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        self._train = train and self.ratio > 0
        if self.ratio == 0.0:  # nothing to drop or scale: no copy
            self._scale = 1.0
            return x
        if not train:
            self._scale = 1.0 - self.ratio if self.mode == "book" else 1.0
            return x * x.dtype.type(self._scale) if self._scale != 1.0 else x
        shape = self._public_shape(x.shape)
        if not self.held:
            self.mask = self._draw_mask(shape)
        elif self.mask.shape != shape:
            raise ValueError(f"held dropout mask has shape {self.mask.shape}, input {shape}")
        self._scale = 1.0 / (1.0 - self.ratio) if self.mode == "inverted" else 1.0
        return self._apply(x, self._mask_in_layout())

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if self._train:
            return self._apply(dout, self._mask_in_layout())
        return dout * dout.dtype.type(self._scale) if self._scale != 1.0 else dout

    def _public_shape(self, shape: Shape) -> Shape:
        """The NCHW shape of an input in this layer's layout: masks are drawn and held in it,
        so that one seed drops the same units on either backend."""
        if self.layout == "NHWC" and len(shape) == 4:
            n, h, w, c = shape
            return (n, c, h, w)
        return tuple(shape)

    def _mask_in_layout(self) -> np.ndarray:
        if self.layout == "NHWC" and self.mask.ndim == 4:
            return self.mask.transpose(0, 2, 3, 1)
        return self.mask

    def _draw_mask(self, shape: Shape) -> np.ndarray:
        if self.rng is None:
            raise ValueError("Dropout needs a Generator: set .rng (Sequential does)")
        return self.rng.random(shape, dtype=np.float32) >= self.ratio

    def _apply(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = x * mask
        if self._scale != 1.0:
            out *= x.dtype.type(self._scale)
        return out


class BatchNormalization(Layer):
    """Normalise each feature (2-D input) or channel (4-D input, axis by layout) over the batch.

    Train mode uses the batch statistics and updates the running ones
    (``running = momentum * running + (1 - momentum) * batch``, biased variance, as in the book);
    eval mode uses the running statistics.
    """

    def __init__(self, num_features: int, momentum: float = 0.9, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_features = _at_least("num_features", num_features, 1)
        self.momentum, self.eps = float(momentum), float(eps)
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"batchnorm momentum must be in [0, 1], got {momentum!r}")
        if not (self.eps >= 0.0 and math.isfinite(self.eps)):
            raise ValueError(f"batchnorm eps must be finite and >= 0, got {eps!r}")
        self.params["gamma"] = np.ones(self.num_features, np.float32)
        self.params["beta"] = np.zeros(self.num_features, np.float32)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.buffers["running_mean"] = np.zeros(self.num_features, np.float32)
        self.buffers["running_var"] = np.ones(self.num_features, np.float32)
        self._cache: Any = None
        # Set by Sequential (fast backend) when the next layer is a ReLU it runs here.
        self.fused_relu = False

    def config(self) -> dict[str, Any]:
        return {"num_features": self.num_features, "momentum": self.momentum, "eps": self.eps}

    def output_shape(self, input_shape: Shape) -> Shape:
        _check_channels("BatchNormalization", self.num_features, input_shape)
        return tuple(input_shape)

    def initialize(self, rng: np.random.Generator) -> None:
        self.params["gamma"][...] = 1
        self.params["beta"][...] = 0
        self.buffers["running_mean"][...] = 0
        self.buffers["running_var"][...] = 1

    def _axes_and_shape(self, x: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Reduction axes and the broadcast shape of per-channel vectors for this input."""
        if x.ndim == 2:
            return (0,), (1, -1)
        if x.ndim == 4 and self.layout == "NCHW":
            return (0, 2, 3), (1, -1, 1, 1)
        if x.ndim == 4:
            return (0, 1, 2), (1, 1, 1, -1)
        raise ValueError(f"BatchNormalization expects a 2-D or 4-D input, got shape {x.shape}")

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        if self.layout == "NHWC":
            return self._forward_fast(x, train)
        if self.fused_relu:
            raise ValueError("a fused ReLU needs the NHWC (fast) layout")
        axes, bshape = self._axes_and_shape(x)
        gamma = self.params["gamma"].reshape(bshape)
        beta = self.params["beta"].reshape(bshape)
        if train:
            mean = x.mean(axis=axes)
            xc = x - mean.reshape(bshape)
            var = np.mean(xc * xc, axis=axes)
            self._update_running(mean, var)
        else:
            xc = x - self.buffers["running_mean"].reshape(bshape)
            var = self.buffers["running_var"]
        inv_std = (1.0 / np.sqrt(var + x.dtype.type(self.eps))).astype(x.dtype).reshape(bshape)
        xn = xc * inv_std
        self._cache = (train, axes, bshape, xn, inv_std)
        return xn * gamma + beta

    def _update_running(self, mean: np.ndarray, var: np.ndarray) -> None:
        m = self.momentum
        self.buffers["running_mean"] *= m
        self.buffers["running_mean"] += (1 - m) * mean
        self.buffers["running_var"] *= m
        self.buffers["running_var"] += (1 - m) * var

    def _forward_fast(self, x: np.ndarray, train: bool) -> np.ndarray:
        """Channels-last kernel (:func:`deepconvnet.kernels.fast.batchnorm_forward`)."""
        kernels = for_layout(self.layout)
        stats = (
            (None, None) if train else (self.buffers["running_mean"], self.buffers["running_var"])
        )
        gamma, beta = self.params["gamma"], self.params["beta"]
        y, mean, var, cache = kernels.batchnorm_forward(
            x, gamma, beta, *stats, x.dtype.type(self.eps), relu=self.fused_relu
        )
        if train:
            self._update_running(mean, var)
        self._cache = (train, cache)
        return y

    @property
    def normalised_batch(self) -> bool:
        """Whether the last forward normalised by the batch's own statistics (train mode)."""
        return self._cache is not None and bool(self._cache[0])

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if self.layout == "NHWC":  # the same choice as forward's
            train, cache = self._cache
            kernels = for_layout(self.layout)
            dx, self.grads["gamma"], self.grads["beta"] = kernels.batchnorm_backward(
                dout, cache, train
            )
            return dx
        train, axes, bshape, xn, inv_std = self._cache
        self.grads["beta"] = dout.sum(axis=axes)
        self.grads["gamma"] = (dout * xn).sum(axis=axes)
        dxn = dout * self.params["gamma"].reshape(bshape)
        if not train:
            return dxn * inv_std
        count = dout.size // self.num_features
        dbeta = self.grads["beta"].reshape(bshape)
        dgamma = self.grads["gamma"].reshape(bshape)
        gamma = self.params["gamma"].reshape(bshape)
        # dx = inv_std * (dxn - mean(dxn) - xn * mean(dxn * xn)), with sums taken from the grads.
        return inv_std * (dxn - (gamma * dbeta + xn * gamma * dgamma) / dout.dtype.type(count))


class SoftmaxWithLoss(Layer):
    """Softmax + mean cross-entropy over the batch, numerically stable (log-sum-exp).

    ``t`` holds integer class indices (N,) or one-hot / probability rows (N, K).
    """

    def __init__(self) -> None:
        super().__init__()
        self.y: np.ndarray | None = None
        self.t: np.ndarray | None = None
        self.loss: float | None = None

    def forward(self, x: np.ndarray, t: np.ndarray) -> float:  # type: ignore[override]
        shifted = x - x.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        sum_exp = exp.sum(axis=1, keepdims=True)
        log_probs = shifted - np.log(sum_exp)
        exp /= sum_exp
        self.y, self.t = exp, np.asarray(t)
        n = x.shape[0]
        if self.t.ndim == 1:
            picked = log_probs[np.arange(n), self.t.astype(np.intp, copy=False)]
            self.loss = -float(picked.sum()) / n
        else:
            self.loss = -float(np.sum(self.t * log_probs)) / n
        return self.loss

    def backward(self, dout: float = 1.0) -> np.ndarray:
        n = self.y.shape[0]
        if self.t.ndim == 1:
            dx = self.y.copy()
            dx[np.arange(n), self.t.astype(np.intp, copy=False)] -= 1
        else:
            dx = self.y - self.t.astype(self.y.dtype, copy=False)
        dx *= self.y.dtype.type(dout / n)
        return dx


def softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable, in x's dtype."""
    out = x - x.max(axis=1, keepdims=True)
    np.exp(out, out=out)
    out /= out.sum(axis=1, keepdims=True)
    return out


LAYER_TYPES: dict[str, type[Layer]] = {
    cls.__name__: cls
    for cls in (
        Convolution,
        MaxPooling,
        Affine,
        ReLU,
        Dropout,
        BatchNormalization,
        SoftmaxWithLoss,
    )
}


def layer_from_spec(spec: dict[str, Any]) -> Layer:
    """Rebuild a layer from :meth:`Layer.spec`; raises KeyError/TypeError on a bad spec."""
    args = dict(spec)
    kind = args.pop("type")
    return LAYER_TYPES[kind](**args)
