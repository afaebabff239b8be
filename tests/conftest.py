"""Fixtures every test folder shares. This file's folder is on ``sys.path`` (pytest puts a root
conftest's folder there), so the test modules import their helpers as ``helpers.*``."""
from __future__ import annotations

import os

import pytest
import torch

# Under pytest-xdist each worker gets an equal share of the cores, so workers do not oversubscribe
# them (a test that sets its own thread count still does so).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """The stages set torch's thread count from their config (often one thread in tests: on shared
    cores several OpenMP threads per process spin against each other); every test starts with the
    suite's own count again."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def pytest_addoption(parser):
    parser.addoption("--rehearsals", action="store_true",
                     help="also run the tests marked rehearsal (make test-rehearsals): the executed "
                          "rehearsal of every shipped plan on stand-ins, about 17 min on 2 idle cores")


def pytest_collection_modifyitems(config, items):
    """Tests marked rehearsal skipped without ``--rehearsals``; then files with the most tests
    marked slow first, each file's tests in their own order.

    pytest-xdist (``--dist loadfile``) hands out whole files in collection order as its workers
    free up; with the long files last (``training/`` sorts after the rest) one worker ran the
    longest of them alone at the end. Longest first lets the short files fill in around them.
    """
    if not config.getoption("--rehearsals"):
        skip = pytest.mark.skip(reason="an executed plan rehearsal: run with --rehearsals (make test-rehearsals)")
        for item in items:
            if item.get_closest_marker("rehearsal"):
                item.add_marker(skip)
    files: dict = {}
    for item in items:
        files.setdefault(item.path, []).append(item)
    weight = {path: sum(1 for i in group if i.get_closest_marker("slow")) for path, group in files.items()}
    order = sorted(files, key=lambda path: -weight[path])  # stable: ties keep collection order
    items[:] = [item for path in order for item in files[path]]
