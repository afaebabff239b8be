"""The data layer's error types: :class:`DataError`, and :class:`ChecksumMismatch` for an archive
that is not the official file."""
from __future__ import annotations

from typing import Optional

from ..errors import SimpleCLRError


class DataError(SimpleCLRError, RuntimeError):
    """Bad data input: one line saying what is wrong and what to do about it.

    The message is kept on one line even when it quotes a library's many-line complaint (tarfile
    lists each compression it tried on a line of its own).
    """

    def __init__(self, message: object):
        super().__init__(" ".join(str(message).split()))


class ChecksumMismatch(DataError):
    """An archive, or a cache built from one, that is not the official file and that this call does
    not accept. ``sha256`` is the file's digest: what ``accept_checksum`` (``--accept-checksum``)
    takes to accept it. Callers that tell people how to pass it (a plan) recognise this type."""

    def __init__(self, message: object, sha256: Optional[str] = None):
        super().__init__(message)
        self.sha256 = sha256
