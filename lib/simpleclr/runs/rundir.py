"""The run folder: config, provenance, metrics, checkpoints and result, written so that no
failure or interruption leaves a half-written file behind.

Layout of one run folder (format :data:`RUN_FORMAT`; format 1 folders have no steps.jsonl, no
predictions.npz and checkpoints without a step trace, and are read as they are)::

    config.json     {"stage", "fingerprint", "config", "provenance", "data", "format"}
    metrics.jsonl   one JSON object per line (per epoch), appended and flushed
    steps.jsonl     the training loss along the steps: {"step", "epoch" (fractional), "loss" (mean
                    since the row before), "lr"}, at most about 200 rows a run, written per epoch
    result.json     the final figures; its presence (with a matching fingerprint) means "done"
    checkpoints/    last.pt (for resume) and final.pt (the model), each written atomically
    features.pt     evaluation only: frozen test features for the report's t-SNE
    predictions.npz supervised and linear_eval: per-image test predictions (:mod:`.predictions`)
    notebook.ipynb  the executed notebook, when the run came from a plan
    tensorboard/    training stages, where tensorboard is installed: the same curves as event files
                    (:mod:`.curves`), for watching a run; not part of the record
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import platform
import re
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from ..types import PathLike
from ..errors import SimpleCLRError
from .locks import LockHeld, file_lock, holder_text

# The run-folder format this code writes: 2 has the step trace (steps.jsonl and the checkpoints'
# open window) and predictions.npz; 1 had neither. Recorded in config.json as "format".
RUN_FORMAT = 2


class RunConflict(SimpleCLRError, RuntimeError):
    """A run folder already holds a different run."""


class CheckpointError(SimpleCLRError, RuntimeError):
    """A run folder's checkpoint that cannot be loaded; one line naming it and what to do."""


class RunLocked(SimpleCLRError, RuntimeError):
    """Another process is writing the run folder; one line naming its pid."""

    def __init__(self, path: PathLike, pid: Optional[int], host: Optional[str] = None):
        who = f"another process ({holder_text(pid, host)})" if pid else "another process"
        super().__init__(f"{path} is being written by {who}: wait for it to finish or stop it; "
                         "two writers would mix their metrics and checkpoints")
        self.pid, self.host = pid, host


RESTART = "delete it and run again to restart this run from its first epoch"


