"""Getting an archive onto disk safely: download with resume, checksums, integrity, extraction
into a temporary folder renamed into place, and an inter-process file lock."""
from __future__ import annotations

import contextlib
import gzip
import http.client
import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import Iterator, Optional, Sequence

from ..runs import locks
from .errors import DataError
from .progress import Progress

CHUNK = 1 << 20
PROGRESS_MIN_BYTES = 32 << 20  # smaller files are read, hashed or unpacked in about a second
MARKER = ".simpleclr-source.json"
CORRUPT = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile)
FILTER_ERROR = getattr(tarfile, "FilterError", ())  # Python >= 3.10.12 / 3.11.4


def _counted(tar: tarfile.TarFile, bar: Progress) -> Iterator[tarfile.TarInfo]:
    for member in tar:  # read as extracted: a .tar.gz is not read twice
        yield member
        bar.update()


def _safe_extractall(tar: tarfile.TarFile, dest: Path, archive: Path, bar: Progress) -> None:
    """Extract with the "data" filter (no absolute paths, links out, devices); on an older Python
    without it, refuse such members by hand."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, members=_counted(tar, bar), filter="data")
        return
    members = tar.getmembers()
    for m in members:
        if m.name.startswith("/") or ".." in Path(m.name).parts or not (m.isfile() or m.isdir()):
            raise DataError(f"{archive} holds an unsafe member {m.name!r}: refusing to extract it; "
                            "delete the archive")
    tar.extractall(dest, members=members)


# ---- checksums ----------------------------------------------------------------------------------
def file_hashes(path: Path) -> tuple[str, str]:
    """(md5, sha256) of a file, read once (with progress: a 250 MB archive takes seconds)."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as f, Progress(path.stat().st_size, f"verifying {path.name}", "B",
                                         min_total=PROGRESS_MIN_BYTES) as bar:
        while block := f.read(CHUNK):
            md5.update(block)
            sha.update(block)
            bar.update(len(block))
    return md5.hexdigest(), sha.hexdigest()


def accepted_checksum(accept: Optional[str], md5: Optional[str],
                      sha256: Optional[str]) -> Optional[str]:
    """The entry of ``accept`` that vouches for a file with these hashes, else None.

    ``accept`` is "any" or a comma-separated list of md5/sha256 sums, so one setting (say
    ``SIMPLECLR_ACCEPT_CHECKSUM``) can accept the re-packed archives of several datasets; the
    provenance records only the entry that matched this file.
    """
    for entry in (accept or "").split(","):
        a = entry.strip().lower()
        if a and (a == "any" or a in (md5, sha256)):
            return a
    return None


def accepts(accept: Optional[str], md5: Optional[str], sha256: Optional[str]) -> bool:
    """Whether ``accept`` (md5/sha256 sums, comma-separated, or "any") vouches for these hashes."""
    return accepted_checksum(accept, md5, sha256) is not None


# ---- integrity and extraction -------------------------------------------------------------------
def is_zip(path: Path) -> bool:
    return path.name.endswith(".zip")


def integrity_error(archive: Path) -> Optional[str]:
    """None when every member of the archive decompresses; else what is wrong with it."""
    try:
        if is_zip(archive):
            with zipfile.ZipFile(archive) as z:
                bad = z.testzip()
                return None if bad is None else f"member {bad} fails its CRC check"
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if member.isfile():
                    f = tar.extractfile(member)
                    while f is not None and f.read(CHUNK):
                        pass
        return None
    except CORRUPT as e:
        return f"{type(e).__name__}: {e}"


