"""Crash-safe file writes and pickle-free array files.

Every file deepconvnet writes goes through :func:`atomic_write`: the bytes land in a temporary file
in the same directory, are flushed and fsynced, and only then renamed over the target. A crash (even
SIGKILL) leaves either the old file or the new one, never a half-written one. Files that are one
result (visualize's figures, predict's saved inputs) are written inside :func:`all_or_nothing`,
so that a failure leaves none of them.
"""

from __future__ import annotations

import errno
import io
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from pathlib import Path
from typing import IO, Any

import numpy as np

from deepconvnet.errors import DeepConvNetError, UnreadableError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import: the umask can only be read by setting it, which would race with any
# other thread creating files if it were done on every write.
_UMASK = _current_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file through ``write(fileobj)`` so that it appears complete or not at all
    (inside :func:`all_or_nothing`, only when every file of the block can)."""
    path = _write_target(Path(path))
    staged = _STAGED.get()
    made = outermost_missing(path.parent)
    tmp = _stage(path, write)
    if staged is None:
        _commit(tmp, path)
    else:
        staged.append((tmp, path, made))
    return path


def _write_target(path: Path) -> Path:
    """Where a write to ``path`` lands: through a symlink, at its target (the link is kept, as
    editors keep it); never over what is not a regular file, since the rename would replace it
    (``--out /dev/null`` used to turn the device into a PNG)."""
    try:
        if path.is_symlink():
            path = Path(os.path.realpath(path))
        mode = path.stat().st_mode
    except FileNotFoundError:
        return path
    except OSError as exc:  # a symlink loop, a path through a file, a name too long
        why = _file_in_the_way(path) or exc.strerror or exc
        raise DeepConvNetError(f"cannot write {path}: {why}") from exc
    if stat.S_ISDIR(mode):
        raise DeepConvNetError(f"cannot write {path}: {os.strerror(errno.EISDIR)}")
    if not stat.S_ISREG(mode):
        raise DeepConvNetError(
            f"cannot write {path}: not a regular file (a device, FIFO or socket), which writing "
            "would replace"
        )
    return path


def is_pipe(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a FIFO or a socket: opening a FIFO to read waits for a writer, for
    ever if none comes, so a file the user names is checked before it is opened."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False  # opening it will say what is wrong
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def is_staged_write(name: str) -> bool:
    """Whether a file name is that of a write still being staged (or left by a killed one)."""
    return name.startswith(".") and name.endswith(".tmp")


def _stage(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """A temporary file beside ``path`` (its directory made if need be), written through
    ``write``, flushed and fsynced."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise DeepConvNetError(
            f"cannot write {path}: {_file_in_the_way(path) or exc.strerror or exc}"
        ) from exc
    try:
        with os.fdopen(fd, "wb") as f:  # owns fd from here: closed whatever fails below
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)  # mkstemp makes 0600; ordinary permissions
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise DeepConvNetError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise
    return Path(tmp)


def _commit(tmp: Path, path: Path) -> None:
    """Rename a staged file over its target, durably."""
    try:
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DeepConvNetError(f"cannot write {path}: {exc.strerror or exc}") from exc
    _fsync_dir(path.parent)


# The files staged by the all_or_nothing block, as (temporary, target, outermost directory made
# for it or None); None outside a block.
_STAGED: ContextVar[list[tuple[Path, Path, Path | None]] | None] = ContextVar(
    "_STAGED", default=None
)


@contextmanager
def all_or_nothing() -> Iterator[None]:
    """Make the atomic writes of a block one outcome: a command that writes several files leaves
    all of them or none. Each is staged beside its target; once the block has finished, every
    target is checked (a directory cannot be replaced by a file) before any is replaced, and on
    any failure the staged files, and the directories made for them, are removed and no target
    is touched. A block inside another is part of the outer one's outcome."""
    if _STAGED.get() is not None:
        yield
        return
    staged: list[tuple[Path, Path, Path | None]] = []
    token = _STAGED.set(staged)
    committed = False
    try:
        yield
        for _, path, _ in staged:
            if path.is_dir():
                raise DeepConvNetError(f"cannot write {path}: {os.strerror(errno.EISDIR)}")
        for tmp, path, _ in staged:
            _commit(tmp, path)
        committed = True
    finally:
        _STAGED.reset(token)
        for tmp, _, _ in staged:
            tmp.unlink(missing_ok=True)  # each one committed is gone already
        for _, path, made in reversed(staged) if not committed else ():  # deepest first
            if made is not None:
                remove_empty_dirs(path.parent, made)


