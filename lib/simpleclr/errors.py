"""The one base of every error simpleclr raises on purpose.

Each module keeps its own error class (``ConfigError``, ``DataError``, ``RunLocked``, ...) and its
builtin base (``ValueError``, ``RuntimeError``), so ``except ValueError`` still works; all of them
also derive from :class:`SimpleCLRError`, so a caller that reports errors to a person (the CLI, a
plan) catches that one type instead of listing classes or reading messages. Callers that must act
on a kind of error decide by its type or attributes, never by its text. This module imports
nothing of ours: every layer may use it.
"""
from __future__ import annotations


class SimpleCLRError(Exception):
    """An error meant for a person: its message is one line saying what is wrong and what to do.

    A message that arrives with line breaks (a library's many-line complaint quoted inside it)
    is shown on one line: ``str(e)`` joins its lines with single spaces.
    """

    def __str__(self) -> str:
        return " ".join(super().__str__().split())


def one_line(text: str, limit: int) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``limit`` characters with "...":
    how a failure is told where only a line fits (a plan's run table, another rank's error)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
