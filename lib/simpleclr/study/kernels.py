"""The Jupyter kernels a plan's notebooks run in.

Each notebook runs under :func:`kernel_manager_class` (IPC sockets, a polite shutdown). A
:class:`SharedKernel` runs successive notebooks in one kernel, so only the first pays the
kernel's start-up (the interpreter, ``import torch``, the library: about 7 s a notebook on the
2-core CPUs, most of the smoke plan's time). Between notebooks it empties the namespace and puts
back the process state a run may change (torch's thread count, the library's once-only warnings);
after a failure or an interrupt it shuts the kernel down, and the next notebook starts a new one.

Interrupts are quiet: Ctrl-C or SIGTERM under :func:`interrupts_quietly` (and in plan worker
processes, :func:`quiet_on_interrupt`) first silences what the kernels' shutdown would print
(the kernel process's own output, which this process forwards line by line, and the log records
of papermill, nbclient, jupyter_client and asyncio: a ZMQError from a kernel told to leave mid
reply, "Kernel died", "Task exception was never retrieved"), then raises KeyboardInterrupt, so the
command's one line is all a user sees.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any, Iterator, Optional

from ..errors import one_line
from ..types import PathLike

# How long a kernel asked to shut down may take to leave on its own before it is interrupted.
KERNEL_EXIT_GRACE_S = 2.0
# A notebook run in a shared kernel starts from this state: what a fresh kernel would hold. Every
# process-wide setting the library changes during a run is put back here (tests/study/
# test_kernels.py checks the state; test_pipeline.py compares a shared kernel's runs with fresh ones).
RESET_CODE = """\
get_ipython().run_line_magic("reset", "-f")
import gc as _gc, torch as _torch
_torch.set_num_threads({threads})
from simpleclr.training.parts import device as _device
_device.WARNED.clear()
if _torch.cuda.is_initialized():  # a later run on this device (or another process) gets it back
    _torch.cuda.empty_cache()
