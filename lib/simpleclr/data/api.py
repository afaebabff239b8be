"""Resolving a dataset name to cached tensors: cache -> placed archive or extracted folder ->
download -> verify -> extract -> cache, under a per-dataset file lock."""
from __future__ import annotations

import http.client
import os
import sys
import urllib.error
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..types import PathLike
from . import fetch
from .cache import cache_dir, load_arrays, load_labels_array, open_raw, read_meta, write_cache
from .cifar import check_folder
from .errors import ChecksumMismatch, DataError
from .registry import DatasetSpec, get_spec
from .split import Split

MIRROR_ENV = "SIMPLECLR_MIRROR"
DATA_ENV = "SIMPLECLR_DATA"

CHECKSUM_NOTES = {
    "official": "md5 matches the official release",
    "accepted-unofficial": "not the official file: accepted explicitly (accept_checksum)",
    "generated": "generated locally by simpleclr (no published checksum)",
    "user-folder": "not verified: files placed by the user (no archive to check)",
}


def default_data_dir(override: Optional[PathLike] = None) -> Path:
    """The data folder: ``override``, else ``$SIMPLECLR_DATA``, else ``./data`` (absolute)."""
    value = override if override not in (None, "") else os.environ.get(DATA_ENV) or "data"
    return Path(value).expanduser().resolve()


def _check_size(image_size: Optional[int]) -> None:
    if image_size is not None and (not isinstance(image_size, int) or isinstance(image_size, bool)
                                   or not 8 <= image_size <= 512):
        raise DataError(f"image_size={image_size!r} is invalid: use None (native size) or an "
                        "integer in [8, 512]")


def _ensure_writable(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the data folder {root} ({e}): choose another with "
                        f"--data-dir or ${DATA_ENV}") from e
    if not os.access(root, os.W_OK):
        raise DataError(f"the data folder {root} is not writable: choose a writable one with "
                        f"--data-dir or ${DATA_ENV} (a link there to a read-only archive is fine)")


# ---- provenance and acceptance ------------------------------------------------------------------
def _provenance(spec: DatasetSpec, source: str, *, archive: Optional[Path] = None,
                folder: Optional[Path] = None, md5: Optional[str] = None,
                sha256: Optional[str] = None, accepted_with: Optional[str] = None) -> dict:
    out = {"dataset": spec.name, "source": source, "archive": str(archive) if archive else None,
           "folder": str(folder) if folder else None, "url": spec.url, "md5": md5,
           "sha256": sha256, "expected_md5": spec.md5, "checksum": CHECKSUM_NOTES[source]}
    if accepted_with:
        out["accepted_with"] = accepted_with
    if spec.params:
        out["generator"] = dict(spec.params)
    return out


def _check_accepted(spec: DatasetSpec, prov: dict, accept: Optional[str], where: Path) -> None:
    """Data built from a re-packed archive is served only when this call accepts it too."""
    if prov.get("source") != "accepted-unofficial":
        return
    if fetch.accepts(accept, prov.get("md5"), prov.get("sha256")):
        return
    sha = prov.get("sha256")
    raise ChecksumMismatch(f"{where} was prepared from a re-packed {spec.name} archive, not the "
                           f"official file (sha256 {sha}): accept it with --accept-checksum {sha} "
                           f"(accept_checksum=\"{sha}\"), or delete {where} and use the official "
                           "archive", sha256=sha)


def _verify(spec: DatasetSpec, archive: Path, accept: Optional[str], fetched: bool) -> dict:
    md5, sha = fetch.file_hashes(archive)
    if spec.md5 and md5 == spec.md5:
        return _provenance(spec, "official", archive=archive, md5=md5, sha256=sha)
    matched = fetch.accepted_checksum(accept, md5, sha)
    if matched:  # corruption still shows when it is extracted
        return _provenance(spec, "accepted-unofficial", archive=archive, md5=md5, sha256=sha,
                           accepted_with=matched)
    problem = fetch.integrity_error(archive)
    if problem:
        if fetched:
            archive.unlink(missing_ok=True)
        what = "removed it: run again to download it again" if fetched else \
            "delete it (a new copy is then downloaded) or replace it"
        raise DataError(f"archive {archive} is truncated or corrupt ({problem}); {what}")
    if accept:
        raise ChecksumMismatch(f"checksum mismatch for {archive}: accept_checksum {accept!r} matches "
                               f"neither its md5 {md5} nor its sha256 {sha}; pass --accept-checksum "
                               f"{sha} to accept this file", sha256=sha)
    raise ChecksumMismatch(f"checksum mismatch for {archive}: expected md5 {spec.md5} (official), got "
                           f"md5 {md5} (sha256 {sha}); if you trust this re-packed archive accept it "
                           f"with --accept-checksum {sha} (accept_checksum=\"{sha}\"), else delete it "
                           "to download the official file", sha256=sha)


