"""The self-supervised methods, one file each, and the registry that maps ``PretrainConfig.method``
to its class. A method is a :class:`~simpleclr.training.methods.base.Method`: the encoder with its
heads, its loss, its two views and its per-step extras. Adding one: a file here and one line below
(docs/architecture.md walks through it).
"""
from __future__ import annotations

from .barlow import BarlowTwins
from .base import Method
from .byol import BYOL
from .mocov2 import MoCoV2
from .simclr import SimCLR
from .simsiam import SimSiam
from .vicreg import VICReg

__all__ = ["METHODS", "Method", "get_method"]

METHODS: dict[str, type[Method]] = {
    "simclr": SimCLR,
    "mocov2": MoCoV2,
    "byol": BYOL,
    "simsiam": SimSiam,
    "barlow": BarlowTwins,
    "vicreg": VICReg,
}


def get_method(name: str) -> type[Method]:
    """The class registered under ``name``."""
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"method {name!r} is unknown: use one of {sorted(METHODS)}") from None
