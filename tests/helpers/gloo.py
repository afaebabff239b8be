"""Processes joined in one gloo group for a whole test module, as lightly's tests share one: the
two-process tests send a function to every rank instead of starting processes of their own
(torch's import and the group's set-up took about 5 s a test on the 2-core CPUs).

A rank runs ``fn(world, *args)`` and sends back its return value (pickled over a pipe between
the test's own processes, never read from a file) or its error's traceback. The functions must
leave the process as they found it (a patched module attribute put back), since the next test's
function runs in the same processes. Tests of how ranks fail together start processes of their
own: a rank that left the group mid-collective would break the pool for every later test.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import socket
import traceback
from typing import Any, Callable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(rank: int, world: int, port: int, conn: Any) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch
    import torch.distributed as dist

    from simpleclr.training.parts.distributed import init_from_env

    torch.set_num_threads(1)
    group = init_from_env(torch.device("cpu"))  # as torchrun's ranks join: from the environment
    try:
        while (job := conn.recv()) is not None:
            fn, args = job
            try:
                conn.send(("ok", fn(group, *args)))
            except BaseException as e:  # the test raises it, with this rank's traceback
                conn.send(("error", "".join(traceback.format_exception(e))))
    finally:
        dist.destroy_process_group()


class GlooPool:
    """``world`` spawned processes in one gloo group on loopback; :meth:`run` a function on all."""

    def __init__(self, world: int = 2):
        ctx = mp.get_context("spawn")
        port = free_port()
        self.conns, self.procs = [], []
        for rank in range(world):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(rank, world, port, child), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    def run(self, fn: Callable[..., Any], *args: Any, timeout: float = 600.0) -> list:
        """Each rank's ``fn(world, *args)``, in rank order; a rank's error fails the test with its
        traceback (and ends the pool: the ranks may no longer agree on where they are)."""
        for conn in self.conns:
            conn.send((fn, args))
        replies = []
        for rank, conn in enumerate(self.conns):
            if not conn.poll(timeout):
                self.close()
                raise TimeoutError(f"rank {rank} gave no answer in {timeout:.0f} s")
            replies.append(conn.recv())
        errors = [(r, v) for r, (kind, v) in enumerate(replies) if kind == "error"]
        if errors:
            self.close()
            raise AssertionError(f"rank {errors[0][0]} failed:\n{errors[0][1]}")
        return [value for _, value in replies]

    def close(self) -> None:
        for conn, proc in zip(self.conns, self.procs):
            if proc.is_alive():
                try:
                    conn.send(None)
                except OSError:
                    pass
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
        self.conns, self.procs = [], []