# ---- getting the extracted folder ---------------------------------------------------------------
def _missing_message(spec: DatasetSpec, base: Path, reason: str) -> str:
    return (f"{spec.name}: {spec.archive} is not in {base} and {reason}: put {spec.archive} "
            f"(from {spec.url}) or its extracted {spec.folder}/ folder in {base}, or set "
            f"{MIRROR_ENV} to a base URL that serves {spec.archive}")


def _download(spec: DatasetSpec, archive: Path, download: bool) -> None:
    base = archive.parent
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    url = f"{mirror.rstrip('/')}/{spec.archive}" if mirror else spec.url
    if not download or not url:
        raise DataError(_missing_message(spec, base, "downloading is off (run `simpleclr data "
                                                     f"prepare {spec.name}` to download it)"))
    print(f"simpleclr: downloading {spec.name} from {url}", file=sys.stderr)
    try:
        fetch.download(url, archive)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise DataError(_missing_message(spec, base, f"downloading {url} failed ({reason})")) from e


def _generate(spec: DatasetSpec, archive: Path) -> None:
    assert spec.generator is not None
    tmp = archive.with_name(f".{archive.name}.{os.getpid()}.part")
    try:
        spec.generator(tmp)
        os.replace(tmp, archive)
    finally:
        tmp.unlink(missing_ok=True)


def _ensure_folder(spec: DatasetSpec, root: Path, accept: Optional[str],
                   download: bool) -> tuple[Path, dict]:
    """The complete extracted official folder and where its files came from."""
    base = root / spec.subdir if spec.subdir else root
    folder = base / spec.folder
    if folder.is_dir():
        missing = check_folder(folder, spec.required)
        marker = fetch.read_marker(folder)
        if missing is None:
            prov = marker or _provenance(spec, "user-folder", folder=folder)
            _check_accepted(spec, prov, accept, folder)
            return folder, prov
        if marker is None:  # someone else's incomplete folder: never delete it
            raise DataError(f"{folder} exists but is incomplete (no {missing}): complete it, or "
                            f"delete it so that {spec.archive} can be extracted there")
    base.mkdir(parents=True, exist_ok=True)
    archive = base / spec.archive
    if spec.generator is not None:
        if not archive.exists():
            _generate(spec, archive)
        md5, sha = fetch.file_hashes(archive)
        prov = _provenance(spec, "generated", archive=archive, md5=md5, sha256=sha)
        fetched = True
    else:
        fetched = not archive.exists()
        if fetched:
            _download(spec, archive, download)
        prov = _verify(spec, archive, accept, fetched)
    prov["folder"] = str(folder)
    fetch.extract(archive, base, spec.folder, prov, spec.required, remove_archive_if_corrupt=fetched)
    return folder, prov


# ---- the cache ----------------------------------------------------------------------------------
def _cache_meta(spec: DatasetSpec, prov: dict, native: Optional[int]) -> dict:
    return {"dataset": spec.name, "description": spec.description, "provenance": prov,
            "native_size": native, "generator": dict(spec.params) or None}


def _build_native(spec: DatasetSpec, root: Path, accept: Optional[str], download: bool) -> dict:
    folder, prov = _ensure_folder(spec, root, accept, download)
    raw = spec.reader(folder)
    return write_cache(cache_dir(root, spec.key, spec.native_size), raw, spec.native_size,
                       _cache_meta(spec, prov, spec.native_size))


def _resolve_official(spec: DatasetSpec, root: Path, size: int, accept: Optional[str],
                      download: bool) -> tuple[Path, dict]:
    target = cache_dir(root, spec.key, size)
    meta = read_meta(target)
    if meta is None:
        _ensure_writable(root)
        with fetch.file_lock(root / "cache" / f"{spec.key}.lock", spec.name):
            meta = read_meta(target)  # another process may have built it while we waited
            if meta is None:
                native = cache_dir(root, spec.key, spec.native_size)
                nmeta = read_meta(native)
                if nmeta is None:
                    nmeta = _build_native(spec, root, accept, download)
                else:
                    _check_accepted(spec, nmeta["provenance"], accept, native)
                meta = nmeta if size == spec.native_size else write_cache(
                    target, open_raw(native, nmeta), size,
                    {**_cache_meta(spec, nmeta["provenance"], spec.native_size),
                     "resized_from": spec.native_size})
    _check_accepted(spec, meta["provenance"], accept, target)
    return target, meta


