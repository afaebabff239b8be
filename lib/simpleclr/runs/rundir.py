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
    progress.json   where a running stage stands, for `plan run` to show

tensorboard/, progress.json and steps.jsonl are optional (:mod:`.sidecars`): one that cannot be
written warns once and the run trains on. config.json, metrics.jsonl, the checkpoints and
result.json are the record: their failures stop the run, the last checkpoint intact.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import platform
import re
import socket
import stat
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from ..types import PathLike
from ..errors import SimpleCLRError, one_line
from .locks import LockHeld, file_lock, holder_text
from .sidecars import Sidecar

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


class DiskFull(SimpleCLRError, RuntimeError):
    """A write into a run folder found no space left; one line naming the folder, what is intact
    and what to do. ``errno`` is the write's (ENOSPC or EDQUOT)."""

    def __init__(self, message: str, code: int = errno.ENOSPC):
        super().__init__(message)
        self.errno = code


class RunFolderError(SimpleCLRError, RuntimeError):
    """An output path that cannot hold a run folder (a file, a device, a dangling or looping
    link, a folder of other files); one line saying what it is and what to do."""


RESTART = "delete it and run again to restart this run from its first epoch"
# Errors of a write that found the disk (or the user's quota) full.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# Everything this code writes into a run folder: a folder holding anything else, and no
# config.json, is not a run folder (see :meth:`RunDir.check_claimable`).
RUN_FILES = frozenset({"config.json", "metrics.jsonl", "steps.jsonl", "result.json", "checkpoints",
                       "features.pt", "predictions.npz", "notebook.ipynb", "progress.json",
                       "tensorboard", "trials", ".lock"})
# The environment variable that lets a stage write into a non-empty folder that is not a run
# folder (set by the CLI's --allow-foreign-out, inherited by a launcher's processes): its value
# is that folder's resolved path.
ALLOW_FOREIGN_OUT = "SIMPLECLR_ALLOW_FOREIGN_OUT"


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


def full_disk_error(e: BaseException) -> Optional[OSError]:
    """The ENOSPC/EDQUOT ``OSError`` behind ``e``, if any: torch's zip writer, closing after a
    failed write, raises its own "unexpected pos" RuntimeError over the OSError it met."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in NO_SPACE:
            return e
        e = e.__cause__ or e.__context__
    return None


def no_space(path: PathLike, e: OSError, kept: str = "the previous version of it is intact") -> DiskFull:
    """The one line for a write of ``path`` that found the disk full."""
    return DiskFull(f"no space left on {Path(path).parent}: {Path(path).name} was not written, "
                    f"{kept}; free space and run the same command again", e.errno or errno.ENOSPC)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it into place."""
    try:
        with _replacing(path) as tmp, open(tmp, "wb") as f:
            f.write(data)
    except OSError as e:
        if e.errno in NO_SPACE:
            raise no_space(path, e) from None
        raise