del _device, _torch
_gc.collect()
"""
# The thread count the kernel starts with (torch's default on this machine), read once.
THREADS_CODE = "import torch as _torch; print(_torch.get_num_threads()); del _torch"


# Set once an interrupt has begun: the kernels' output is no longer forwarded.
QUIET = threading.Event()


def quiet() -> None:
    """Silence what shutting kernels down after an interrupt prints: their forwarded output and
    every log record (``logging.disable``; :func:`interrupts_quietly` restores logging after)."""
    QUIET.set()
    logging.disable(logging.CRITICAL)


def _raise_interrupt(signum: int, frame: object) -> None:
    quiet()
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def quiet_on_interrupt() -> None:
    """SIGINT and SIGTERM become a quiet KeyboardInterrupt for the rest of this process (a plan's
    worker process: its pool's initializer)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_interrupt)


@contextlib.contextmanager
def interrupts_quietly() -> Iterator[None]:
    """For the block, Ctrl-C and SIGTERM (``kill``, a scheduler's cancel) end it as a quiet
    KeyboardInterrupt (:func:`quiet`): the running notebook's kernel is shut down and the caller
    prints its one line, instead of the process dying where it stands or the shutdown printing
    tracebacks. Only in the main thread, where Python runs signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if QUIET.is_set():
            QUIET.clear()
            logging.disable(logging.NOTSET)


def _forward(stream: IO[bytes]) -> None:
    """Copy a kernel's output to this process's stderr, line by line, until the kernel and its
    children close it; dropped once an interrupt has begun (:data:`QUIET`)."""
    with stream:
        for line in iter(stream.readline, b""):
            if not QUIET.is_set():
                with contextlib.suppress(ValueError, OSError):  # stderr closed at exit
                    sys.stderr.write(line.decode(errors="replace"))
                    sys.stderr.flush()


def kernel_name() -> str:
    """The Jupyter kernel notebooks run in: ``$SIMPLECLR_KERNEL`` or ``python3``."""
    return os.environ.get("SIMPLECLR_KERNEL", "python3")


def kernel_manager_class() -> Optional[type]:
    """The kernel manager notebooks run under: jupyter_client's, talking to the kernel over IPC
    (``<temp>/simpleclr-kernels-<uid>/<pid>-<n>`` sockets: no port, no TCP warning, and never in
    the user's folder, where a killed plan would leave them), and at shutdown asking the kernel
    to leave before interrupting it after ``KERNEL_EXIT_GRACE_S`` (SIGINT first raced papermill's
    last request; docs/architecture.md, "Design notes"). None where IPC is absent (not POSIX)."""
    if os.name != "posix":
        return None
    from jupyter_client.manager import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any) -> None:
            kwargs.setdefault("transport", "ipc")
            # jupyter_client numbers the socket files by looking for free names: this process's
            # pid in the prefix keeps kernels started at once by plan workers from taking one name
            kwargs.setdefault("ip", str(socket_dir() / str(os.getpid())))
            super().__init__(**kwargs)

        async def start_kernel(self, **kw: Any) -> None:
            # the kernel's stdout and stderr through a pipe this process forwards (_forward), so
            # that what it prints while an interrupt shuts it down can be dropped
            read, write = os.pipe()
            kw.setdefault("stdout", write)
            kw.setdefault("stderr", write)
            try:
                await super().start_kernel(**kw)
            except BaseException:
                os.close(read)
                raise
            finally:
                os.close(write)
            threading.Thread(target=_forward, args=(os.fdopen(read, "rb"),), name="kernel-output",
                             daemon=True).start()

        async def _async_interrupt_kernel(self) -> None:
            # shutdown_kernel interrupts first (shutting_down already set), then requests shutdown
            # itself; a second request to a kernel that left (or is leaving) is harmless
            # (jupyter_client's private names, unpinned: where they are gone, its own behaviour)
            leave = (getattr(self, "_async_request_shutdown", None), getattr(self, "_async_wait", None))
            if getattr(self, "shutting_down", False) and self.has_kernel and all(leave):
                await self._async_request_shutdown()
                try:
                    await asyncio.wait_for(self._async_wait(pollinterval=0.05), KERNEL_EXIT_GRACE_S)
                    return  # it left without an interrupt
                except asyncio.TimeoutError:
                    pass  # busy in a cell: interrupt it, as jupyter_client does
            await super()._async_interrupt_kernel()

    return IPCKernelManager


def socket_dir() -> Path:
    """A private folder for kernel sockets, short enough for a socket path (108 bytes on Linux)."""
    folder = Path(tempfile.gettempdir()) / f"simpleclr-kernels-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.stat().st_uid != os.getuid():
        raise PermissionError(f"{folder} belongs to another user; set TMPDIR to a folder of yours")
    return folder


def failure_reason(e: BaseException) -> str:
    """Why a notebook did not finish, in one line: the cell's exception (papermill's ``ename``
    and ``evalue``), else the exception itself (a dead kernel, a missing notebook)."""
    ename, evalue = getattr(e, "ename", None), getattr(e, "evalue", None)
    return one_line(f"{ename}: {evalue}" if ename else f"{type(e).__name__}: {e}", 400)


def run_notebook(source: Path, output: Path, parameters: dict, *, cwd: Optional[PathLike] = None,
                 progress: bool = False, kernel: Optional["SharedKernel"] = None) -> None:
    """Execute ``source`` with ``parameters`` through papermill into ``output``: in ``kernel``
    when given (it stays up for the next notebook, in the folder it was started in), else in a
    kernel of its own started in ``cwd``."""
    if kernel is not None:
        kernel.run(source, output, parameters, progress=progress)
        return
    manager = kernel_manager_class()
    _papermill(source, output, parameters, str(cwd or Path.cwd()), progress,
               **({"kernel_manager_class": manager} if manager is not None else {}))


def _papermill(source: Path, output: Path, parameters: dict, cwd: str, progress: bool, **extra: Any) -> None:
    """papermill's execute_notebook as every notebook here runs it; ``extra``: a kernel manager
    class, or ``km``, a running kernel's manager."""
    import papermill as pm

    output.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(source), str(output), parameters=parameters, kernel_name=kernel_name(),
                        progress_bar=progress, cwd=cwd, log_output=False, **extra)


