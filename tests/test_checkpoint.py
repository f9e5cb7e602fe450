import numpy as np
import pytest

from deepconvnet.checkpoint import (
    STATE_KEY,
    check_model_fits,
    load_metadata,
    load_model,
    parameter_digest,
    save_model,
)
from deepconvnet.cli import main
from deepconvnet.errors import CheckpointError
from deepconvnet.fileio import atomic_save_npz, load_npz
from deepconvnet.models import build_model


@pytest.fixture
def model(rng):
    return build_model("deepconvnet", rng=rng, backend="reference", batchnorm=True)


def test_round_trip_bit_exact(tmp_path, model, rng):
    model.loss(rng.random((4, 1, 28, 28)), np.arange(4))  # move BatchNorm running stats
    save_model(tmp_path / "model.npz", model, {"epoch": 3})
    loaded = load_model(tmp_path)  # a run directory works too
    for key, arr in {**model.params(), **model.buffers()}.items():
        assert np.array_equal(loaded.array(key), arr) and loaded.array(key).dtype == arr.dtype
    assert load_metadata(tmp_path / "model.npz") == {"epoch": 3}


def test_parameter_digest_follows_the_arrays_not_the_metadata(tmp_path, model):
    first = parameter_digest(save_model(tmp_path / "a.npz", model, {"epoch": 1}))
    assert parameter_digest(save_model(tmp_path / "b.npz", model, {"epoch": 2})) == first
    resaved = save_model(tmp_path / "c.npz", load_model(tmp_path / "a.npz"))
    assert parameter_digest(resaved) == first
    weight = model.array("0.W")
    weight.flat[0] = np.nextafter(weight.flat[0], np.inf)  # one ulp in one weight
    assert parameter_digest(save_model(tmp_path / "d.npz", model)) != first


def test_parameter_digest_tells_which_array_holds_which_values(tmp_path, model):
    path = save_model(tmp_path / "a.npz", model)
    arrays = load_npz(path)
    arrays["1.gamma"], arrays["1.beta"] = arrays["1.beta"], arrays["1.gamma"]  # ones, zeros
    assert parameter_digest(atomic_save_npz(tmp_path / "b.npz", arrays)) != parameter_digest(path)


def test_parameter_digest_refuses_a_training_checkpoint(tmp_path, model):
    arrays = {**load_npz(save_model(tmp_path / "a.npz", model)), STATE_KEY: np.zeros(1)}
    with pytest.raises(CheckpointError, match="training checkpoint"):
        parameter_digest(atomic_save_npz(tmp_path / "checkpoint.npz", arrays))


def test_truncated_file(tmp_path, model):
    path = save_model(tmp_path / "m.npz", model)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"m\.npz"):
        load_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such"):
        load_model(tmp_path / "nope.npz")


def test_wrong_shape_names_array_and_shapes(tmp_path, model):
    path = save_model(tmp_path / "m.npz", model)
    arrays = load_npz(path)
    arrays["0.W"] = np.zeros((16, 1, 5, 5), np.float32)
    atomic_save_npz(path, arrays)
    with pytest.raises(CheckpointError, match=r"'0.W'.*\(16, 1, 5, 5\).*\(16, 1, 3, 3\)"):
        load_model(path)


def test_other_architecture_and_bad_values(tmp_path, model, rng):
    path = save_model(tmp_path / "m.npz", model)
    small = build_model("deepconvnet", rng=rng, backend="reference")  # no batchnorm
    arrays = load_npz(path)
    arrays["__spec__"] = load_npz(save_model(tmp_path / "s.npz", small))["__spec__"]
    atomic_save_npz(path, arrays)
    with pytest.raises(CheckpointError):
        load_model(path)
    arrays = load_npz(save_model(tmp_path / "m.npz", model))
    arrays["0.b"] = arrays["0.b"] * np.nan
    atomic_save_npz(path, arrays)
    with pytest.raises(CheckpointError, match="non-finite"):
        load_model(path)
    arrays["__spec__"] = np.array('{"layers": [{"type": "Mystery"}], "input_shape": [1, 2, 2]}')
    atomic_save_npz(path, arrays)
    with pytest.raises(CheckpointError, match="unknown layer type"):
        load_model(path)