def extract(archive: Path, dest: Path, folder: str, marker: dict, required: Sequence[str] = (), *,
            remove_archive_if_corrupt: bool = False) -> Path:
    """Extract ``archive`` into a temporary folder under ``dest``, check that it holds ``folder``,
    check that it holds every file in ``required``, write ``marker``
    (where the files came from) into it and rename it to ``dest/folder``.

    A truncated or corrupt archive raises DataError and leaves no partial files behind.
    """
    target = dest / folder
    tmp = Path(tempfile.mkdtemp(dir=dest, prefix=f".{folder}.extract-"))
    try:
        big = archive.stat().st_size >= PROGRESS_MIN_BYTES
        if is_zip(archive):
            with zipfile.ZipFile(archive) as z:
                names = z.namelist()
                for name in names:
                    if name.startswith("/") or ".." in Path(name).parts:
                        raise DataError(f"{archive} holds an unsafe path {name!r}: refusing to "
                                        "extract it; delete the archive")
                with Progress(len(names) if big else 0, f"extracting {archive.name}", "files",
                              min_total=1) as bar:
                    for name in names:
                        z.extract(name, tmp)
                        bar.update()
        else:
            with tarfile.open(archive, "r:*") as tar, \
                    Progress(None if big else 0, f"extracting {archive.name}", "files",
                             min_total=1) as bar:
                _safe_extractall(tar, tmp, archive, bar)
        src = tmp / folder
        if not src.is_dir():
            found = sorted(p.name for p in tmp.iterdir())[:5]
            raise DataError(f"{archive} does not hold the folder {folder}/ (found {found}): it is "
                            "not this dataset's archive; delete it and prepare again")
        for name in required:
            if not (src / name).is_file():
                raise DataError(f"{archive} lacks {folder}/{name}: it is incomplete or not this "
                                "dataset's archive; delete it and prepare again")
        (src / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.rename(src, target)
        return target
    except FILTER_ERROR as e:
        raise DataError(f"{archive} holds an unsafe member ({e}): refusing to extract it; delete "
                        "the archive") from e
    except CORRUPT as e:
        what = "removed it: run again to download it again" if remove_archive_if_corrupt else \
            "delete or replace it"
        if remove_archive_if_corrupt:
            archive.unlink(missing_ok=True)
        raise DataError(f"archive {archive} is truncated or corrupt ({type(e).__name__}: {e}); "
                        f"{what}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_marker(folder: Path) -> Optional[dict]:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


# ---- download -----------------------------------------------------------------------------------
def download(url: str, dest: Path, *, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a partial ``.part`` with an HTTP
    Range request (restarting when the server ignores it). Renamed into place only when complete.

    Raises ``urllib.error.URLError``/``OSError`` when the server cannot be reached, and DataError
    when a transfer stops short (the ``.part`` file is kept for the next try to resume).
    """
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "simpleclr"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # the part is not a prefix the server can continue: restart
            part.unlink()
            return download(url, dest, timeout=timeout)
        raise
    with resp:
        resumed = start > 0 and resp.status == 206 and \
            resp.headers.get("Content-Range", "").startswith(f"bytes {start}-")
        if not resumed:
            start = 0
        length = resp.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as f, \
                Progress(total, f"downloading {dest.name}", "B", initial=start) as bar:
            try:
                while block := resp.read(CHUNK):
                    f.write(block)
                    bar.update(len(block))
            except (OSError, ValueError, http.client.HTTPException) as e:  # reset, timeout, short read
                raise DataError(f"download of {url} stopped at {f.tell()} bytes ({e}): run again "
                                f"to resume from {part}") from e
            f.flush()
            os.fsync(f.fileno())
            got = f.tell()
    if total is not None and got != total:
        raise DataError(f"download of {url} stopped at {got} of {total} bytes: run again to resume "
                        f"from {part}")
    os.replace(part, dest)
    return dest


# ---- locking ------------------------------------------------------------------------------------
@contextlib.contextmanager
def file_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the block; another process preparing the same data
    waits here (saying so) instead of writing the same files."""
    def waiting(pid: Optional[int]) -> None:
        who = f"another process (pid {pid})" if pid else "another process"
        print(f"simpleclr: waiting for {who} preparing {what} ({path})", file=sys.stderr, flush=True)

    with locks.file_lock(path, wait=True, on_wait=waiting):
        yield
