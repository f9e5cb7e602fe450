"""A strict reader (and a small writer) for the IDX format MNIST is distributed in.

An IDX file is a 4-byte magic number (two zero bytes, a dtype code, the number of dimensions), one
big-endian uint32 per dimension, then the values in C order, big-endian. Every field is checked and
the payload must have exactly the announced length, so that a truncated download or a file of the
wrong kind is a one-line :class:`DataError` naming the file, never a silently short array.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import zlib
from pathlib import Path

import numpy as np

from deepconvnet.errors import DataError
from deepconvnet.fileio import atomic_write_bytes, one_line

# dtype code -> big-endian numpy dtype (the codes of the IDX specification)
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
IDX_MAX_DIMS = 8  # MNIST uses 1 or 3; anything beyond a handful is a corrupt header


def read_idx(
    path: str | os.PathLike,
    *,
    expect_dtype: np.dtype | type | None = None,
    max_bytes: int | None = None,
) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a native-endian array.

    ``expect_dtype`` (e.g. ``np.uint8``) additionally requires that dtype code; ``max_bytes``
    bounds the file and its decompressed bytes, so that an oversized file or a gzip bomb is a
    one-line error before it can take the memory it claims.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if max_bytes is not None and size > stored_size_limit(max_bytes):
            raise DataError(
                f"{path}: {size} bytes, more than a file of at most {max_bytes} bytes can take"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    return parse_idx(data, name=str(path), expect_dtype=expect_dtype, max_bytes=max_bytes)


def stored_size_limit(max_bytes: int) -> int:
    """The most bytes a file of at most ``max_bytes`` can take raw or gzipped: gzip adds a little
    to what it cannot compress (5 bytes per 64 KiB stored block, plus its header and trailer)."""
    return max_bytes + max_bytes // 8192 + 1024


def parse_idx(
    data: bytes,
    *,
    name: str = "<bytes>",
    expect_dtype: np.dtype | type | None = None,
    max_bytes: int | None = None,
) -> np.ndarray:
    """Decode the bytes of an IDX file (gzip detected by its magic bytes), of at most
    ``max_bytes`` once decompressed."""
    if data[:2] == _GZIP_MAGIC:
        data = _gunzip(data, name, max_bytes)
    if len(data) < 4:
        raise DataError(f"{name}: not an IDX file (only {len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{name}: not an IDX file (bad magic number 0x{data[:4].hex()})")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise DataError(f"{name}: unknown IDX dtype code 0x{code:02x}")
    dtype = IDX_DTYPES[code]
    if expect_dtype is not None and dtype != np.dtype(expect_dtype).newbyteorder(">"):
        raise DataError(
            f"{name}: IDX dtype code 0x{code:02x} ({dtype.name}), expected {np.dtype(expect_dtype)}"
        )
    if not 1 <= ndim <= IDX_MAX_DIMS:
        raise DataError(f"{name}: bad IDX header ({ndim} dimensions)")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(f"{name}: truncated IDX header ({len(data)} of {header_len} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    actual = len(data) - header_len
    if actual != expected:
        problem = "truncated" if actual < expected else "trailing bytes"
        raise DataError(
            f"{name}: {problem}: IDX payload is {actual} bytes, shape {shape} needs {expected}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _gunzip(data: bytes, name: str, max_bytes: int | None = None) -> bytes:
    """The decompressed bytes, read no further than one byte past ``max_bytes``."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            out = stream.read(-1 if max_bytes is None else max_bytes + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{name}: corrupt or truncated gzip ({one_line(exc)})") from exc
    if max_bytes is not None and len(out) > max_bytes:
        raise DataError(f"{name}: decompresses to more than the {max_bytes} bytes it can hold")
    return out


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of an array (dtype must be one IDX supports)."""
    array = np.asarray(array)
    big_endian = array.dtype.newbyteorder(">") if array.dtype.byteorder != ">" else array.dtype
    codes = [code for code, dtype in IDX_DTYPES.items() if dtype == big_endian]
    if not codes:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    code, dtype = codes[0], IDX_DTYPES[codes[0]]
    if not 1 <= array.ndim <= IDX_MAX_DIMS:
        raise ValueError(f"IDX cannot store {array.ndim} dimensions")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Atomically write an IDX file; gzip it when ``compress`` (default: the name ends in .gz)."""
    path = Path(path)
    data = encode_idx(array)
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        data = gzip.compress(data, mtime=0)
    return atomic_write_bytes(path, data)
