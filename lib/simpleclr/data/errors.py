"""The data layer's one error type."""
from __future__ import annotations


class DataError(RuntimeError):
    """Bad data input: one line saying what is wrong and what to do about it."""
