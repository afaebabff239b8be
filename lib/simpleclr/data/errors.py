"""The data layer's one error type."""
from __future__ import annotations


class DataError(RuntimeError):
    """Bad data input: one line saying what is wrong and what to do about it.

    The message is kept on one line even when it quotes a library's many-line complaint (tarfile
    lists each compression it tried on a line of its own).
    """

    def __init__(self, message: object):
        super().__init__(" ".join(str(message).split()))
