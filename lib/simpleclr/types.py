"""Type aliases shared across the packages."""
from __future__ import annotations

import os
from typing import Union

PathLike = Union[str, os.PathLike]
