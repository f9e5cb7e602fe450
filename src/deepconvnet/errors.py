"""The one error type users see.

Anything wrong with what the user gave us (a file, a value, a checkpoint) raises
:class:`DeepConvNetError` with a one-line message naming the culprit. The CLI prints it without a
traceback and exits with code 2; every other exception is an internal error (exit code 1).
"""


class DeepConvNetError(Exception):
    """A problem with the user's input, reported as one line, exit code 2."""


class DataError(DeepConvNetError):
    """Malformed, truncated or unverifiable data (IDX files, caches, checksums)."""


class UnreadableError(DeepConvNetError):
    """A file that exists but cannot be read (permissions, an I/O error): nothing is known of
    its contents, so it must not be treated as corrupt and replaced."""


class CheckpointError(DeepConvNetError):
    """A checkpoint that is missing, corrupt, truncated or of another architecture."""


class ImageError(DeepConvNetError):
    """An input image that cannot be read or is too large."""


EXIT_INTERRUPTED = 130  # the shell's code for a process stopped by Ctrl-C (128 + SIGINT)


class Interrupted(Exception):
    """Work stopped on request (Ctrl-C, SIGTERM) after saving what it can resume from.

    Not a :class:`DeepConvNetError`: nothing was wrong with the input. The CLI prints the message,
    which says how to resume, and exits with :data:`EXIT_INTERRUPTED`.
    """