def test_check_model_fits_names_the_model_and_the_data():
    colour = build_model("deepconvnet", input_shape=(3, 28, 28))
    with pytest.raises(CheckpointError) as caught:
        check_model_fits(colour, (1, 28, 28), "the mnist test images", name="runs/x/model.npz")
    assert str(caught.value) == (
        "runs/x/model.npz: the model expects input of shape (3, 28, 28) (C, H, W), "
        "but the mnist test images are (1, 28, 28)"
    )
    check_model_fits(build_model("deepconvnet"), (1, 28, 28), "the mnist test images")


def test_check_model_fits_refuses_another_number_of_classes():
    twelve = build_model("deepconvnet", output_size=12)
    with pytest.raises(CheckpointError) as caught:
        check_model_fits(twelve, (1, 28, 28), "the mnist test images", name="m.npz", classes=10)
    assert str(caught.value) == (
        "m.npz: the model has outputs of shape (12,), but the mnist test images have 10 classes"
    )
    check_model_fits(twelve, (1, 28, 28), "the mnist test images")  # classes not asked: passes
    check_model_fits(build_model("deepconvnet"), (1, 28, 28), "digits", classes=10)


@pytest.mark.mnist
@pytest.mark.parametrize("command", ["evaluate", "misclassified", "visualize", "ensemble"])
def test_commands_refuse_a_model_of_other_classes_in_one_line(tmp_path, capsys, command):
    """12 outputs for 10 digits was an IndexError in the confusion matrix (exit 1)."""
    path, other = tmp_path / "m12.npz", tmp_path / "m12-other.npz"
    save_model(path, build_model("deepconvnet", output_size=12))
    save_model(other, build_model("deepconvnet", output_size=12))
    argv = {
        "evaluate": ["evaluate", str(path)],
        "misclassified": ["misclassified", str(path), "--out", str(tmp_path / "m.png")],
        "visualize": ["visualize", str(path), "--out", str(tmp_path / "v")],
        "ensemble": ["ensemble", "evaluate", str(path), str(other)],
    }[command]
    assert main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.endswith(
        "the model has outputs of shape (12,), but the mnist test images have 10 classes"
    )
    assert not (tmp_path / "m.png").exists() and not (tmp_path / "v").exists()


def test_a_value_that_overflows_the_model_dtype_is_refused(tmp_path, model):
    arrays = load_npz(save_model(tmp_path / "m.npz", model))
    arrays["0.W"] = np.full((16, 1, 3, 3), 1e300)  # finite in float64, inf in float32
    atomic_save_npz(tmp_path / "m.npz", arrays)
    with pytest.raises(CheckpointError, match=r"'0.W' holds non-finite values in float32"):
        load_model(tmp_path / "m.npz")


def test_a_negative_variance_is_refused(tmp_path, model):
    arrays = load_npz(save_model(tmp_path / "m.npz", model))
    arrays["1.running_var"][0] = -5.0  # every prediction would be NaN
    atomic_save_npz(tmp_path / "m.npz", arrays)
    with pytest.raises(CheckpointError, match=r"'1.running_var' is a variance"):
        load_model(tmp_path / "m.npz")


def test_a_loaded_model_runs_on_the_fast_kernels_like_a_built_one(tmp_path, model, rng):
    from deepconvnet.models import default_backend

    path = save_model(tmp_path / "m.npz", model)
    loaded = load_model(path)
    assert loaded.backend == default_backend() == "fast"
    reference = load_model(path, backend="reference")
    x = rng.random((6, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict_proba(x), reference.predict_proba(x), atol=1e-5)