class SharedKernel:
    """One kernel for successive notebooks (``with SharedKernel(cwd) as k: run_notebook(..., kernel=k)``).

    Started on the first notebook; shut down on a failure, an interrupt, a failed reset or
    :meth:`close`. ``started`` counts the kernels it started (1 when every notebook went well).
    """

    def __init__(self, cwd: Optional[PathLike] = None):
        self.cwd = str(cwd or Path.cwd())
        self.started = 0
        self.notebooks = 0
        self._km: Any = None
        self._threads: Optional[int] = None

    def __enter__(self) -> "SharedKernel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def run(self, source: Path, output: Path, parameters: dict, *, progress: bool = False) -> None:
        """Execute one notebook in the kernel, then reset its state for the next one."""
        try:
            if self._km is None or not self._sync(self._km.is_alive)():
                self._start()
            _papermill(source, output, parameters, self.cwd, progress, km=self._km)
            self.notebooks += 1
            self._close_clients()
            self._execute(RESET_CODE.format(threads=self._threads))
        except BaseException:
            self.close()  # a failed or interrupted notebook may leave anything behind: start anew
            raise

    def close(self) -> None:
        """Shut the kernel down (asked to leave, then interrupted; see :func:`kernel_manager_class`)."""
        km, self._km = self._km, None
        if km is None:
            return
        try:
            self._close_clients(km)
            self._sync(km.shutdown_kernel)()
        finally:
            self._sync(km.cleanup_resources)()

    def _close_clients(self, km: Any = None) -> None:
        km = km or self._km
        while km is not None and km.clients:
            km.clients.pop().stop_channels()

    # ---- the kernel's life ---------------------------------------------------------------------
    @staticmethod
    def _sync(fn: Any) -> Any:
        """``fn`` made blocking on the event loop nbclient also uses (jupyter_core's per thread)."""
        from jupyter_core.utils import run_sync

        return run_sync(fn) if asyncio.iscoroutinefunction(fn) else fn

    def _start(self) -> None:
        manager = kernel_manager_class()
        if manager is None:
            from jupyter_client.manager import AsyncKernelManager as manager

        class Tracked(manager):  # type: ignore[misc,valid-type]
            """Keeps the clients it hands out: nbclient opens one per notebook and closes it only
            with a kernel it owns, so :meth:`SharedKernel._close_clients` does (14 sockets each)."""

            def client(self, **kwargs: Any) -> Any:
                kc = super().client(**kwargs)
                self.clients.append(kc)
                return kc

        self._km = Tracked(kernel_name=kernel_name())
        self._km.clients = []
        self._sync(self._km.start_kernel)(cwd=self.cwd)
        self.started += 1
        self._threads = int(self._execute(THREADS_CODE).strip())

    def _execute(self, code: str, timeout: float = 120.0) -> str:
        """Run ``code`` in the kernel outside any notebook; its printed output. Raises when it fails."""
        kc = self._km.client()
        kc.start_channels()
        out: list[str] = []

        def collect(msg: dict) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])

        try:
            self._sync(kc.wait_for_ready)(timeout=60)
            reply = self._sync(kc.execute_interactive)(code, timeout=timeout, output_hook=collect,
                                                        store_history=False)
        finally:
            kc.stop_channels()
        if reply["content"]["status"] != "ok":
            c = reply["content"]
            raise RuntimeError(f"resetting the shared kernel failed: {c.get('ename')}: {c.get('evalue')}")
        return "".join(out)
