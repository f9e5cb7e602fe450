import copy

import numpy as np
import pytest

from deepconvnet.checkpoint import SPEC_KEY, load_model, save_model
from deepconvnet.errors import CheckpointError, DeepConvNetError
from deepconvnet.fileio import atomic_save_npz, json_to_array, load_npz
from deepconvnet.gradcheck import check_model
from deepconvnet.layers import (
    Affine,
    BatchNormalization,
    Convolution,
    MaxPooling,
    ReLU,
    SoftmaxWithLoss,
)
from deepconvnet.models import Sequential, build_model
from deepconvnet.optimizers import build_optimizer


def test_figure_8_1_shapes_and_parameter_count(rng):
    model = build_model("deepconvnet", rng=rng, backend="reference")
    assert model.num_params() == 123552
    spatial = [s[1] for s in model.output_shapes() if len(s) == 3]
    assert sorted(set(spatial), reverse=True) == [28, 16, 14, 8, 4]
    convs = [
        s
        for layer, s in zip(model.body, model.output_shapes(), strict=True)
        if type(layer).__name__ in ("Convolution", "MaxPooling")
    ]
    assert [s[1] for s in convs] == [28, 28, 14, 14, 16, 8, 8, 8, 4]
    assert model.layers[15].in_features == 1024


def test_whole_deepconvnet_gradients(rng):
    model = build_model("deepconvnet", rng=rng, dtype=np.float64, backend="reference")
    x = rng.random((2, 1, 28, 28))
    result = check_model(model, x, np.array([1, 8]), rng, n_samples=3)
    assert result["max_relative_error"] < 1e-6, result


def test_spec_round_trip_gives_identical_outputs(rng):
    model = build_model("deepconvnet", rng=rng, backend="reference", dropout_mode="inverted")
    clone = Sequential.from_spec(model.spec(), rng=np.random.default_rng(99))
    for key, arr in model.params().items():
        clone.params()[key][...] = arr
    x = rng.random((3, 1, 28, 28), dtype=np.float32)
    assert np.array_equal(clone.predict_proba(x), model.predict_proba(x))
    assert clone.predict_proba(x).dtype == np.float32


def _small_spec() -> dict:
    """conv -> relu -> pool -> affine -> softmax on 1x8x8: every layer kind a spec can break."""
    model = Sequential(
        [
            Convolution(1, 2, 3, 1, 1),
            BatchNormalization(2),
            ReLU(),
            MaxPooling(2, 2, 2),
            Affine(32, 10),
            SoftmaxWithLoss(),
        ],
        input_shape=(1, 8, 8),
    )
    return model.spec()


# (layer index, key, bad value, words the one-line message must contain)
BAD_LAYER_ARGS = [
    (0, "stride", 0, "stride must be >= 1"),
    (0, "kernel_size", [0, 0], "kernel height must be >= 1"),
    (0, "kernel_size", [3, -1], "kernel width must be >= 1"),
    (0, "pad", -1, "pad must be >= 0"),
    (0, "in_channels", 3, "Convolution expects 3 channels"),
    (0, "out_channels", 0, "out_channels must be >= 1"),
    (1, "num_features", 5, "BatchNormalization expects 5 channels"),
    (1, "momentum", 1.5, "momentum must be in [0, 1]"),
    (3, "stride", 0, "stride must be >= 1"),
    (3, "pool_h", 0, "pool_h must be >= 1"),
    (3, "pad", 2, "must be smaller than the pooling window"),
    (4, "out_features", 0, "out_features must be >= 1"),
]


@pytest.mark.parametrize("index,key,value,words", BAD_LAYER_ARGS)
def test_bad_layer_arguments_in_a_spec_are_one_line_errors(index, key, value, words):
    spec = copy.deepcopy(_small_spec())
    spec["layers"][index][key] = value
    with pytest.raises(DeepConvNetError) as excinfo:
        Sequential.from_spec(spec)
    message = str(excinfo.value)
    assert words in message and "\n" not in message


@pytest.mark.parametrize("index,key,value,words", BAD_LAYER_ARGS[:2])
def test_bad_layer_spec_in_model_npz_is_a_checkpoint_error(tmp_path, index, key, value, words):
    path = save_model(tmp_path / "model.npz", Sequential.from_spec(_small_spec()))
    arrays = load_npz(path)
    spec = _small_spec()
    spec["layers"][index][key] = value
    arrays[SPEC_KEY] = json_to_array(spec)
    atomic_save_npz(path, arrays)
    with pytest.raises(CheckpointError) as excinfo:
        load_model(path)
    message = str(excinfo.value)
    assert message.startswith(f"{path}: layer {index}: bad arguments")
    assert words in message and "\n" not in message