def atomic_write_json(path: PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    """``torch.save`` through a temporary file and a rename: a crash never leaves a torn checkpoint.
    It writes through a Python file so that a full disk is the ``OSError`` (ENOSPC) it is, not
    torch's "unexpected pos" from its own writer."""
    import torch

    with _replacing(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


class TorchFileError(SimpleCLRError, RuntimeError):
    """A torch file that ``weights_only`` loading refuses or cannot parse. ``reason`` is one short
    line; callers raise their own error with it, adding what to do."""

    def __init__(self, path: PathLike, reason: str):
        super().__init__(f"cannot load {path}: {reason}")
        self.path, self.reason = Path(path), reason


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
# torch.save writes a zip of stored (uncompressed) entries whose sizes add up to the file's size;
# the few bytes more are the zip's own headers, per entry.
ZIP_OVERHEAD_PER_ENTRY = 512


def check_torch_archive(path: PathLike, require_zip: bool = False) -> None:
    """Refuse, before ``torch.load`` allocates anything, a torch file whose archive could expand:
    a compressed entry (torch.save never compresses: a zip bomb), entries that declare more bytes
    than the file holds, or (``require_zip``) the pre-1.6 format, whose storages are allocated
    at the size the file declares. Raises :class:`TorchFileError` with a one-line reason."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if not zipfile.is_zipfile(path):
            if require_zip:
                raise TorchFileError(path, "it is not a zip archive as torch.save writes (damaged, "
                                           "or the pre-1.6 format this code never writes)")
            return
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        raise TorchFileError(path, f"it cannot be read as an archive ({type(e).__name__}: "
                                   f"{one_line(str(e), 80)})") from None
    packed = [i.filename for i in infos if i.compress_type != zipfile.ZIP_STORED]
    if packed:
        raise TorchFileError(path, f"it holds a compressed entry ({one_line(packed[0], 60)}), which "
                                   "torch.save never writes; a compressed entry can expand without "
                                   "bound, so it is refused")
    declared = sum(i.file_size for i in infos)
    if declared > size + ZIP_OVERHEAD_PER_ENTRY * len(infos):
        raise TorchFileError(path, f"its entries declare {declared:,} bytes in a file of "
                                   f"{size:,}; it is damaged or forged, so it is refused")


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


def load_torch_file(path: PathLike, map_location: Any = "cpu", require_zip: bool = False) -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain containers only, so no file can
    run code while it loads, and none can expand past its size (:func:`check_torch_archive`).
    Any failure is a :class:`TorchFileError` with a one-line reason."""
    import torch

    check_torch_archive(path, require_zip)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - garbage can fail in any layer of the unpickler
        raise TorchFileError(path, _load_failure(e)) from None
    forged = expanded_tensor(obj)
    if forged:
        raise TorchFileError(path, forged)
    return obj


def expanded_tensor(obj: Any) -> Optional[str]:
    """Why a tensor inside ``obj`` (dicts, lists and tuples walked without recursion) claims more
    elements than its storage holds, None when none does. torch.save of ``x.expand(...)`` stores one
    element and zero strides: a few bytes that any copy (``.contiguous()``, ``.numpy()``, t-SNE)
    turns into the full size, 128 GB from a 3 kB file."""
    import torch

    todo, seen = [obj], 0
    while todo and seen < 1_000_000:
        item = todo.pop()
        seen += 1
        if isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, (list, tuple)):
            todo.extend(item)
        elif isinstance(item, torch.Tensor) and item.layout == torch.strided and item.numel():
            extent = item.storage_offset() + sum((n - 1) * abs(st) for n, st in
                                                 zip(item.shape, item.stride())) + 1
            stored = item.untyped_storage().nbytes() // max(item.element_size(), 1)
            if item.numel() > stored or extent > stored:
                return (f"it holds a tensor of shape {one_line(str(tuple(item.shape)), 60)} over "
                        f"{stored:,} stored elements (expanded with zero strides); a copy of it "
                        "would allocate the full size, so it is refused")
    return None


class BrokenRun(SimpleCLRError, ValueError):
    """A damaged JSON file (a run's config.json or result.json, a plan's manifest); one line naming
    it and what to do. A ValueError, as the JSONDecodeError it replaces was, so callers that
    tolerate a torn file (``except ValueError``) still do."""


# A run folder's JSON files (config.json, result.json, a plan's manifest) and its JSON-lines
# files (metrics.jsonl, steps.jsonl) are a few kB to a few MB; anything far larger is not one
# (a 10,000-run plan's manifest is about 30 MB).
MAX_JSON_BYTES = 64 * 2**20
MAX_ROWS_BYTES = 64 * 2**20


def _read_text(path: Path, limit: int, advice: str) -> str:
    """The text of ``path``, refused (:class:`BrokenRun`) above ``limit`` bytes or unreadable."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise BrokenRun(f"{path} is damaged (not a regular file): {advice}")
        size = info.st_size
        if size > limit:
            raise BrokenRun(f"{path} is damaged ({size:,} bytes, more than the {limit:,} such a "
                            f"file can hold): {advice}")
        return path.read_bytes().decode()
    except UnicodeDecodeError:
        raise BrokenRun(f"{path} is damaged (not UTF-8 text): {advice}") from None
    except OSError as e:
        raise BrokenRun(f"{path} cannot be read ({e.strerror or e}): {advice}") from None


def read_json(path: PathLike, advice: str = "delete it and run again to write it anew") -> Optional[dict]:
    """The JSON object in ``path``, None when there is no file; anything else (cut short, edited
    into invalid JSON, nested past the parser's depth, too large, not an object) is a
    :class:`BrokenRun` naming the file, ending in ``advice``."""
    path = Path(path)
    if not path.exists():
        return None
    text = _read_text(path, MAX_JSON_BYTES, advice)
    try:
        obj = json.loads(text)
    except ValueError as e:  # JSONDecodeError is a ValueError
        raise BrokenRun(f"{path} is damaged (not valid JSON: {one_line(str(e), 80)}): {advice}") from None
    except RecursionError:
        raise BrokenRun(f"{path} is damaged (nested too deep to be a run's JSON): {advice}") from None
    if not isinstance(obj, dict):
        raise BrokenRun(f"{path} is damaged (holds {one_line(json.dumps(obj), 40)} instead of a "
                        f"JSON object): {advice}")
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
    """The JSON objects on the lines of ``path`` ([] when there is none); a line torn by a kill
    (or anything but an object) is dropped; a file too large to be one is a :class:`BrokenRun`."""
    if not path.exists():
        return []
    rows = []
    for line in _read_text(path, MAX_ROWS_BYTES, RESTART).splitlines():
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(row, dict):
            rows.append(row)
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
        self._saved_epochs: dict[str, Any] = {}  # checkpoint name -> epoch, as written or read
        # the optional files: one that cannot be written warns once and is left (:mod:`.sidecars`)
        self.progress_file = Sidecar(self.progress_path, "progress file")
        self.step_trace = Sidecar(self.steps_path, "step trace")

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def check_path(self) -> None:
        """Refuse, in one line (:class:`RunFolderError`), an output path that cannot be a run
        folder: an existing file or device, a dangling symbolic link, a loop of links, or a path
        under a file. Nothing is created."""
        p = self.path
        try:
            info = p.stat()
        except FileNotFoundError:
            if p.is_symlink():
                raise RunFolderError(f"--out {p} is a symbolic link to {os.readlink(p)}, which does "
                                     "not exist: create that folder, or give another path") from None
            parent = next((q for q in p.parents if q.exists() or q.is_symlink()), None)
            if parent is not None and not parent.is_dir():
                raise RunFolderError(f"--out {p} lies under {parent}, which is not a folder: "
                                     "give a path in a folder") from None
            return
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise RunFolderError(f"--out {p} is a loop of symbolic links: remove the links, "
                                     "or give another path") from None
            if e.errno == errno.ENOTDIR:
                raise RunFolderError(f"--out {p} lies under a file, not a folder: give a path "
                                     "in a folder") from None
            raise RunFolderError(f"--out {p} cannot be used ({e.strerror}): give another "
                                 "path") from None
        if not stat.S_ISDIR(info.st_mode):
            kind = "a file" if stat.S_ISREG(info.st_mode) else "a device or special file"
            raise RunFolderError(f"--out {p} is {kind}, not a folder: give the path of a new or "
                                 "run folder (nothing was written)")

    def check_claimable(self) -> None:
        """Refuse (:class:`RunFolderError`) a non-empty folder that holds no run (no config.json)
        and other files than a run folder's own: a run would overwrite its metrics.jsonl and
        steps.jsonl or mix its files with them. The environment variable
        :data:`ALLOW_FOREIGN_OUT` naming this folder (the CLI's ``--allow-foreign-out``) allows it."""
        if not self.path.is_dir() or self.config_path.exists():
            return
        allowed = os.environ.get(ALLOW_FOREIGN_OUT)
        if allowed and Path(allowed).resolve() == self.path.resolve():
            return
        foreign = sorted(e.name for e in os.scandir(self.path)
                         if e.name not in RUN_FILES - {"metrics.jsonl", "steps.jsonl", "result.json"}
                         and not (e.name.startswith(".") and e.name.endswith(".tmp")))
        if foreign:
            shown = ", ".join(one_line(n, 40) for n in foreign[:3]) + (" ..." if len(foreign) > 3 else "")
            raise RunFolderError(f"{self.path} is not empty and is not a run folder (it holds "
                                 f"{shown} and no config.json): give a new or empty folder, or "
                                 "pass --allow-foreign-out to write the run into it anyway")

    # the one writer ----------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder's lock for the block: one writer per run folder, and a second process
        is refused at once (:class:`RunLocked`). A folder that this call created and that is still
        empty when the block ends (it failed before writing) is removed again."""
        self.check_path()
        self.check_claimable()
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

    def status(self, fingerprint: Optional[str] = None, rehearsal: bool = False,
               config_class: Optional[type] = None) -> str:
        """"done", "partial" (started, can resume), "todo", "stale" (holds another config, or a
        rehearsal where ``rehearsal`` is False and the reverse), or "broken" (its config.json or
        result.json is damaged, or, given the stage's ``config_class``, config.json's fingerprint
        is not its config's: :meth:`problem` says which)."""
        try:
            cfg = self.read_config()
            if cfg is None:
                return "todo"
            if config_class is not None and (cfg.get("stage") == getattr(config_class, "stage", None)
                                             or cfg.get("fingerprint") == fingerprint):
                self.check_identity(cfg, config_class)
            if fingerprint is not None and cfg.get("fingerprint") != fingerprint:
                return "stale"
            if fingerprint is not None and bool((cfg.get("config") or {}).get("rehearsal", 0)) != rehearsal:
                return "stale"
            return "done" if self.read_result() is not None else "partial"
        except BrokenRun:
            return "broken"

    def problem(self, config_class: Optional[type] = None) -> Optional[str]:
        """Why the folder is broken, in one line; None when its JSON files read (and, given the
        stage's ``config_class``, a config.json of that stage proves its identity)."""
        try:
            saved = self.read_config()
            self.read_result()
            if saved is not None and config_class is not None and \
                    saved.get("stage") == getattr(config_class, "stage", None):
                self.check_identity(saved, config_class)
        except BrokenRun as e:
            return str(e)
        return None

    def check_identity(self, saved: dict, config_class: type) -> None:
        """config.json must be what :meth:`start` wrote for a run of ``config_class``'s stage: its
        stage that one, its config valid, and its fingerprint recomputed from that config equal
        to the stored one. Otherwise the folder's files may belong to another run (a hand edit, a
        copy, damage): :class:`BrokenRun` "config.json was edited or damaged"."""
        def refuse(why: str) -> BrokenRun:
            return BrokenRun(f"{self.config_path}: config.json was edited or damaged ({why}): "
                             f"delete the folder {self.path} to redo the run, or restore the file")

        stage = getattr(config_class, "stage", None)
        if saved.get("stage") != stage:
            raise refuse(f"it says stage {one_line(repr(saved.get('stage')), 40)}, this is a "
                         f"{stage} run")
        config = saved.get("config")
        if not isinstance(config, dict):
            raise refuse("it holds no config")
        try:
            fp = config_class.from_dict(config).fingerprint()
        except Exception as e:  # noqa: BLE001 - any value a hand edit leaves must refuse, not crash
            raise refuse(f"its config is not valid: {one_line(str(e), 120)}") from None
        if fp != saved.get("fingerprint"):
            raise refuse(f"its fingerprint {one_line(str(saved.get('fingerprint')), 20)} is not its "
                         f"config's, {fp}; a simpleclr whose config fields differ from the one that "
                         "wrote it would also see this")

    def finished(self, cfg: Any) -> Optional[dict]:
        """The stored result when the folder holds ``cfg``'s finished run, None when it holds
        nothing yet or an unfinished run of ``cfg``. Another config's run is a
        :class:`RunConflict` (never overwritten), a damaged file a :class:`BrokenRun`."""
        fp = cfg.fingerprint()
        saved = self.read_config()
        if saved is None:
            return None
        if saved.get("stage") == cfg.stage or saved.get("fingerprint") == fp:  # else another run's
            self.check_identity(saved, type(cfg))
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
        self.check_path()
        self.check_claimable()
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
        """Append step-trace rows (an epoch's at a time) and flush them to disk. The trace is
        optional: a failed write warns once and the run goes on without it (:attr:`step_trace`)."""
        self.step_trace.write(self._append, self.steps_path, list(rows))

    def read_steps(self) -> list[dict]:
        """The step trace; [] for a format 1 run folder."""
        return _read_rows(self.steps_path)

    def truncate_steps(self, keep: Iterable[dict]) -> None:
        """Rewrite the step trace to ``keep`` (on resume: drop rows past the checkpoint); like
        :meth:`log_steps`, a failure warns once."""
        self.step_trace.write(_rewrite_rows, self.steps_path, list(keep))

    def _append(self, path: Path, rows: Iterable[dict]) -> None:
        text = "".join(json.dumps(r, default=float) + "\n" for r in rows)
        if not text:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            with open(path, "a") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # a torn last line is dropped when the file is read
            if e.errno in NO_SPACE:
                raise no_space(path, e, "its earlier rows and the checkpoints are intact") from None
            raise

    # progress of a running stage (what `plan run` shows while its notebook executes) -------
    def write_progress(self, step: int, total_steps: int, elapsed_s: float) -> None:
        """Where the training loop stands; rewritten every few seconds, read by other processes.
        Optional: a failed write warns once and the run goes on without it (:attr:`progress_file`)."""
        self.progress_file.write(atomic_write_json, self.progress_path,
                                 {"step": step, "total_steps": total_steps, "elapsed_s": elapsed_s,
                                  "written_at": time.time()})

    def read_progress(self) -> Optional[dict]:
        try:
            return read_json(self.progress_path)
        except (OSError, ValueError):  # a progress line is never worth an error
            return None

    # checkpoints -------------------------------------------------------------------------
    def checkpoint_path(self, name: str = "last") -> Path:
        return self.checkpoint_dir / f"{name}.pt"

    def save_checkpoint(self, state: dict, name: str = "last") -> Path:
        """Write ``state`` atomically as ``checkpoints/<name>.pt``. A full disk is a
        :class:`DiskFull` naming the folder and the epoch of the checkpoint still intact."""
        path = self.checkpoint_path(name)
        try:
            atomic_torch_save(state, path)
        except (OSError, RuntimeError) as e:
            full = full_disk_error(e)
            if full is None:
                raise
            raise DiskFull(f"no space left on {self.checkpoint_dir}: {self._intact(name)}; free "
                           "space and run the same command again", full.errno) from None
        self._saved_epochs[name] = state.get("epoch")
        return path

    def _intact(self, name: str) -> str:
        """What a failed write of checkpoint ``name`` left, for the message that says so."""
        path = self.checkpoint_path(name)
        if not path.exists():
            return "no checkpoint was written before it, finished work is kept"
        epoch = self._saved_epochs.get(name)
        if epoch is None:
            with contextlib.suppress(Exception):
                epoch = (load_torch_file(path, require_zip=True) or {}).get("epoch")
        at = f" (epoch {epoch})" if epoch is not None else ""
        return f"the last checkpoint{at} is intact"

    def load_checkpoint(self, name: str = "last", map_location: Any = "cpu",
                        required: Iterable[str] = ()) -> Optional[dict]:
        """The checkpoint's dict (``weights_only=True``: tensors and plain containers), None when
        there is none; a damaged, refused or incomplete file is a :class:`CheckpointError`."""
        path = self.checkpoint_path(name)
        if not path.exists():
            return None
        try:
            state = load_torch_file(path, map_location, require_zip=True)
        except TorchFileError as e:
            raise CheckpointError(f"{e}: {RESTART}") from None
        missing = sorted(set(required) - set(state)) if isinstance(state, dict) else ["(a dict)"]
        if missing:
            raise CheckpointError(f"{path} is not a whole checkpoint (lacks "
                                  f"{one_line(', '.join(map(str, missing)), 80)}): {RESTART}")
        saved = self.read_config() if state.get("fingerprint") is not None else None
        if saved is not None and state["fingerprint"] != saved.get("fingerprint"):
            raise CheckpointError(f"{path} belongs to another run (fingerprint "
                                  f"{one_line(str(state['fingerprint']), 20)}, the folder's "
                                  f"{one_line(str(saved.get('fingerprint')), 20)}; copied or "
                                  f"damaged): {RESTART}")
        self._saved_epochs[name] = state.get("epoch")
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
