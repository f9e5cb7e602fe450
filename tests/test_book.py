"""Importing the book's pickle: the restricted unpickler and the conversion to model.npz.

pickle is used here only to WRITE fixtures (the format the book publishes); reading always goes
through deepconvnet.book's restricted unpickler.
"""

from __future__ import annotations

import os
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from deepconvnet.book import BOOK_KEYS, book_model, import_book, read_book_params
from deepconvnet.checkpoint import load_metadata, load_model
from deepconvnet.cli import main
from deepconvnet.errors import CheckpointError
from deepconvnet.layers import Dropout

BOOK_SHAPES = {
    "W1": (16, 1, 3, 3),
    "W2": (16, 16, 3, 3),
    "W3": (32, 16, 3, 3),
    "W4": (32, 32, 3, 3),
    "W5": (64, 32, 3, 3),
    "W6": (64, 64, 3, 3),
    "W7": (64 * 4 * 4, 50),
    "W8": (50, 10),
}


def _shared_book_file() -> Path:
    """The book's published weights, in the shared folder beside the repository (never copied)."""
    repo = Path(__file__).resolve().parents[1]
    return repo.parent / "shared" / "reference" / "book_deep_convnet_params.pkl"


def book_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random parameters in the book's format: float64, conv (out, in, kh, kw), affine (in, out)."""
    params = {}
    for i in range(1, 9):
        shape = BOOK_SHAPES[f"W{i}"]
        params[f"W{i}"] = rng.normal(
            0, np.sqrt(2 / np.prod(shape[1:] if i <= 6 else shape[:1])), shape
        )
        params[f"b{i}"] = rng.normal(0, 0.1, shape[0] if i <= 6 else shape[1])
    return params


def write_pickle(path: Path, obj, protocol: int = 4) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def book_forward(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The book's DeepConvNet.predict(train_flg=False), written out independently in float64."""

    def conv(x, W, b, pad):
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))
        return np.einsum("nchwij,ocij->nohw", windows, W) + b[None, :, None, None]

    def pool(x):
        n, c, h, w = x.shape
        return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))

    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    pads = (1, 1, 1, 2, 1, 1)
    for i in range(6):
        x = relu(conv(x, params[f"W{i + 1}"], params[f"b{i + 1}"], pads[i]))
        if i % 2 == 1:
            x = pool(x)
    x = relu(x.reshape(len(x), -1) @ params["W7"] + params["b7"]) * 0.5  # book's test-time dropout
    return (x @ params["W8"] + params["b8"]) * 0.5