def _resolve_imagefolder(spec: DatasetSpec, root: Path, size: Optional[int]) -> tuple[Path, dict]:
    from .imagefolder import fingerprint, native_size, read_imagefolder, scan

    assert spec.path is not None
    splits, _ = scan(spec.path)
    files = [f for items in splits.values() for f in items]
    fp = fingerprint(files)
    derived = size is None
    if derived:  # a cache built at the images' own size, if one matches the files
        for meta_path in sorted((root / "cache" / spec.key).glob("*px/meta.json")):
            meta = read_meta(meta_path.parent)
            if meta and meta.get("fingerprint") == fp and meta.get("native_size") == meta["image_size"]:
                return meta_path.parent, meta
        size = native_size(files, spec.path)
    assert size is not None
    target = cache_dir(root, spec.key, size)
    meta = read_meta(target)
    if meta is not None and meta.get("fingerprint") == fp:
        return target, meta
    _ensure_writable(root)
    with fetch.file_lock(root / "cache" / f"{spec.key}.lock", spec.name):
        meta = read_meta(target)
        if meta is None or meta.get("fingerprint") != fp:
            raw = read_imagefolder(spec.path, size)
            prov = _provenance(spec, "user-folder", folder=spec.path)
            meta = write_cache(target, raw, size, {**_cache_meta(spec, prov, size if derived else None),
                                                   "fingerprint": fp})
    return target, meta


def read_size(name: str, image_size: Optional[int]) -> Optional[int]:
    """The size a stage that resizes batch by batch (the probes' features, supervised training's
    crops) reads a dataset at to feed ``image_size`` px: that size when it is at most the dataset's
    own (a resized cache), else the dataset's own (None), and the batches are upsampled: CIFAR-100
    kept at 224 px would take 9 GB of memory and disk for what a 32 px copy holds (the SimCLR B.8
    ImageNet probes read it at 224 px; the full plan fine-tunes the ImageNet weights at 128 px)."""
    try:
        native = get_spec(name).native_size
    except DataError:  # reading it fails with the proper message
        return image_size
    return image_size if image_size is None or native is None or image_size <= native else None


def resolve(name: str, *, root: Optional[PathLike] = None, image_size: Optional[int] = None,
            accept_checksum: Optional[str] = None, download: bool = True) -> tuple[DatasetSpec, Path, dict]:
    """(spec, cache folder, cache meta) of ``name`` at ``image_size``, building what is missing."""
    spec = get_spec(name)
    _check_size(image_size)
    data_root = default_data_dir(root)
    if spec.kind == "user-folder":
        folder, meta = _resolve_imagefolder(spec, data_root, image_size)
    else:
        assert spec.native_size is not None
        folder, meta = _resolve_official(spec, data_root, image_size or spec.native_size,
                                         accept_checksum, download)
    return spec, folder, meta


# ---- public API ---------------------------------------------------------------------------------
def _served_split(spec: DatasetSpec, available: list[str], split: str) -> str:
    if split in available:
        return split
    alias = spec.aliases.get(split)
    if alias in available:
        return alias
    raise DataError(f"{spec.name} has no split {split!r}: use one of {', '.join(available)}")


def load_split(name: str, split: str = "train", *, root: Optional[PathLike] = None,
               image_size: Optional[int] = None, accept_checksum: Optional[str] = None,
               download: bool = True) -> Split:
    """One split of a dataset in memory (uint8 NCHW images, int64 labels), at ``image_size``
    (default: native; a resize is done once, when that size's cache is built)."""
    spec = get_spec(name)
    if spec.kind != "user-folder":  # fail on a bad split name before any long work
        _served_split(spec, list(spec.splits), split)
    spec, folder, meta = resolve(name, root=root, image_size=image_size,
                                 accept_checksum=accept_checksum, download=download)
    served = _served_split(spec, list(meta["splits"]), split)
    images, labels, coarse = load_arrays(folder, served)
    prov = {**meta["provenance"], "cache": str(folder), "image_size": meta["image_size"],
            **image_counts(spec.name, {s: v["images"] for s, v in meta["splits"].items()})}
    if meta.get("resized_from"):
        prov["resized_from"] = meta["resized_from"]
    return Split(images=images, labels=labels, classes=list(meta["classes"]), name=spec.name,
                 split=served, mean=tuple(meta["mean"]), std=tuple(meta["std"]), provenance=prov,
                 coarse_labels=coarse,
                 coarse_classes=list(meta["coarse_classes"]) if coarse is not None else None)


PARTIAL_ENV = "SIMPLECLR_PARTIAL_DATA"  # datasets declared partial, comma-separated ("*": all)


def image_counts(name: str, splits: dict) -> dict:
    """What a run used of ``name``: its train and test image counts (``splits``: the cache's
    split -> images), the official counts where the registry knows them (an official dataset),
    and ``partial``: whether they differ, as with a re-packed subset accepted by checksum."""
    spec = get_spec(name)

    def count(split: str) -> Optional[int]:
        try:
            return int(splits[_served_split(spec, list(splits), split)])
        except DataError:
            return None

    counts = {"train": count("train"), "test": count("test")}
    official = ({"train": spec.n_train, "test": spec.n_test}
                if spec.kind == "official" and spec.n_train is not None else None)
    return {"image_counts": counts, "official_counts": official,
            "partial": official is not None and counts != official}