def outermost_missing(path: Path) -> Path | None:
    """The outermost of ``path`` and its ancestors that does not exist yet (None: it exists):
    what to remove again, with :func:`remove_empty_dirs`, if the work that made it fails."""
    missing = None
    while not path.exists() and path != path.parent:
        missing, path = path, path.parent
    return missing


def remove_empty_dirs(innermost: Path, outermost: Path) -> None:
    """Remove ``innermost`` and its ancestors up to ``outermost`` while each is empty (one that
    holds anything, or is gone, stops the climb and is kept)."""
    directory = innermost
    with suppress(OSError):
        while True:
            directory.rmdir()
            if directory == outermost or directory == directory.parent:
                return
            directory = directory.parent


def _file_in_the_way(path: Path) -> str | None:
    """Which ancestor of ``path`` is a file, where a directory should be ("File exists", which
    the OS says then, names neither), or None."""
    for ancestor in path.parents:
        if os.path.exists(ancestor):  # False, not an OSError, for a name too long
            return None if os.path.isdir(ancestor) else f"{ancestor} is not a directory"
    return None


def check_fresh_dir(directory: Path, hint: str) -> None:
    """Refuse a directory that new work would be mixed into: a file, or a non-empty directory.
    ``hint`` says what to do instead (resume it, choose another --out)."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise DeepConvNetError(f"{directory} is not a directory")
    if os.path.isdir(directory) and any(directory.iterdir()):
        raise DeepConvNetError(f"{directory} already exists and is not empty ({hint})")


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically write raw bytes."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write an object as indented JSON."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> Path:
    """Atomically save arrays as an uncompressed ``.npz``; object arrays are refused (no pickle)."""
    for name, arr in arrays.items():
        if np.asarray(arr).dtype == object:
            raise TypeError(f"refusing to save object array {name!r}: it would need pickle")
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return atomic_write_bytes(path, buffer.getvalue())


# A zip file starts with a local file header, or with the end-of-directory record when empty.
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` without pickle, or raise a one-line DeepConvNetError."""
    path = Path(path)
    if not path.is_file():
        raise DeepConvNetError(f"{path}: no such file")
    _check_zip_signature(path)
    try:  # read first: a failure here is the system's (EIO ...) and says nothing of the content
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, KeyError) as exc:
        raise DeepConvNetError(f"{path}: not a readable .npz file ({one_line(exc)})") from exc
    except Exception as exc:  # zipfile.BadZipFile, zlib.error and friends
        raise DeepConvNetError(f"{path}: corrupt or truncated .npz file ({one_line(exc)})") from exc
    for name, value in arrays.items():
        if not isinstance(value, np.ndarray):  # NpzFile hands back a non-.npy member as bytes
            raise DeepConvNetError(f"{path}: member {name!r} is not a .npy array")
    return arrays


def _check_zip_signature(path: Path) -> None:
    """Refuse a file that is not a zip at all, before numpy answers with a pickle hint.

    ``np.load`` takes any other bytes for a pickle and, with pickle refused, suggests
    ``allow_pickle=True``: advice that would be wrong and unsafe here.
    """
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise UnreadableError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if head not in _ZIP_SIGNATURES:
        raise DeepConvNetError(f"{path}: not an .npz (zip) file")


def json_to_array(obj: Any) -> np.ndarray:
    """Encode a JSON-able object as a 0-d unicode array, storable in an npz without pickle."""
    return np.array(json.dumps(obj, sort_keys=True))


def array_to_json(arr: np.ndarray) -> Any:
    """Decode :func:`json_to_array`."""
    return json.loads(str(arr[()]))


def one_line(exc: object) -> str:
    """The first line (200 characters at most) of an exception's text, else its type name.

    User-facing errors are one line, but library messages (numpy's, zlib's, PIL's) may span
    several. ``exc`` may also be a URLError's ``reason``, which is sometimes a plain string.
    """
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
