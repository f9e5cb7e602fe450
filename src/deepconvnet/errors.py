"""The one error type users see.

Anything wrong with what the user gave us (a file, a value, a checkpoint) raises
:class:`DeepConvNetError` with a one-line message naming the culprit. The CLI prints it without a
traceback and exits with code 2; every other exception is an internal error (exit code 1).
"""


class DeepConvNetError(Exception):
    """A problem with the user's input, reported as one line, exit code 2."""


class DataError(DeepConvNetError):
    """Malformed, truncated or unverifiable data (IDX files, caches, checksums)."""


class CheckpointError(DeepConvNetError):
    """A checkpoint that is missing, corrupt, truncated or of another architecture."""


class ImageError(DeepConvNetError):
    """An input image that cannot be read or is too large."""