def declared_partial(name: str, declared: Sequence[str] = ()) -> bool:
    """Whether ``name`` is declared a partial set: by a plan's ``partial_data`` list or the
    :data:`PARTIAL_ENV` variable (comma-separated names, or ``*`` for every dataset)."""
    names = {n.strip() for n in os.environ.get(PARTIAL_ENV, "").split(",") if n.strip()} | set(declared)
    return "*" in names or name in names or get_spec(name).name in names


def count_problem(name: str, splits: dict) -> Optional[str]:
    """One line when ``name``'s image counts are not the official ones (None when they are, or
    when no official counts exist): the counts, and the two ways to go on."""
    rec = image_counts(name, splits)
    if not rec["partial"]:
        return None
    have, want = rec["image_counts"], rec["official_counts"]
    return (f"{name} holds {have['train'] or 0:,} train / {have['test'] or 0:,} test images, not the official "
            f"{want['train']:,} / {want['test']:,}: place the complete archive, or declare the partial "
            f"set with `partial_data: [{name}]` in the plan or {PARTIAL_ENV}={name} (the report flags it)")


def load_labels(name: str, split: str = "train", *, root: Optional[PathLike] = None,
                accept_checksum: Optional[str] = None, download: bool = True) -> torch.Tensor:
    """The int64 labels of one split (-1 = unlabelled), without its images: what a run's choice
    of images depends on, read from the native-size cache in a fraction of a second."""
    spec, folder, meta = resolve(name, root=root, accept_checksum=accept_checksum, download=download)
    served = _served_split(spec, list(meta["splits"]), split)
    return load_labels_array(folder, served)


def _summary(spec: DatasetSpec, folder: Path, meta: dict) -> dict:
    prov = meta["provenance"]
    return {"dataset": spec.name, "image_size": meta["image_size"], "cache": str(folder),
            "splits": {s: v["images"] for s, v in meta["splits"].items()},
            "source": prov["source"], "checksum": prov["checksum"], "sha256": prov.get("sha256")}


def prepare(name: str, *, root: Optional[PathLike] = None, accept_checksum: Optional[str] = None,
            download: bool = True, image_size: Optional[int] = None) -> dict:
    """Download, verify, extract and cache ``name`` (at native size, and at ``image_size`` too)."""
    spec = get_spec(name)
    _check_size(image_size)
    out = None
    if spec.kind != "user-folder" or image_size is None:
        spec, folder, meta = resolve(name, root=root, accept_checksum=accept_checksum,
                                     download=download)
        out = _summary(spec, folder, meta)
    if image_size is not None and image_size != (out or {}).get("image_size"):
        spec, folder, meta = resolve(name, root=root, image_size=image_size,
                                     accept_checksum=accept_checksum, download=download)
        out = {**_summary(spec, folder, meta), "native": out}
    assert out is not None
    return out


def info(name: str, *, root: Optional[PathLike] = None,
         accept_checksum: Optional[str] = None) -> dict:
    """What ``simpleclr data info`` prints: splits, counts, classes, size, location, checksum.

    Builds the cache from a placed archive or folder when needed, but never downloads.
    """
    spec, folder, meta = resolve(name, root=root, accept_checksum=accept_checksum, download=False)
    prov = meta["provenance"]
    splits = {s: dict(v) for s, v in meta["splits"].items()}
    for asked, served in spec.aliases.items():
        if asked not in splits and served in splits:
            splits[served]["also_served_as"] = asked
    sizes = sorted(int(p.name[:-2]) for p in folder.parent.glob("*px") if read_meta(p))
    out = {
        "dataset": spec.name, "description": spec.description,
        "data_dir": str(default_data_dir(root)), "cache": str(folder),
        "cached_sizes": sizes, "folder": prov.get("folder"), "archive": prov.get("archive"),
        "image_size": meta["image_size"], "native_size": meta.get("native_size"),
        "num_classes": len(meta["classes"]), "classes": meta["classes"],
        "coarse_classes": meta.get("coarse_classes"), "splits": splits,
        "mean": meta["mean"], "std": meta["std"],
        "checksum": {"status": prov["source"], "note": prov["checksum"],
                     "expected_md5": prov.get("expected_md5"), "md5": prov.get("md5"),
                     "sha256": prov.get("sha256")},
        "provenance": prov,
    }
    if meta.get("generator"):
        out["generator"] = meta["generator"]
    out.update({k: v for k, v in meta.get("extra", {}).items() if k not in ("wnids", "fingerprint")})
    return out