def test_unknown_model_is_a_user_error(rng):
    with pytest.raises(DeepConvNetError, match="unknown model"):
        build_model("resnet", rng=rng)


def test_overfits_100_images(rng):
    model = build_model("deepconvnet", rng=rng, backend="reference", dropout_ratio=0.0)
    x = rng.random((100, 1, 28, 28), dtype=np.float32)
    t = rng.integers(0, 10, 100)
    opt = build_optimizer("adam", lr=0.003)
    for step in range(120):
        model.loss(x, t)
        model.backward()
        opt.step(model.params(), model.grads())
        if step % 5 == 4 and model.accuracy(x, t) == 1.0:
            break
    assert model.accuracy(x, t) == 1.0


def test_fast_backend_fuses_relus_and_reference_keeps_them_apart():
    model = build_model("deepconvnet", backend="fast")
    fused = [layer.fused_relu for layer in model.layers if isinstance(layer, Convolution)]
    assert fused == [True] * 6
    assert sum(isinstance(layer, ReLU) and layer.fused for layer in model.layers) == 6
    model.set_backend("reference")
    assert not any(getattr(layer, "fused_relu", False) for layer in model.layers)
    assert not any(getattr(layer, "fused", False) for layer in model.layers)
    bn = build_model("deepconvnet-bn", backend="fast")  # conv - BatchNorm - ReLU: into BatchNorm
    fused_into = [type(layer).__name__ for layer in bn.layers if getattr(layer, "fused_relu", 0)]
    assert fused_into == ["BatchNormalization"] * 7


@pytest.mark.parametrize("backend", ["fast", "reference"])
def test_backward_without_input_grad_gives_the_same_parameter_gradients(backend, rng):
    model = build_model("deepconvnet", backend=backend, rng=np.random.default_rng(3))
    x = rng.random((4, 1, 28, 28)).astype(np.float32)
    t = rng.integers(0, 10, 4)
    model.loss(x, t, train=True)
    for dropout in model.dropout_layers():
        dropout.hold_mask()  # the same dropout masks for both passes
    assert model.backward().shape == x.shape
    full = {k: v.copy() for k, v in model.grads().items()}
    model.loss(x, t, train=True)
    assert model.backward(input_grad=False) is None
    for key, grad in model.grads().items():
        np.testing.assert_array_equal(grad, full[key], err_msg=key)


# (a change to the small spec, words of the one-line error): values only ``int()`` would read
@pytest.mark.parametrize(
    "change,words",
    [
        (lambda s: s["layers"][0].update(pad=float("inf")), "pad must be an integer"),
        (lambda s: s["layers"][0].update(in_channels="1"), "in_channels must be an integer"),
        (lambda s: s["layers"][0].update(kernel_size="35"), "kernel_size must be an integer or"),
        (lambda s: s["layers"][0].update(stride=True), "stride must be an integer"),
        (lambda s: s["layers"][4].update(out_features=1.7), "out_features must be an integer"),
        (lambda s: s.update(input_shape=[1, float("inf"), 8]), "input_shape must be positive"),
        (lambda s: s.update(version=99), "model spec version 99"),
        (lambda s: s["layers"].insert(0, {"type": "SoftmaxWithLoss"}), "only be the last layer"),
        (lambda s: s.update(layers=[{"type": "SoftmaxWithLoss"}]), "at least one layer"),
        (lambda s: s.update(layers=[*s["layers"][:1], s["layers"][-1]]), "not class scores"),
    ],
)
def test_unusable_specs_are_one_line_errors(change, words):
    spec = copy.deepcopy(_small_spec())
    change(spec)
    with pytest.raises(DeepConvNetError) as excinfo:
        Sequential.from_spec(spec)
    message = str(excinfo.value)
    assert words in message and "\n" not in message


def test_a_spec_too_large_to_initialise_is_a_one_line_error(monkeypatch):
    def out_of_memory(self, rng=None):
        raise MemoryError("Unable to allocate 381 GiB")

    monkeypatch.setattr(Sequential, "initialize", out_of_memory)
    with pytest.raises(DeepConvNetError, match="too large to build"):
        Sequential.from_spec(_small_spec())


