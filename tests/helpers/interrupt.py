"""A step function that stops, as Ctrl-C would, on its ``at``-th call: the resume tests' tool."""
from __future__ import annotations


class Interrupt:
    """Wraps a step function and raises KeyboardInterrupt on its ``at``-th call (1-based)."""

    def __init__(self, fn, at: int):
        self.fn, self.at, self.calls = fn, at, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return self.fn(*args, **kwargs)