# ---- atomic writes ----------------------------------------------------------------------
@contextlib.contextmanager
def _replacing(path: PathLike) -> Iterator[str]:
    """Yield a temporary file beside ``path`` to write; then fsync it and rename it into place
    (on any failure it is removed and ``path`` is untouched). It gets the permissions a plain
    ``open`` would give: mkstemp's 0600 would hide results from the rest of a shared group."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it into place."""
    with _replacing(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_json(path: PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    """``torch.save`` through a temporary file and a rename: a crash never leaves a torn checkpoint."""
    import torch

    with _replacing(path) as tmp:
        torch.save(obj, tmp)


class TorchFileError(SimpleCLRError, RuntimeError):
    """A torch file that ``weights_only`` loading refuses or cannot parse. ``reason`` is one short
    line; callers raise their own error with it, adding what to do."""

    def __init__(self, path: PathLike, reason: str):
        super().__init__(f"cannot load {path}: {reason}")
        self.path, self.reason = Path(path), reason


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _load_failure(e: BaseException) -> str:
    """torch.load's many-line complaint as one short reason (never its advice to drop weights_only)."""
    text = str(e)
    refused = _GLOBAL.search(text)
    if refused:
        return (f"it holds {refused.group(1)}, which is neither a tensor nor a plain container; "
                "loading it could run code, so it is refused")
    if isinstance(e, EOFError):
        return "it is empty or cut short"
    if isinstance(e, pickle.UnpicklingError):
        return "it is not a file that torch.save wrote (or it is damaged)"
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return first.split(". ")[0].rstrip(".")


def load_torch_file(path: PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain containers only, so no file can
    run code while it loads. Any failure is a :class:`TorchFileError` with a one-line reason."""
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - garbage can fail in any layer of the unpickler
        raise TorchFileError(path, _load_failure(e)) from None


class BrokenRun(SimpleCLRError, ValueError):
    """A damaged JSON file (a run's config.json or result.json, a plan's manifest); one line naming
    it and what to do. A ValueError, as the JSONDecodeError it replaces was, so callers that
    tolerate a torn file (``except ValueError``) still do."""


def read_json(path: PathLike, advice: str = "delete it and run again to write it anew") -> Optional[dict]:
    """The JSON object in ``path``, None when there is no file; anything else (cut short, edited
    into invalid JSON, not an object) is a :class:`BrokenRun` naming the file, ending in ``advice``."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise BrokenRun(f"{path} is damaged (not valid JSON: {e}): {advice}") from None
    if not isinstance(obj, dict):
        raise BrokenRun(f"{path} is damaged (holds {json.dumps(obj)[:40]} instead of a JSON "
                        f"object): {advice}")
    return obj


# ---- provenance -------------------------------------------------------------------------
def git_commit(cwd: Optional[PathLike] = None) -> Optional[str]:
    """The commit of the source tree (with ``+dirty`` when it has uncommitted changes), or None."""
    where = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def hardware() -> dict:
    """What the run ran on: CPU, core count, GPU name if any."""
    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(),
                            "cpu_count": os.cpu_count(), "hostname": socket.gethostname()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        info["cpu"] = platform.processor()
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
    except ImportError:
        pass
    return info


def library_versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("simpleclr", "torch", "torchvision", "numpy", "papermill", "scikit-learn"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def provenance(device: Optional[str] = None) -> dict:
    """Everything needed to trace a number back to what produced it."""
    return {"git_commit": git_commit(), "versions": library_versions(), "hardware": hardware(),
            "device": device, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


# ---- the run folder ---------------------------------------------------------------------
def _read_rows(path: Path) -> list[dict]:
    """The JSON lines of ``path`` ([] when there is none); a line torn by a kill is dropped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _rewrite_rows(path: Path, keep: Iterable[dict]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in keep).encode())


class RunDir:
    """One stage's output folder. Only one process (rank 0) should write through it."""

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self.config_path = self.path / "config.json"
        self.metrics_path = self.path / "metrics.jsonl"
        self.steps_path = self.path / "steps.jsonl"
        self.result_path = self.path / "result.json"
        self.checkpoint_dir = self.path / "checkpoints"
        self.features_path = self.path / "features.pt"
        self.notebook_path = self.path / "notebook.ipynb"
        self.progress_path = self.path / "progress.json"
        self.lock_path = self.path / ".lock"

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # the one writer ----------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder's lock for the block: one writer per run folder, and a second process
        is refused at once (:class:`RunLocked`). A folder that this call created and that is still
        empty when the block ends (it failed before writing) is removed again."""
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            if created:
                stack.callback(self._remove_if_empty)
            try:
                stack.enter_context(file_lock(self.lock_path, wait=False))
            except LockHeld as e:
                raise RunLocked(self.path, e.pid, e.host) from None
            yield

    def _remove_if_empty(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()

    # status ------------------------------------------------------------------------------
    def read_config(self) -> Optional[dict]:
        return read_json(self.config_path, f"delete the folder {self.path} to redo the run")

    def read_result(self) -> Optional[dict]:
        return read_json(self.result_path, "delete it and run again to write it anew (training "
                                           "resumes from its last checkpoint)")

    def status(self, fingerprint: Optional[str] = None, rehearsal: bool = False) -> str:
        """"done", "partial" (started, can resume), "todo", "stale" (holds another config, or a
        rehearsal where ``rehearsal`` is False and the reverse), or "broken" (its config.json or
        result.json is damaged: :meth:`problem` says which)."""
        try:
            cfg = self.read_config()
            if cfg is None:
                return "todo"
            if fingerprint is not None and cfg.get("fingerprint") != fingerprint:
                return "stale"
            if fingerprint is not None and bool((cfg.get("config") or {}).get("rehearsal", 0)) != rehearsal:
                return "stale"
            return "done" if self.read_result() is not None else "partial"
        except BrokenRun:
            return "broken"

    def problem(self) -> Optional[str]:
        """Why the folder is broken, in one line; None when its JSON files read."""
        try:
            self.read_config()
            self.read_result()
        except BrokenRun as e:
            return str(e)
        return None

    def finished(self, cfg: Any) -> Optional[dict]:
        """The stored result when the folder holds ``cfg``'s finished run, None when it holds
        nothing yet or an unfinished run of ``cfg``. Another config's run is a
        :class:`RunConflict` (never overwritten), a damaged file a :class:`BrokenRun`."""
        fp = cfg.fingerprint()
        saved = self.read_config()
        if saved is None:
            return None
        if saved.get("fingerprint") != fp:
            raise RunConflict(
                f"{self.path} holds a run with another config (fingerprint {saved.get('fingerprint')}, "
                f"this one {fp}): choose a new output folder, or delete that one to redo it"
            )
        cut = (saved.get("config") or {}).get("rehearsal", 0)
        if bool(cut) != bool(getattr(cfg, "rehearsal", 0)):  # same fingerprint: a cut run is not the run
            raise RunConflict(
                f"{self.path} holds {'a rehearsal' if cut else 'the real run'} of this config, and "
                f"this is {'the real run' if cut else 'a rehearsal'}: choose another output folder"
            )
        return self.read_result()

    def start(self, cfg: Any, data: Optional[dict] = None, device: Optional[str] = None) -> str:
        """Claim the folder for ``cfg`` (a StageConfig) and return its status before this call
        ("todo", "partial" or "done"); another config's run or a damaged file raise as
        :meth:`finished` says."""
        if self.finished(cfg) is not None:
            return "done"
        if self.read_config() is not None:
            return "partial"
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.config_path, {"stage": cfg.stage, "fingerprint": cfg.fingerprint(),
                                             "config": cfg.to_dict(), "data": data or {},
                                             "provenance": provenance(device), "format": RUN_FORMAT})
        return "todo"

    # metrics (one row per epoch) and the step trace (one row per few steps) ------------------
    def log_metrics(self, row: dict) -> None:
        """Append one JSON line and flush it to disk."""
        self._append(self.metrics_path, [row])

    def read_metrics(self) -> list[dict]:
        return _read_rows(self.metrics_path)

    def truncate_metrics(self, keep: Iterable[dict]) -> None:
        """Rewrite metrics to ``keep`` (on resume: drop rows past the checkpoint)."""
        _rewrite_rows(self.metrics_path, keep)

    def log_steps(self, rows: Iterable[dict]) -> None:
        """Append step-trace rows (an epoch's at a time) and flush them to disk."""
        self._append(self.steps_path, rows)

    def read_steps(self) -> list[dict]:
        """The step trace; [] for a format 1 run folder."""
        return _read_rows(self.steps_path)

    def truncate_steps(self, keep: Iterable[dict]) -> None:
        """Rewrite the step trace to ``keep`` (on resume: drop rows past the checkpoint)."""
        _rewrite_rows(self.steps_path, keep)

    def _append(self, path: Path, rows: Iterable[dict]) -> None:
        text = "".join(json.dumps(r, default=float) + "\n" for r in rows)
        if not text:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    # progress of a running stage (what `plan run` shows while its notebook executes) -------
    def write_progress(self, step: int, total_steps: int, elapsed_s: float) -> None:
        """Where the training loop stands; rewritten every few seconds, read by other processes."""
        atomic_write_json(self.progress_path, {"step": step, "total_steps": total_steps,
                                               "elapsed_s": elapsed_s, "written_at": time.time()})

    def read_progress(self) -> Optional[dict]:
        try:
            return read_json(self.progress_path)
        except (OSError, ValueError):  # a progress line is never worth an error
            return None

    # checkpoints -------------------------------------------------------------------------
    def checkpoint_path(self, name: str = "last") -> Path:
        return self.checkpoint_dir / f"{name}.pt"

    def save_checkpoint(self, state: dict, name: str = "last") -> Path:
        path = self.checkpoint_path(name)
        atomic_torch_save(state, path)
        return path

    def load_checkpoint(self, name: str = "last", map_location: Any = "cpu",
                        required: Iterable[str] = ()) -> Optional[dict]:
        """The checkpoint's dict (``weights_only=True``: tensors and plain containers), None when
        there is none; a damaged, refused or incomplete file is a :class:`CheckpointError`."""
        path = self.checkpoint_path(name)
        if not path.exists():
            return None
        try:
            state = load_torch_file(path, map_location)
        except TorchFileError as e:
            raise CheckpointError(f"{e}: {RESTART}") from None
        missing = sorted(set(required) - set(state)) if isinstance(state, dict) else ["(a dict)"]
        if missing:
            raise CheckpointError(f"{path} is not a whole checkpoint (lacks {', '.join(missing)}): "
                                  f"{RESTART}")
        return state

    # result ------------------------------------------------------------------------------
    def write_result(self, result: dict) -> None:
        """Write result.json last: its presence marks the run as finished. It records the session
        that finished the run (``finished_by``: commit, versions, hardware, time), since a run that
        was interrupted and resumed may have started under another commit than config.json's."""
        cfg = self.read_config() or {}
        by = provenance((cfg.get("provenance") or {}).get("device"))
        by["finished_at"] = by.pop("started_at")
        atomic_write_json(self.result_path, {"stage": cfg.get("stage"), "fingerprint": cfg.get("fingerprint"),
                                             "finished_by": by, **result})
