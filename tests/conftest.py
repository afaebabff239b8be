"""Fixtures every test folder shares. This file's folder is on ``sys.path`` (pytest puts a root
conftest's folder there), so the test modules import their helpers as ``helpers.*``."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """The stages set torch's thread count from their config (often one thread in tests: on shared
    cores several OpenMP threads per process spin against each other); every test starts with the
    suite's own count again."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
