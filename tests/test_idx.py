"""The strict IDX reader: exact round trips, and one-line DataErrors for every kind of damage."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepconvnet.data.idx import encode_idx, parse_idx, read_idx, write_idx
from deepconvnet.errors import DataError


def good_images() -> np.ndarray:
    return np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)


def assert_one_line_error(excinfo, *fragments: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_encode_idx_exact_bytes():
    data = encode_idx(np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8))
    assert data == bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6])
    assert encode_idx(np.array([1, -2], dtype=np.int32)) == (
        bytes([0, 0, 0x0C, 1, 0, 0, 0, 2]) + b"\x00\x00\x00\x01\xff\xff\xff\xfe"
    )


@pytest.mark.parametrize("name", ["raw-idx3-ubyte", "packed-idx3-ubyte.gz"])
def test_round_trip_raw_and_gzip(tmp_path, name):
    path = write_idx(tmp_path / name, good_images())
    assert path.read_bytes()[:2] == (b"\x1f\x8b" if name.endswith(".gz") else b"\x00\x00")
    back = read_idx(path, expect_dtype=np.uint8)
    assert back.dtype == np.uint8 and back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, good_images())


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip_other_dtypes_native_endian(dtype):
    array = (np.arange(6) - 3).astype(dtype).reshape(3, 2)
    back = parse_idx(encode_idx(array))
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def write_bytes(tmp_path, data: bytes, name="bad-idx3-ubyte"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_bad_magic(tmp_path):
    path = write_bytes(tmp_path, b"\x01\x00" + encode_idx(good_images())[2:])
    with pytest.raises(DataError) as excinfo:
        read_idx(path)
    assert_one_line_error(excinfo, str(path), "bad magic number 0x01000803")


def test_unknown_dtype_code(tmp_path):
    path = write_bytes(tmp_path, b"\x00\x00\x07" + encode_idx(good_images())[3:])
    with pytest.raises(DataError) as excinfo:
        read_idx(path)
    assert_one_line_error(excinfo, str(path), "unknown IDX dtype code 0x07")


def test_unexpected_dtype_code(tmp_path):
    path = write_idx(tmp_path / "floats-idx1-ubyte", np.zeros(3, dtype=np.float32))
    with pytest.raises(DataError) as excinfo:
        read_idx(path, expect_dtype=np.uint8)
    assert_one_line_error(excinfo, str(path), "0x0d", "expected uint8")


@pytest.mark.parametrize(
    ("cut", "problem"), [(-1, "truncated: IDX payload is 23 bytes"), (1, "trailing bytes")]
)
def test_wrong_payload_length(tmp_path, cut, problem):
    data = encode_idx(good_images())
    data = data[:cut] if cut < 0 else data + b"\x00" * cut
    path = write_bytes(tmp_path, data)
    with pytest.raises(DataError) as excinfo:
        read_idx(path)
    assert_one_line_error(excinfo, str(path), problem, "(2, 3, 4) needs 24")


def test_truncated_header(tmp_path):
    path = write_bytes(tmp_path, encode_idx(good_images())[:10])
    with pytest.raises(DataError) as excinfo:
        read_idx(path)
    assert_one_line_error(excinfo, str(path), "truncated IDX header (10 of 16 bytes)")


def test_truncated_gzip(tmp_path):
    whole = gzip.compress(encode_idx(np.zeros((50, 28, 28), dtype=np.uint8)))
    path = write_bytes(tmp_path, whole[: len(whole) // 2], name="cut-idx3-ubyte.gz")
    with pytest.raises(DataError) as excinfo:
        read_idx(path)
    assert_one_line_error(excinfo, str(path), "corrupt or truncated gzip")


def test_missing_file(tmp_path):
    with pytest.raises(DataError) as excinfo:
        read_idx(tmp_path / "absent")
    assert_one_line_error(excinfo, "absent", "cannot read")


def test_zero_dimensions_rejected():
    with pytest.raises(DataError, match="0 dimensions"):
        parse_idx(b"\x00\x00\x08\x00", name="x")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_data_error(data):
    for candidate in (data, b"\x00\x00" + data, b"\x1f\x8b" + data, gzip.compress(data, mtime=0)):
        try:
            result = parse_idx(candidate, name="fuzz")
        except DataError as exc:
            assert "\n" not in str(exc) and str(exc).startswith("fuzz: ")
        else:
            assert isinstance(result, np.ndarray)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 15), st.integers(0, 255), st.booleans())
def test_damaged_header_byte_raises_only_data_error(position, value, compress):
    data = bytearray(encode_idx(good_images()))
    data[position] = value
    blob = gzip.compress(bytes(data), mtime=0) if compress else bytes(data)
    try:
        result = parse_idx(blob, name="damaged")
    except DataError:
        return
    assert result.size * result.itemsize == len(data) - 4 - 4 * result.ndim


def test_huge_declared_shape_is_truncation_not_overflow():
    header = bytes([0, 0, 8, 8]) + b"\xff\xff\xff\xff" * 8
    with pytest.raises(DataError, match="truncated: IDX payload is 0 bytes"):
        parse_idx(header, name="huge")


def test_a_file_larger_than_its_limit_is_refused_before_it_is_read(tmp_path):
    path = write_idx(tmp_path / "images", good_images())  # 16-byte header + 24 values
    assert read_idx(path, max_bytes=40).shape == (2, 3, 4)
    path.write_bytes(path.read_bytes() + bytes(2000))  # past what gzip could add to 40 bytes
    with pytest.raises(DataError) as excinfo:
        read_idx(path, max_bytes=40)
    assert_one_line_error(excinfo, str(path), "2040 bytes, more than a file of at most 40 bytes")


def test_a_gzip_bomb_stops_at_the_limit():
    bomb = gzip.compress(encode_idx(np.zeros(10**7, dtype=np.uint8)))  # 10 MB in ~10 kB
    assert len(bomb) < 20_000
    with pytest.raises(DataError) as excinfo:
        parse_idx(bomb, name="bomb.gz", max_bytes=1000)
    assert_one_line_error(excinfo, "bomb.gz: decompresses to more than the 1000 bytes")
    assert parse_idx(bomb, max_bytes=10**7 + 8).shape == (10**7,)