def test_receptive_field_of_non_square_kernels_is_per_axis():
    model = Sequential(
        [Convolution(1, 1, (1, 5)), Convolution(1, 1, (5, 1))], input_shape=(1, 9, 9)
    )
    from deepconvnet.models import layer_summary

    assert [row["receptive_field"] for row in layer_summary(model)] == [5, 5]  # a 5x5 window


def _bias_keys_before_batchnorm(model) -> list[str]:
    return [
        f"{i}.b"
        for i, (layer, after) in enumerate(zip(model.layers, model.layers[1:], strict=False))
        if isinstance(after, BatchNormalization)
    ]


@pytest.mark.parametrize("backend", ["reference", "fast"])
def test_biases_feeding_batchnorm_get_their_exact_zero_gradient(backend, rng):
    model = build_model("deepconvnet-bn", rng=rng, backend=backend)
    model.loss(rng.random((4, 1, 28, 28)), np.arange(4))
    model.backward(input_grad=False)
    grads = model.grads()
    before_bn = _bias_keys_before_batchnorm(model)
    assert len(before_bn) == 7  # six convolutions and the hidden affine
    assert all(not grads[key].any() for key in before_bn)
    last = f"{len(model.layers) - 2}.b"  # the output affine, which no BatchNorm follows
    assert last not in before_bn and grads[last].any()


def test_batchnorm_network_trained_with_adam_does_not_depend_on_the_thread_count(rng):
    """Round-off gradients of the biases before BatchNorm, which Adam scales up to steps of lr,
    made eval outputs differ by 1.2e-4 to 2.6e-4 between 1 and 2 threads after 3 steps (6 inputs
    measured); with their exact zero gradient, 0.7e-6 to 5.4e-6, float32 round-off. Over more
    steps both grow chaotically and overlap, so the test stops at 3."""
    from deepconvnet.threads import set_threads

    x, t = rng.random((8, 1, 28, 28)).astype(np.float32), np.arange(8)
    outputs, biases = [], []
    try:
        for threads in (1, 2):
            set_threads(threads)
            model = build_model("deepconvnet-bn", rng=np.random.default_rng(0), backend="fast")
            optimizer = build_optimizer("adam", lr=1e-3)
            for _ in range(3):
                model.loss(x, t)
                model.backward(input_grad=False)
                optimizer.step(model.params(), model.grads())
            outputs.append(model.predict_proba(x))
            params = model.params()
            biases.append([params[key].copy() for key in _bias_keys_before_batchnorm(model)])
    finally:
        set_threads(None)
    assert len(biases[0]) == 7
    for one, two in zip(*biases, strict=True):
        assert not one.any() and not two.any()  # never moved, on either thread count
    assert np.abs(outputs[0] - outputs[1]).max() < 3e-5


def test_a_seed_drops_the_same_units_of_a_feature_map_on_either_backend():
    spec = {
        "input_shape": [1, 6, 6],
        "layers": [
            {
                "type": "Convolution",
                "in_channels": 1,
                "out_channels": 4,
                "kernel_size": 3,
                "pad": 1,
            },
            {"type": "Dropout", "ratio": 0.5},
            {"type": "Affine", "in_features": 144, "out_features": 3},
            {"type": "SoftmaxWithLoss"},
        ],
    }
    x, t = np.random.default_rng(0).random((2, 1, 6, 6)), np.array([0, 1])
    models = [
        Sequential.from_spec(spec, rng=np.random.default_rng(3), backend=backend, dtype=np.float64)
        for backend in ("reference", "fast")
    ]
    losses = [model.loss(x, t, train=True) for model in models]
    assert losses[0] == pytest.approx(losses[1], rel=1e-12)
    assert np.array_equal(models[0].layers[1].mask, models[1].layers[1].mask)  # NCHW in both


def test_with_running_statistics_those_biases_keep_their_gradient(rng):
    """In eval mode BatchNorm subtracts its running mean, so the bias before it counts."""
    model = build_model("deepconvnet-bn", rng=rng, dtype=np.float64, backend="reference")
    x, t = rng.random((3, 1, 28, 28)), np.arange(3)
    model.loss(x, t, train=False)
    model.backward()
    analytic = model.grads()["0.b"].copy()
    bias, h = model.params()["0.b"], 1e-6
    numeric = np.zeros_like(bias)
    for i in range(len(bias)):
        bias[i] += h
        plus = model.loss(x, t, train=False)
        bias[i] -= 2 * h
        minus = model.loss(x, t, train=False)
        bias[i] += h
        numeric[i] = (plus - minus) / (2 * h)
    assert np.abs(numeric).max() > 1e-3  # not zero: the test would pass on zeros otherwise
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)
