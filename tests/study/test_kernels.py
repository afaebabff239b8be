"""One kernel for successive notebooks (kernels.SharedKernel): each notebook starts from what a
fresh kernel holds, and a failure costs only that kernel. That a stage run in a shared kernel
gives a fresh kernel's very result is tested on the smoke plan (test_pipeline.py, one worker
against two)."""
from __future__ import annotations

import json
import os

import nbformat
import pytest
from papermill.exceptions import PapermillExecutionError

from simpleclr.study import kernels

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the IPC kernel manager is POSIX only")

# A run changes process-wide state: torch's thread count, the library's once-only warnings, names.
DIRTY = """\
import os, torch
from simpleclr.training.parts import device
torch.set_num_threads(torch.get_num_threads() + 1)
device.WARNED.add("printed once")
leftover = x
print(os.getpid())
"""
LOOK = """\
import json, os, torch
from simpleclr.training.parts import device
print(json.dumps({"pid": os.getpid(), "threads": torch.get_num_threads(), "x": x,
                  "leftover": "leftover" in dir(), "warned": sorted(device.WARNED)}))
"""


def _notebook(path, source: str):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 0"), nbformat.v4.new_code_cell(source)]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def _printed(path) -> str:
    return nbformat.read(str(path), as_version=4).cells[-1].outputs[0]["text"]


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc")
def test_each_notebook_in_a_shared_kernel_starts_from_a_fresh_state(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMPLECLR_KERNEL", "python3")
    dirty, look = _notebook(tmp_path / "dirty.ipynb", DIRTY), _notebook(tmp_path / "look.ipynb", LOOK)
    with kernels.SharedKernel(tmp_path) as k:
        kernels.run_notebook(dirty, tmp_path / "o1.ipynb", {"x": 1}, kernel=k)
        kernels.run_notebook(look, tmp_path / "o2.ipynb", {"x": 2}, kernel=k)
        seen = json.loads(_printed(tmp_path / "o2.ipynb"))
        fds = _fds()
        for i in range(3):  # nbclient opens a client per notebook: each is closed again
            kernels.run_notebook(look, tmp_path / f"again{i}.ipynb", {"x": 3}, kernel=k)
        assert _fds() == fds
        assert k.started == 1 and k.notebooks == 5
        # the kernel's sockets are in the private temp folder, never in the folder it runs in
        sockets = [p for p in kernels.socket_dir().iterdir() if p.name.startswith(f"{os.getpid()}-")]
        assert sockets and all(p.is_socket() for p in sockets)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["dirty.ipynb", "look.ipynb", "o1.ipynb", "o2.ipynb"] + [f"again{i}.ipynb" for i in range(3)])
    assert not [p for p in kernels.socket_dir().iterdir() if p.name.startswith(f"{os.getpid()}-")]
    assert seen["pid"] == int(_printed(tmp_path / "o1.ipynb"))  # the same kernel ...
    assert seen == {"pid": seen["pid"], "threads": k._threads, "x": 2, "leftover": False, "warned": []}


def test_a_failed_notebook_costs_only_its_kernel(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMPLECLR_KERNEL", "python3")
    look = _notebook(tmp_path / "look.ipynb", LOOK)
    broken = _notebook(tmp_path / "broken.ipynb", "import os\nprint(os.getpid())\nraise ValueError('broken run')")
    with kernels.SharedKernel(tmp_path) as k:
        with pytest.raises(PapermillExecutionError, match="broken run"):
            kernels.run_notebook(broken, tmp_path / "o1.ipynb", {}, kernel=k)
        kernels.run_notebook(look, tmp_path / "o2.ipynb", {"x": 5}, kernel=k)
        assert k.started == 2
    seen = json.loads(_printed(tmp_path / "o2.ipynb"))
    assert seen["pid"] != int(_printed(tmp_path / "o1.ipynb")) and seen["x"] == 5
