"""How a notebook's kernel is shut down (kernels.kernel_manager_class): an idle kernel is asked to
leave, never interrupted, so no "KeyboardInterrupt caught in kernel" reaches the terminal; a kernel
still running a cell is interrupted, so the cell's ``finally`` blocks run."""
from __future__ import annotations

import asyncio
import os

import nbformat
import pytest

from simpleclr.study import kernels, plans

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the IPC kernel manager is POSIX only")

# papermill's last request after the cells is kernel_info; this makes its handler linger 1 s after
# the reply, inside the window where ipykernel turns SIGINT into KeyboardInterrupt. jupyter_client's
# own shutdown interrupts first, so the interrupt lands there; on a busy machine that window is
# open long enough by itself (seen at the end of `simpleclr plan run` after the report notebook).
SLOW_KERNEL_INFO = """\
import time
_kernel = get_ipython().kernel
_kernel_info = _kernel.shell_handlers["kernel_info_request"]
async def _slow_kernel_info(*args):
    reply = _kernel_info(*args)
    if hasattr(reply, "__await__"):
        await reply
    time.sleep(1.0)
_kernel.shell_handlers["kernel_info_request"] = _slow_kernel_info
"""


def _notebook(path, *sources: str):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def test_a_finished_notebook_shuts_its_kernel_down_without_an_interrupt(tmp_path, monkeypatch, capfd):
    source = _notebook(tmp_path / "tiny.ipynb", "n = 1", SLOW_KERNEL_INFO, "print(n)")
    monkeypatch.setattr(plans, "notebook_file", lambda name: source)
    monkeypatch.setenv("SIMPLECLR_KERNEL", "python3")
    plans.execute_notebook("tiny", tmp_path / "out.ipynb", {"n": 2}, cwd=tmp_path)
    err = capfd.readouterr().err
    assert "KeyboardInterrupt caught" not in err, err
    nb = nbformat.read(str(tmp_path / "out.ipynb"), as_version=4)
    assert nb.cells[-1].outputs[0]["text"] == "2\n"  # it did run, with the parameter


def test_a_kernel_busy_in_a_cell_is_still_interrupted_at_shutdown(tmp_path, monkeypatch):
    """What jupyter_client's interrupt is for: a plan stopped mid-cell lets the cell clean up."""
    flag = tmp_path / "interrupted"
    monkeypatch.chdir(tmp_path)  # the IPC sockets' folder, the kernel's and ours (papermill chdirs too)

    async def main() -> None:
        km = kernels.kernel_manager_class()(kernel_name="python3")
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)
            msg_id = kc.execute("import time, pathlib\n"
                       "try:\n    time.sleep(120)\n"
                       f"except KeyboardInterrupt:\n    pathlib.Path({str(flag)!r}).write_text('yes')\n")
            while True:  # the cell has started once it echoes its input
                msg = await kc.get_iopub_msg(timeout=30)
                if (msg["msg_type"] == "execute_input"
                        and msg["parent_header"].get("msg_id") == msg_id):
                    break
            await km.shutdown_kernel()
        finally:
            kc.stop_channels()

    asyncio.run(main())
    # the cell's except ran: it was interrupted, not killed (a killed kernel writes nothing); no
    # time bound here, since these machines are shared and noisy
    assert flag.read_text() == "yes"
