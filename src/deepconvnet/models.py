"""Models: :class:`Sequential` (built from layers or a JSON spec), DeepConvNet, a registry, and the
receptive-field / parameter / multiply-add arithmetic that ``summary`` and analysis share.

A model's public input is NCHW, float. The backend decides the internal layout: ``"reference"``
runs NCHW on the book's im2col kernels; ``"fast"`` transposes the input to NHWC once at the entry
and runs the fast kernels. Parameters keep one shape either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from deepconvnet import kernels
from deepconvnet.errors import DeepConvNetError
from deepconvnet.layers import (
    Affine,
    BatchNormalization,
    Convolution,
    Dropout,
    Layer,
    MaxPooling,
    ReLU,
    SoftmaxWithLoss,
    layer_from_spec,
    softmax,
)

BACKENDS = ("fast", "reference")
# Images per inference batch: small enough for the activations to stay in cache (measured faster
# than 1,000, at a third of the memory).
INFERENCE_BATCH = 200
SPEC_VERSION = 1


def default_backend() -> str:
    """``"fast"`` when :mod:`deepconvnet.kernels.fast` imports, else ``"reference"``."""
    return "fast" if kernels.fast_available() else "reference"


def _input_shape(shape: Iterable[Any]) -> tuple[int, ...]:
    """A per-sample shape of positive integers, else a ValueError (a spec is untrusted)."""
    dims = tuple(shape)
    if not dims or any(
        isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 1 for d in dims
    ):
        raise ValueError(f"input_shape must be positive integers, got {list(dims)!r}")
    return tuple(int(d) for d in dims)


class Sequential:
    """A stack of layers ending (optionally) in :class:`SoftmaxWithLoss`.

    ``rng`` is the Generator for dropout masks and initialisation (default: seed 0, so that an
    unseeded model is still reproducible). Parameters are named ``"{index}.{name}"``.
    """

    def __init__(
        self,
        layers: Iterable[Layer],
        input_shape: tuple[int, ...] = (1, 28, 28),
        rng: np.random.Generator | None = None,
        name: str | None = None,
        dtype: np.dtype | type = np.float32,
        backend: str = "reference",
    ) -> None:
        self.layers: list[Layer] = list(layers)
        self.input_shape = _input_shape(input_shape)
        self.name = name or "sequential"
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        losses = [i for i, layer in enumerate(self.layers) if isinstance(layer, SoftmaxWithLoss)]
        if losses and losses != [len(self.layers) - 1]:
            raise ValueError("SoftmaxWithLoss can only be the last layer, once")
        self.loss_layer = self.layers[-1] if losses else None
        self.body = self.layers[:-1] if self.loss_layer is not None else self.layers
        if not self.body:
            raise ValueError("a model needs at least one layer before its loss")
        self._normalised_outputs = [  # see _biases_before_batchnorm
            (layer, after)
            for layer, after in zip(self.body, self.body[1:], strict=False)
            if isinstance(layer, Convolution | Affine) and isinstance(after, BatchNormalization)
        ]
        self.rng = rng if rng is not None else np.random.default_rng(0)
        for layer in self.layers:
            layer.astype(self.dtype)
        self.backend = "reference"
        self.set_backend(backend)
        output = self.output_shapes()[-1]  # fails early on an inconsistent stack
        if self.loss_layer is not None and len(output) != 1:
            # Class scores must be (N, K): a softmax over a 3-D map would read the backend's
            # internal layout (NCHW or NHWC) and give a different loss on each.
            raise DeepConvNetError(
                f"{self.name}: the layers before the loss output {output}, not class scores "
                "(end them with an Affine layer)"
            )

    # -- construction -----------------------------------------------------------------------
    @property
    def rng(self) -> np.random.Generator:
        return self._rng

    @rng.setter
    def rng(self, rng: np.random.Generator) -> None:
        self._rng = rng
        for layer in self.layers:
            if isinstance(layer, Dropout):
                layer.rng = rng

    def initialize(self, rng: np.random.Generator | None = None) -> Sequential:
        """Draw every parameter afresh from ``rng`` (default: the model's)."""
        rng = rng if rng is not None else self.rng
        for layer in self.layers:
            layer.initialize(rng)
        return self

    def spec(self) -> dict[str, Any]:
        """Plain-JSON description from which :meth:`from_spec` rebuilds the architecture."""
        return {
            "version": SPEC_VERSION,
            "name": self.name,
            "input_shape": list(self.input_shape),
            "dtype": self.dtype.name,
            "layers": [layer.spec() for layer in self.layers],
        }

    @classmethod
    def from_spec(
        cls,
        spec: dict[str, Any],
        rng: np.random.Generator | None = None,
        *,
        initialize: bool = True,
        **overrides: Any,
    ) -> Sequential:
        """Rebuild a model (freshly initialised from ``rng`` unless ``initialize`` is false, for a
        caller about to overwrite every parameter) from :meth:`spec`.

        Raises :class:`DeepConvNetError` naming the problem for an unusable spec, including one
        too large to allocate (a spec in a file is untrusted input).
        """
        try:
            version = spec.get("version", SPEC_VERSION)
            if version != SPEC_VERSION:
                raise DeepConvNetError(
                    f"model spec version {version!r} is not {SPEC_VERSION}, the one this "
                    "deepconvnet reads"
                )
            layer_specs = spec["layers"]
            layers = []
            for i, layer_spec in enumerate(layer_specs):
                try:
                    layers.append(layer_from_spec(layer_spec))
                except KeyError as exc:
                    raise DeepConvNetError(
                        f"layer {i}: unknown layer type {layer_spec.get('type')!r}"
                    ) from exc
                except (TypeError, ValueError) as exc:
                    raise DeepConvNetError(f"layer {i}: bad arguments ({exc})") from exc
            kwargs = {
                "input_shape": tuple(spec["input_shape"]),
                "name": spec.get("name"),
                "dtype": spec.get("dtype", "float32"),
            }
            kwargs.update(overrides)
            model = cls(layers, rng=rng, **kwargs)
            return model.initialize() if initialize else model
        except DeepConvNetError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise DeepConvNetError(f"invalid model spec: {type(exc).__name__}: {exc}") from exc
        except MemoryError as exc:
            raise DeepConvNetError(f"invalid model spec: too large to build ({exc})") from exc

    def copy(self, dtype: np.dtype | type | None = None) -> Sequential:
        """An independent copy (same parameters and buffers), optionally in another dtype."""
        model = Sequential.from_spec(
            self.spec(),
            rng=np.random.default_rng(0),
            dtype=np.dtype(dtype or self.dtype),
            backend=self.backend,
        )
        for key, arr in {**self.params(), **self.buffers()}.items():
            model.array(key)[...] = arr
        return model

    @property
    def _biases_before_batchnorm(self) -> list[Layer]:
        """Convolutions and Affines whose output a BatchNormalization has just normalised by
        the batch's statistics (train mode): their bias shifts every value of a channel alike,
        which that normalisation removes, so its gradient is exactly 0. Computed, it is
        round-off (~1e-6 in float32), which Adam would scale up to steps of ``lr``: a random walk
        that makes eval-mode results depend on thread count. (With running statistics, in eval
        mode, the bias does count.)"""
        return [layer for layer, after in self._normalised_outputs if after.normalised_batch]

    def set_backend(self, backend: str) -> None:
        """Switch kernels: ``"fast"`` (NHWC inside) or ``"reference"`` (NCHW, the book's)."""
        if backend not in BACKENDS:
            raise DeepConvNetError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
        if backend == "fast":
            kernels.load_fast()  # a clear error now rather than at the first forward
        layout = "NHWC" if backend == "fast" else "NCHW"
        for layer in self.layers:
            layer.layout = layout
        self.backend = backend
        self._fuse_relu(backend == "fast")

    def _fuse_relu(self, fuse: bool) -> None:
        """Run each ReLU that follows a Convolution or BatchNorm inside it (fast backend only).

        The fused ReLU costs no pass of its own over the activations: the convolution rectifies
        each block it has just written and masks ``dy`` while copying it onto its grid; BatchNorm
        rectifies its output in place. The reference backend keeps the book's separate layers.
        """
        for layer, after in zip(self.body, self.body[1:], strict=False):
            if isinstance(layer, Convolution | BatchNormalization) and isinstance(after, ReLU):
                layer.fused_relu = after.fused = fuse

    # -- computation ------------------------------------------------------------------------
    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """Class scores (N, K) for NCHW input ``x`` (no softmax)."""
        x = np.asarray(x, dtype=self.dtype)
        if self.backend == "fast" and x.ndim == 4:
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        for layer in self.body:
            x = layer.forward(x, train=train)
        return x

    def loss(self, x: np.ndarray, t: np.ndarray, train: bool = True) -> float:
        """Mean cross-entropy of the batch; leaves what :meth:`backward` needs."""
        if self.loss_layer is None:
            raise DeepConvNetError(f"model {self.name!r} has no loss layer")
        return self.loss_layer.forward(self.forward(x, train=train), t)

    def backward(self, input_grad: bool = True) -> np.ndarray | None:
        """Fill every layer's grads after :meth:`loss`; returns dL/dx (NCHW).

        ``input_grad=False`` (training) returns None and lets a first Convolution skip its
        input gradient.
        """
        dout = self.loss_layer.backward(1.0)
        for layer in reversed(self.body[1:]):
            dout = layer.backward(dout)
        first = self.body[0]
        if isinstance(first, Convolution):
            dout = first.backward(dout, input_grad=input_grad)
        else:
            dout = first.backward(dout)
        for layer in self._biases_before_batchnorm:
            layer.grads["b"].fill(0)
        if not input_grad:
            return None
        if self.backend == "fast" and dout.ndim == 4:
            dout = dout.transpose(0, 3, 1, 2)
        return dout

    def predict_proba(self, x: np.ndarray, batch_size: int = INFERENCE_BATCH) -> np.ndarray:
        """Softmax probabilities (N, K) in eval mode, batch by batch."""
        chunks = [
            softmax(self.forward(x[i : i + batch_size], train=False))
            for i in range(0, len(x), batch_size)
        ]
        if not chunks:
            return np.zeros((0, self.output_shapes()[-1][0]), dtype=self.dtype)
        return np.concatenate(chunks)

    def predict(self, x: np.ndarray, batch_size: int = INFERENCE_BATCH) -> np.ndarray:
        """Predicted class indices (N,)."""
        return self.predict_proba(x, batch_size).argmax(axis=1)

    def accuracy(self, x: np.ndarray, t: np.ndarray, batch_size: int = INFERENCE_BATCH) -> float:
        """Fraction of correct predictions (``t`` as indices or one-hot)."""
        t = np.asarray(t)
        if t.ndim == 2:
            t = t.argmax(axis=1)
        return float(np.mean(self.predict(x, batch_size) == t)) if len(t) else 0.0

    # -- arrays -----------------------------------------------------------------------------
    def params(self) -> dict[str, np.ndarray]:
        """``"{index}.{name}"`` -> the live parameter arrays (optimizers update them in place)."""
        return {
            f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.params.items()
        }

    def grads(self) -> dict[str, np.ndarray]:
        """Gradients, same keys as :meth:`params`."""
        return {
            f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.grads.items()
        }

    def buffers(self) -> dict[str, np.ndarray]:
        """Non-trained state (BatchNorm running statistics), ``"{index}.{name}"``."""
        return {
            f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.buffers.items()
        }

    def array(self, key: str) -> np.ndarray:
        """The live parameter or buffer named ``key``."""
        index, _, name = key.partition(".")
        layer = self.layers[int(index)]
        return layer.params[name] if name in layer.params else layer.buffers[name]

    def num_params(self) -> int:
        return int(sum(p.size for p in self.params().values()))

    def output_shapes(self) -> list[tuple[int, ...]]:
        """Per-sample NCHW output shape of every layer of the body (not the loss)."""
        shapes, shape = [], self.input_shape
        for layer in self.body:
            try:
                shape = layer.output_shape(shape)
            except ValueError as exc:
                raise DeepConvNetError(f"{self.name}: {type(layer).__name__}: {exc}") from exc
            shapes.append(shape)
        return shapes

    def dropout_layers(self) -> list[Dropout]:
        return [layer for layer in self.layers if isinstance(layer, Dropout)]

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential(name={self.name!r}, input_shape={self.input_shape}, [\n  {inner}\n])"


# -- DeepConvNet ------------------------------------------------------------------------------
DEEPCONVNET_WIDTHS = (16, 16, 32, 32, 64, 64)
DEEPCONVNET_PADS = (1, 1, 1, 2, 1, 1)


def deepconvnet_layers(
    input_shape: tuple[int, ...] = (1, 28, 28),
    widths: tuple[int, ...] = DEEPCONVNET_WIDTHS,
    hidden_size: int = 50,
    output_size: int = 10,
    dropout_ratio: float = 0.5,
    dropout_mode: str = "book",
    pads: tuple[int, ...] = DEEPCONVNET_PADS,
    weight_init: str = "he",
) -> list[Layer]:
    """The layers of figure 8-1: three blocks of (conv-ReLU, conv-ReLU, pool), then two affines.

    Every conv is 3x3; pads are the book's (the fourth conv pads 2, making 14 -> 16 -> 8).
    The first affine's fan-in is computed from the shapes, so widths can change freely.
    """
    if len(widths) != 6 or len(pads) != 6:
        raise DeepConvNetError("DeepConvNet needs 6 conv widths and 6 pads")
    layers: list[Layer] = []
    channels = input_shape[0]
    for i, (width, pad) in enumerate(zip(widths, pads, strict=True)):
        layers += [Convolution(channels, width, 3, 1, pad, weight_init), ReLU()]
        channels = width
        if i % 2 == 1:
            layers.append(MaxPooling(2, 2, 2))
    flat = int(np.prod(_shape_through(layers, input_shape)))
    return layers + classifier_head(
        flat, hidden_size, output_size, dropout_ratio, dropout_mode, weight_init
    )


def classifier_head(
    in_features: int,
    hidden_size: int,
    output_size: int,
    dropout_ratio: float,
    dropout_mode: str,
    weight_init: str,
) -> list[Layer]:
    """Figure 8-1's head: affine - ReLU - dropout - affine - dropout - softmax-with-loss."""
    return [
        Affine(in_features, hidden_size, weight_init),
        ReLU(),
        Dropout(dropout_ratio, dropout_mode),
        Affine(hidden_size, output_size, weight_init),
        Dropout(dropout_ratio, dropout_mode),
        SoftmaxWithLoss(),
    ]


def _shape_through(layers: list[Layer], shape: tuple[int, ...]) -> tuple[int, ...]:
    for layer in layers:
        shape = layer.output_shape(shape)
    return shape


def deepconvnet(
    *,
    rng: np.random.Generator | None = None,
    dtype: np.dtype | type = np.float32,
    input_shape: tuple[int, ...] = (1, 28, 28),
    backend: str | None = None,
    batchnorm: bool = False,
    **kwargs: Any,
) -> Sequential:
    """DeepConvNet of figure 8-1 (123,552 parameters at the default widths), He-initialised.

    ``batchnorm=True`` inserts BatchNormalization after every conv and the hidden affine.
    Other keyword arguments go to :func:`deepconvnet_layers`.
    """
    layers = deepconvnet_layers(input_shape=input_shape, **kwargs)
    if batchnorm:
        layers = _with_batchnorm(layers)
    model = Sequential(layers, input_shape=input_shape, rng=rng, name="deepconvnet", dtype=dtype)
    model.initialize()
    model.set_backend(backend or default_backend())
    return model


def _with_batchnorm(layers: list[Layer]) -> list[Layer]:
    """Insert BatchNormalization right after every conv and every affine but the last."""
    last_affine = max(i for i, layer in enumerate(layers) if isinstance(layer, Affine))
    out: list[Layer] = []
    for i, layer in enumerate(layers):
        out.append(layer)
        if isinstance(layer, Convolution):
            out.append(BatchNormalization(layer.out_channels))
        elif isinstance(layer, Affine) and i != last_affine:
            out.append(BatchNormalization(layer.out_features))
    return out


def deepconvnet_bn(
    *,
    rng: np.random.Generator | None = None,
    dtype: np.dtype | type = np.float32,
    input_shape: tuple[int, ...] = (1, 28, 28),
    backend: str | None = None,
    hidden_size: int = 128,
    dropout_ratio: float = 0.3,
    **kwargs: Any,
) -> Sequential:
    """``"deepconvnet-bn"``: figure 8-1 with BatchNorm, for the ensemble accuracy targets.

    The same blocks and widths as the book's net (six 3x3 convs 16-16-32-32-64-64, ReLU, three 2x2
    max-pools), with three changes that make it train faster and generalise better under
    augmentation: BatchNormalization after every conv and after the hidden affine; a hidden layer of
    128 units instead of 50; inverted dropout 0.3 after the hidden layer only (the book also drops
    30-50% of the ten class scores, which fights BatchNorm's scale). 204,986 parameters (the book's
    net has 123,552), and about twice its time per epoch on the fast kernels (13.5 against 6.9 s per
    10,000 images, ``bench/augment_cost.py``). Figure 8-1's network stays the default model.
    """
    layers = deepconvnet_layers(
        input_shape=input_shape,
        hidden_size=hidden_size,
        dropout_ratio=dropout_ratio,
        dropout_mode=kwargs.pop("dropout_mode", "inverted"),
        **kwargs,
    )
    layers = _with_batchnorm(layers)
    del layers[-2]  # the dropout over the class scores (just before SoftmaxWithLoss)
    model = Sequential(layers, input_shape=input_shape, rng=rng, name="deepconvnet-bn", dtype=dtype)
    model.initialize()
    model.set_backend(backend or default_backend())
    return model


ModelFactory = Callable[..., Sequential]
MODELS: dict[str, ModelFactory] = {"deepconvnet": deepconvnet, "deepconvnet-bn": deepconvnet_bn}


def build_model(
    name: str,
    *,
    rng: np.random.Generator | None = None,
    dtype: np.dtype | type = np.float32,
    **kwargs: Any,
) -> Sequential:
    """Build a registered model by name; unknown names raise a one-line DeepConvNetError."""
    try:
        factory = MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise DeepConvNetError(f"unknown model {name!r}; known models: {known}") from None
    return factory(rng=rng, dtype=dtype, **kwargs)


# -- the depth experiment's pair (stacked 3x3 vs single large filters, equal receptive field)
DEPTH_WIDTHS = (16, 32)
# Kernel sizes of each stage's convolutions; both stages end in a 2x2 max-pool.
DEPTH_STAGES: dict[str, tuple[tuple[int, ...], ...]] = {
    "depth-stack3x3": ((3, 3), (3, 3, 3)),
    "depth-large": ((5,), (7,)),
}
DEPTH_MODELS = tuple(DEPTH_STAGES)


def depth_layers(
    stages: Sequence[Sequence[int]],
    widths: Sequence[int] = DEPTH_WIDTHS,
    input_shape: tuple[int, ...] = (1, 28, 28),
    hidden_size: int = 50,
    output_size: int = 10,
    dropout_ratio: float = 0.5,
    dropout_mode: str = "book",
    weight_init: str = "he",
) -> list[Layer]:
    """Conv stages ('same' padding, ReLU after each conv, 2x2 max-pool after each stage) + head."""
    if len(stages) != len(widths):
        raise DeepConvNetError(f"{len(stages)} stages but {len(widths)} widths")
    layers: list[Layer] = []
    channels = input_shape[0]
    for kernel_sizes, width in zip(stages, widths, strict=True):
        for k in kernel_sizes:
            if k % 2 != 1:
                raise DeepConvNetError(f"kernel size {k} is even; 'same' padding needs odd sizes")
            layers += [Convolution(channels, width, k, 1, k // 2, weight_init), ReLU()]
            channels = width
        layers.append(MaxPooling(2, 2, 2))
    shape = _shape_through(layers, input_shape)
    return layers + classifier_head(
        int(np.prod(shape)), hidden_size, output_size, dropout_ratio, dropout_mode, weight_init
    )


def _depth_factory(name: str) -> Callable[..., Sequential]:
    def build(
        *,
        rng: np.random.Generator | None = None,
        dtype: np.dtype | type = np.float32,
        input_shape: tuple[int, ...] = (1, 28, 28),
        backend: str | None = None,
        **kwargs: Any,
    ) -> Sequential:
        layers = depth_layers(DEPTH_STAGES[name], input_shape=input_shape, **kwargs)
        model = Sequential(layers, input_shape=input_shape, rng=rng, name=name, dtype=dtype)
        model.initialize()
        model.set_backend(backend or default_backend())
        return model

    build.__doc__ = f"The {name} network of the depth experiment ({DEPTH_STAGES[name]})."
    return build


for _name in DEPTH_MODELS:
    MODELS[_name] = _depth_factory(_name)


# -- summary arithmetic -----------------------------------------------------------------------
def layer_geometry(layer: Layer) -> tuple[int, int, int] | None:
    """(kernel_h, kernel_w, stride) of a spatial layer, or None for point-wise / dense layers."""
    if isinstance(layer, Convolution):
        return layer.kernel_size[0], layer.kernel_size[1], layer.stride
    if isinstance(layer, MaxPooling):
        return layer.pool_h, layer.pool_w, layer.stride
    return None


def layer_macs(layer: Layer, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> int:
    """Multiply-adds per image: conv = out pixels * F * C*kh*kw; affine = in*out; others 0."""
    if isinstance(layer, Convolution):
        kh, kw = layer.kernel_size
        return int(np.prod(output_shape)) * layer.in_channels * kh * kw
    if isinstance(layer, Affine):
        return layer.in_features * layer.out_features
    return 0


def layer_summary(model: Sequential) -> list[dict[str, Any]]:
    """One row per body layer: name, type, output_shape, params, receptive_field, macs.

    The receptive field is the side (in input pixels, padding included) of the window of input a
    single output unit depends on: ``r += (k - 1) * jump``, ``jump *= stride`` through conv and
    pool layers, along each axis; a non-square window is reported by its larger side. A dense
    unit sees all its input: the larger of the image's side and the field below it.
    """
    rows, shape = [], model.input_shape
    rf, jump = [1, 1], [1, 1]  # (height, width)
    whole = max(model.input_shape[1:]) if len(model.input_shape) == 3 else 1
    for i, layer in enumerate(model.body):
        out_shape = layer.output_shape(shape)
        geometry = layer_geometry(layer)
        if geometry is not None:
            *kernel, stride = geometry
            for axis, k in enumerate(kernel):
                rf[axis] += (k - 1) * jump[axis]
                jump[axis] *= stride
        elif isinstance(layer, Affine):
            rf = [max(side, whole) for side in rf]  # a dense unit sees everything below it
        rows.append(
            {
                "name": f"{i}.{type(layer).__name__}",
                "type": type(layer).__name__,
                "output_shape": list(out_shape),
                "params": int(sum(p.size for p in layer.params.values())),
                "receptive_field": int(max(rf)),
                "macs": int(layer_macs(layer, shape, out_shape)),
            }
        )
        shape = out_shape
    return rows


def model_summary(model: Sequential) -> dict[str, Any]:
    """Totals plus :func:`layer_summary` rows.

    Keys: ``"name"``, ``"input_shape"`` (per sample, CHW), ``"params"``, ``"macs"``, ``"layers"``.
    """
    rows = layer_summary(model)
    return {
        "name": model.name,
        "input_shape": list(model.input_shape),
        "params": sum(r["params"] for r in rows),
        "macs": sum(r["macs"] for r in rows),
        "layers": rows,
    }


def compare_stacked_filters(max_depth: int = 4, kernel: int = 3) -> list[dict[str, Any]]:
    """Stacks of ``depth`` kxk convs vs one filter of the same receptive field (the book's 8.1.1).

    Weights are per (input channel, output channel) pair, taken from actual layers: for 3x3,
    depth 2 gives 18 vs 25 and depth 3 gives 27 vs 49.
    """
    rows = []
    for depth in range(1, max_depth + 1):
        stack = Sequential(
            [Convolution(1, 1, kernel) for _ in range(depth)],
            input_shape=(1, 64, 64),
            name=f"{depth}x{kernel}x{kernel}",
        )
        rf = layer_summary(stack)[-1]["receptive_field"]
        single = Sequential([Convolution(1, 1, rf)], input_shape=(1, 64, 64))
        stacked_weights = sum(layer.params["W"].size for layer in stack.layers)
        single_weights = single.layers[0].params["W"].size
        rows.append(
            {
                "layers": depth,
                "receptive_field": rf,
                "stacked_weights": int(stacked_weights),
                "single_filter": f"{rf}x{rf}",
                "single_weights": int(single_weights),
                "ratio": stacked_weights / single_weights,
            }
        )
    return rows