# -- refusals -----------------------------------------------------------------------------------
class Payload:
    """Unpickling this runs ``os.system`` - unless the unpickler refuses it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Custom:
    pass


@pytest.mark.parametrize("kind", ["os.system", "custom-class", "builtins.eval"])
def test_a_pickle_carrying_any_other_object_is_refused(tmp_path, kind):
    marker = tmp_path / "pwned"
    objects = {
        "os.system": {"W1": Payload(marker)},
        "custom-class": {"W1": Custom()},
        "builtins.eval": {"W1": _EvalPayload()},
    }
    path = write_pickle(tmp_path / "evil.pkl", objects[kind])
    with pytest.raises(CheckpointError) as info:
        read_book_params(path)
    message = str(info.value)
    assert message.startswith(f"{path}: refusing to unpickle ")
    assert "only NumPy arrays, dtypes and plain containers are allowed" in message
    assert "\n" not in message
    assert not marker.exists()


class _EvalPayload:
    def __reduce__(self):
        return (eval, ("1 + 1",))


def test_refusal_names_the_global(tmp_path):
    path = write_pickle(tmp_path / "evil.pkl", {"W1": Payload(tmp_path / "m")})
    with pytest.raises(
        CheckpointError, match=rf"refusing to unpickle ({os.name}|posix|nt)\.system"
    ):
        read_book_params(path)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"\x80\x04\x95", "not a readable pickle"),
        (None, "expected a dict of arrays, got list"),
        ("array", "expected a dict of arrays, got an array"),  # was the unpickler's own class
        ("missing", "missing ['b8']"),
        ("int-array", "W1 must be a float array, got int64"),
        ("nan", "W2 holds NaN"),
    ],
)
def test_malformed_book_files_are_one_line_checkpoint_errors(tmp_path, content, words):
    params = book_params(np.random.default_rng(0))
    path = tmp_path / "params.pkl"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is None:
        write_pickle(path, [params["W1"]])
    elif content == "array":
        write_pickle(path, params["W1"])
    elif content == "missing":
        write_pickle(path, {k: v for k, v in params.items() if k != "b8"})
    elif content == "int-array":
        write_pickle(path, {**params, "W1": params["W1"].astype(np.int64)})
    elif content == "nan":
        write_pickle(path, {**params, "W2": np.full(BOOK_SHAPES["W2"], np.nan)})
    with pytest.raises(CheckpointError) as info:
        read_book_params(path)
    assert words in str(info.value) and "\n" not in str(info.value)


class Huge:
    """Unpickles as a W1 of 10**9 float64 values - 8 GB - from a pickle of under 200 bytes:
    ``_reconstruct`` and ``ndarray`` allocate whatever shape they are given."""

    def __init__(self, via_reconstruct: bool) -> None:
        self.via_reconstruct = via_reconstruct

    def __reduce__(self):
        shape, dtype = (10**9,), np.dtype(np.float64)
        if self.via_reconstruct:
            return (np._core.multiarray._reconstruct, (np.ndarray, shape, dtype))
        return (np.ndarray, (shape, dtype))


@pytest.mark.parametrize("via_reconstruct", [True, False])
def test_a_huge_array_is_refused_by_name_before_it_is_allocated(tmp_path, via_reconstruct):
    params = {**book_params(np.random.default_rng(0)), "W1": Huge(via_reconstruct)}
    path = write_pickle(tmp_path / "huge.pkl", params, protocol=2)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError) as info:
            read_book_params(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(info.value) == (
        f"{path}: W1 has shape (1000000000,), architecture 'deepconvnet' expects (16, 1, 3, 3)"
    )
    assert peak < 50 * 2**20  # the real parameters and a model: a few MB, not gigabytes


def test_a_file_larger_than_the_parameters_can_be_is_refused_unread(tmp_path):
    """Every array at float128 plus 1 MB of pickle: beyond that nothing is read (/dev/zero,
    a mistyped path to a dataset), and a float64 file of the real shapes fits."""
    limit = sum(np.prod(v.shape) for v in book_params(np.random.default_rng(0)).values()) * 16
    limit += 2**20
    big = tmp_path / "big.pkl"
    big.write_bytes(b"\0" * (limit + 1))
    with pytest.raises(CheckpointError) as info:
        read_book_params(big)
    assert str(info.value) == (
        f"{big}: larger than the book's parameters can be ({limit:,} bytes at most)"
    )
    if Path("/dev/zero").exists():
        with pytest.raises(CheckpointError, match="larger than the book's parameters can be"):
            read_book_params("/dev/zero")


def test_shapes_must_match_the_architecture(tmp_path):
    params = book_params(np.random.default_rng(0))
    params["W7"] = np.zeros((1000, 50))
    with pytest.raises(CheckpointError, match=r"W7 has shape \(1000, 50\).*expects \(1024, 50\)"):
        book_model(params, source="x.pkl")


# -- conversion ---------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", [0, 1, 2, 4, 5])
def test_a_book_format_file_round_trips_into_a_model(tmp_path, protocol):
    params = book_params(np.random.default_rng(1))
    path = write_pickle(tmp_path / "deep_convnet_params.pkl", params, protocol)
    read = read_book_params(path)
    assert list(read) == list(BOOK_KEYS)
    for key in BOOK_KEYS:
        np.testing.assert_array_equal(read[key], params[key])
        assert read[key].dtype == np.float64


def test_import_book_writes_a_checkpoint_that_predicts_like_the_book(tmp_path):
    params = book_params(np.random.default_rng(2))
    pkl = write_pickle(tmp_path / "deep_convnet_params.pkl", params)
    out = import_book(pkl, tmp_path / "run")
    assert out == tmp_path / "run" / "model.npz"
    model = load_model(out)
    assert model.dtype == np.float64
    assert [d.mode for d in model.layers if isinstance(d, Dropout)] == ["book", "book"]
    assert load_metadata(out)["source"] == "book"
    x = np.random.default_rng(3).random((6, 1, 28, 28))
    expected = book_forward(params, x)
    np.testing.assert_allclose(model.forward(x), expected, rtol=1e-9, atol=1e-9)
    # A trailing slash says "a directory", even for a name ending in .npz (it wrote a file).
    into = import_book(pkl, f"{tmp_path / 'weights.npz'}/")
    assert into == tmp_path / "weights.npz" / "model.npz" and into.is_file()


def test_import_book_cli(tmp_path, capsys):
    pkl = write_pickle(tmp_path / "p.pkl", book_params(np.random.default_rng(4)))
    out = tmp_path / "book.npz"
    assert main(["import-book", str(pkl), "--out", str(out), "--dtype", "float32"]) == 0
    assert str(out) in capsys.readouterr().out
    assert load_model(out).dtype == np.float32
    evil = write_pickle(tmp_path / "evil.pkl", {"W1": Payload(tmp_path / "m")})
    assert main(["import-book", str(evil), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refusing to unpickle" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "m").exists()


def test_import_book_replaces_an_existing_model_only_with_force(tmp_path, capsys):
    """Pointed at a run directory, it would swap the trained model under the run's results."""
    pkl = write_pickle(tmp_path / "p.pkl", book_params(np.random.default_rng(4)))
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.npz").write_bytes(b"the run's trained model")
    assert main(["import-book", str(pkl), "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert err == f"deepconvnet: error: {run / 'model.npz'} already exists (--force replaces it)\n"
    assert (run / "model.npz").read_bytes() == b"the run's trained model"
    assert main(["import-book", str(pkl), "--out", str(run), "--force"]) == 0
    assert load_metadata(run / "model.npz")["source"] == "book"
    upper = tmp_path / "BOOK.NPZ"  # a file, whatever the case of its suffix
    assert main(["import-book", str(pkl), "--out", str(upper)]) == 0
    assert upper.is_file() and load_metadata(upper)["source"] == "book"


@pytest.mark.mnist
@pytest.mark.slow
def test_the_books_weights_classify_9797_of_the_mnist_test_set(tmp_path):
    """The book's own code scores 9,797/10,000 with these weights; the import must agree exactly."""
    book_file = _shared_book_file()
    if not book_file.is_file():
        pytest.skip(f"the book's weights are not at {book_file}")
    from deepconvnet.data import load_dataset, to_float

    model = load_model(import_book(book_file, tmp_path))
    dataset = load_dataset("mnist")
    predicted = model.predict(to_float(dataset.test_images), batch_size=500)
    assert int((predicted == dataset.test_labels).sum()) == 9797


def test_a_small_pickle_cannot_build_more_than_the_parameters_need(tmp_path):
    """One memoised 100 kB string encoded 100 times: a 100 kB file asking for 10 MB (the
    reviewer's 2.8 MB file asked for 300 GB)."""
    size, times = 100_000, 100
    body = b"\x80\x02" + b"c_codecs\nencode\nq\x00"
    body += b"X" + size.to_bytes(4, "little") + b"a" * size + b"X\x06\x00\x00\x00latin1\x86q\x01"
    body += b"]" + b"h\x00h\x01Ra" * times + b"."
    path = tmp_path / "amplify.pkl"
    path.write_bytes(body)
    with pytest.raises(CheckpointError, match="builds more data than the book's parameters"):
        read_book_params(path)


def test_weights_beyond_float32_are_refused_when_imported_in_float32(tmp_path, capsys):
    params = book_params(np.random.default_rng(0))
    params["W8"] = params["W8"] * 1e308  # finite in float64
    path = write_pickle(tmp_path / "huge.pkl", params)
    with pytest.raises(CheckpointError, match="W8 holds values beyond float32"):
        book_model(read_book_params(path), dtype=np.float32, source=str(path))
    assert (
        main(["import-book", str(path), "--out", str(tmp_path / "m.npz"), "--dtype", "float32"])
        == 2
    )
    assert not (tmp_path / "m.npz").exists()


class _CopiedOnBuild:
    """An array whose state holds one shared ``bytes`` in big-endian order, which
    ``ndarray.__setstate__`` copies: pickled 30 times, 30 copies of one memoised string."""

    values = bytes(100_000 * 8)

    def __reduce__(self):
        state = (1, (100_000,), np.dtype(">f8"), False, self.values)
        return (np._core.multiarray._reconstruct, (np.ndarray, (0,), b"b"), state)


def test_copies_made_while_building_arrays_count_against_the_budget(tmp_path):
    path = write_pickle(tmp_path / "copies.pkl", {"W1": [_CopiedOnBuild() for _ in range(30)]})
    assert path.stat().st_size < 1_000_000  # 24 MB of arrays from an 800 kB file
    with pytest.raises(CheckpointError, match="builds more data than the book's parameters"):
        read_book_params(path)


def test_numpy_scalars_are_refused(tmp_path):
    """``scalar(dtype('V...'), data)`` copies its bytes on every call, and no parameter file
    holds a scalar."""
    path = write_pickle(tmp_path / "scalar.pkl", {"W1": np.float64(1.0)}, protocol=2)
    with pytest.raises(CheckpointError, match=r"refusing to unpickle numpy.*scalar"):
        read_book_params(path)
