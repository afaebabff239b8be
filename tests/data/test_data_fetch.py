"""Getting data: download through a loopback server (resume, restart, mirror), checksums, corrupt
archives, the one-line errors, cache reuse and concurrent preparers."""
import hashlib
import multiprocessing as mp
import threading
from dataclasses import replace

import pytest
import torch

from helpers.datagen import coded_cifar100, loopback_server
from simpleclr.data import DataError, api, info, load_split, prepare, registry
from simpleclr.data import cache as cache_mod

ARCHIVE = "cifar-100-python.tar.gz"
DEAD_URL = "http://127.0.0.1:9/"  # the discard port: nothing listens, the connection is refused


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    """Two different valid archives ("official" and "re-packed") and a truncated one."""
    d = tmp_path_factory.mktemp("src")
    good = coded_cifar100(d / "a.tar.gz", num_classes=5, train=4, test=2).read_bytes()
    other = coded_cifar100(d / "b.tar.gz", num_classes=10, train=2, test=1).read_bytes()
    return {"good": good, "other": other, "truncated": good[: len(good) // 2]}


@pytest.fixture
def server(archives, monkeypatch):
    """A loopback server serving the "official" archive, registered as cifar100's address."""
    monkeypatch.delenv("SIMPLECLR_MIRROR", raising=False)
    with loopback_server() as srv:
        srv.files[ARCHIVE] = archives["good"]
        md5 = hashlib.md5(archives["good"]).hexdigest()
        monkeypatch.setitem(registry.DATASETS, "cifar100", replace(
            registry.DATASETS["cifar100"], url=f"{srv.url}/official/{ARCHIVE}", md5=md5))
        yield srv


def leftovers(root):
    return sorted(p.name for p in root.rglob("*") if ".part" in p.name or ".extract-" in p.name
                  or ".build-" in p.name)


def test_download_verify_extract_cache(server, tmp_path):
    s = load_split("cifar100", root=tmp_path)
    assert len(s) == 20 and torch.equal(s.images[:, 0, 0, 0].long(), 2 * s.labels)
    prov = s.provenance
    assert prov["source"] == "official" and prov["url"].endswith(f"/official/{ARCHIVE}")
    assert prov["md5"] == registry.DATASETS["cifar100"].md5
    assert prov["sha256"] == hashlib.sha256(server.files[ARCHIVE]).hexdigest()
    assert (tmp_path / ARCHIVE).read_bytes() == server.files[ARCHIVE]
    assert (tmp_path / "cifar-100-python" / "meta").is_file() and leftovers(tmp_path) == []
    assert server.requests == [(f"/official/{ARCHIVE}", None)]


def test_second_load_reuses_the_cache(server, tmp_path, monkeypatch):
    first = load_split("cifar100", root=tmp_path)
    meta = tmp_path / "cache" / "cifar100" / "32px" / "meta.json"
    stamp = meta.stat().st_mtime_ns

    def fail(*a, **k):
        raise AssertionError("the cache should have been used")

    for target in (api.fetch, ):
        monkeypatch.setattr(target, "extract", fail)
        monkeypatch.setattr(target, "file_hashes", fail)
    monkeypatch.setattr(api, "write_cache", fail)
    again = load_split("cifar100", root=tmp_path)
    assert torch.equal(first.images, again.images) and meta.stat().st_mtime_ns == stamp
    assert len(server.requests) == 1


def test_checksum_mismatch_then_explicit_acceptance(server, archives, tmp_path):
    server.files[ARCHIVE] = archives["other"]
    sha = hashlib.sha256(archives["other"]).hexdigest()
    md5 = hashlib.md5(archives["other"]).hexdigest()
    with pytest.raises(DataError) as e:
        load_split("cifar100", root=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "checksum mismatch" in msg
    assert registry.DATASETS["cifar100"].md5 in msg and md5 in msg
    assert f"--accept-checksum {sha}" in msg and f'accept_checksum="{sha}"' in msg
    assert (tmp_path / ARCHIVE).exists()                   # kept, so it can be accepted
    assert not (tmp_path / "cifar-100-python").exists()    # but never extracted
    with pytest.raises(DataError, match="matches neither"):
        load_split("cifar100", root=tmp_path, accept_checksum="0" * 64)
    for accept in (sha, md5.upper()):
        s = load_split("cifar100", root=tmp_path, accept_checksum=accept)
        assert len(s) == 20 and s.provenance["source"] == "accepted-unofficial"
        assert s.provenance["sha256"] == sha
    # the cache built from it is not served to a caller who did not accept it
    with pytest.raises(DataError, match=f"re-packed.*--accept-checksum {sha}"):
        load_split("cifar100", root=tmp_path)
    with pytest.raises(DataError, match="re-packed"):
        load_split("cifar100", root=tmp_path, image_size=16)
    assert info("cifar100", root=tmp_path, accept_checksum="any")["checksum"]["status"] == \
        "accepted-unofficial"


def test_a_list_of_checksums_accepts_each_dataset_and_records_only_its_own(server, archives,
                                                                           tmp_path):
    """One SIMPLECLR_ACCEPT_CHECKSUM for two re-packed archives: a comma-separated list."""
    server.files[ARCHIVE] = archives["other"]
    sha = hashlib.sha256(archives["other"]).hexdigest()
    tiny_sha = "ab" * 32  # another dataset's re-packed archive, listed first
    s = load_split("cifar100", root=tmp_path, accept_checksum=f" {tiny_sha}, {sha.upper()} ")
    assert s.provenance["source"] == "accepted-unofficial"
    assert s.provenance["accepted_with"] == sha  # exact provenance: the entry that matched
    with pytest.raises(DataError, match="matches neither"):
        load_split("cifar100", root=tmp_path / "other", accept_checksum=f"{tiny_sha},{'0' * 32}")


def test_data_commands_read_the_accepted_checksums_from_the_plans_variable(server, archives, tmp_path,
                                                                           monkeypatch, capsys):
    """`simpleclr data prepare` takes SIMPLECLR_ACCEPT_CHECKSUM as the plans do, so a user who
    exported it once for a re-packed archive is not refused by the data command alone."""
    from simpleclr import cli
    server.files[ARCHIVE] = archives["other"]
    sha = hashlib.sha256(archives["other"]).hexdigest()
    args = ["data", "prepare", "cifar100", "--data-dir", str(tmp_path)]
    monkeypatch.delenv("SIMPLECLR_ACCEPT_CHECKSUM", raising=False)
    assert cli.main(args) == 2 and "checksum mismatch" in capsys.readouterr().err
    monkeypatch.setenv("SIMPLECLR_ACCEPT_CHECKSUM", f"{'ab' * 32},{sha}")
    assert cli.main(args) == 0
    assert '"accepted-unofficial"' in capsys.readouterr().out
    assert cli.main(["data", "info", "cifar100", "--data-dir", str(tmp_path)]) == 0
    assert '"accepted-unofficial"' in capsys.readouterr().out


def test_preparing_shows_progress_on_a_log_with_counts(server, archives, tmp_path, capsys,
                                                       monkeypatch):
    """Outside a terminal each slow step writes plain lines: start, count and ETA, end."""
    from simpleclr.data import fetch

    monkeypatch.setattr(fetch, "PROGRESS_MIN_BYTES", 0)  # the test archive is small
    load_split("cifar100", root=tmp_path)
    err = capsys.readouterr().err
    size = len(server.files[ARCHIVE])
    for step in (f"downloading {ARCHIVE}", f"verifying {ARCHIVE}", f"extracting {ARCHIVE}"):
        assert f"{step}: started" in err and f"{step}: done" in err, step
    assert f"verifying {ARCHIVE}: started of {size / 1024:.1f} KiB" in err
    assert "\r" not in err


def test_progress_lines_give_count_percent_and_eta(monkeypatch):
    import io
    import itertools

    from simpleclr.data import progress

    clock = itertools.chain([0.0, 20.0, 21.0, 40.0, 41.0], itertools.repeat(50.0))
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    with progress.Progress(100, "decoding images", "img", file=out) as p:
        p.update(25)  # t=20: a line, 25 of 100 in 20 s -> 60 s left
        p.update(25)  # t=21: within the interval, no line
        p.update(50)  # t=40: a line
    lines = out.getvalue().splitlines()
    assert lines == ["decoding images: started of 100 img",
                     "decoding images: 25 img of 100 img (25%), ETA 1m00s, 20s elapsed",
                     "decoding images: 100 img of 100 img (100%), ETA 0s, 40s elapsed",
                     "decoding images: done, 100 img in 41s"]
    quiet = io.StringIO()
    with progress.Progress(10, "decoding images", "img", min_total=5000, file=quiet) as p:
        p.update(10)
    assert quiet.getvalue() == ""


@pytest.mark.parametrize("accept", [None, "any"])
def test_truncated_download_is_removed(server, archives, tmp_path, accept):
    server.files[ARCHIVE] = archives["truncated"]
    with pytest.raises(DataError, match=r"truncated or corrupt.*removed it: run again") as e:
        load_split("cifar100", root=tmp_path, accept_checksum=accept)
    assert "\n" not in str(e.value)
    assert not (tmp_path / ARCHIVE).exists() and not (tmp_path / "cifar-100-python").exists()
    assert leftovers(tmp_path) == [] and not (tmp_path / "cache" / "cifar100").exists()
    server.files[ARCHIVE] = archives["good"]   # the next try downloads it again and succeeds
    assert load_split("cifar100", root=tmp_path).provenance["source"] == "official"


def test_corrupt_placed_archive_is_reported_not_deleted(archives, tmp_path):
    (tmp_path / ARCHIVE).write_bytes(archives["truncated"])
    with pytest.raises(DataError, match="truncated or corrupt.*delete it"):
        load_split("cifar100", root=tmp_path, download=False)
    assert (tmp_path / ARCHIVE).exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("content", [b"", b"not an archive at all" * 50], ids=["empty", "garbage"])
def test_an_unreadable_placed_archive_is_named_in_one_line(tmp_path, content):
    """tarfile lists every compression it tried on a line of its own: still one line here."""
    (tmp_path / ARCHIVE).write_bytes(content)
    with pytest.raises(DataError) as e:
        load_split("cifar100", root=tmp_path, download=False, accept_checksum="any")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / ARCHIVE) in msg and "truncated or corrupt" in msg
    assert "method gz" in msg and (tmp_path / ARCHIVE).exists()


def test_a_damaged_cache_meta_is_rebuilt_not_a_traceback(tmp_path):
    name = "synthetic-cifar100:classes=4,train=3,test=1"
    first = load_split(name, root=tmp_path)
    metas = list((tmp_path / "cache").rglob("meta.json"))
    assert metas
    for meta in metas:
        meta.write_text("[]")  # valid JSON, not the mapping a cache writes
    again = load_split(name, root=tmp_path)
    assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)


def test_partial_download_is_resumed_with_a_range_request(server, archives, tmp_path):
    good = archives["good"]
    cut = len(good) * 2 // 5
    (tmp_path / f"{ARCHIVE}.part").write_bytes(good[:cut])
    assert load_split("cifar100", root=tmp_path).provenance["source"] == "official"
    assert server.requests == [(f"/official/{ARCHIVE}", f"bytes={cut}-")]
    assert (tmp_path / ARCHIVE).read_bytes() == good


def test_server_without_ranges_restarts_the_download(server, tmp_path):
    server.ranges = False
    (tmp_path / f"{ARCHIVE}.part").write_bytes(b"garbage that is not a prefix")
    assert load_split("cifar100", root=tmp_path).provenance["source"] == "official"
    assert (tmp_path / ARCHIVE).read_bytes() == server.files[ARCHIVE]


def test_interrupted_download_keeps_the_part_then_resumes(server, tmp_path):
    server.cut_after = 1000
    with pytest.raises(DataError, match=r"stopped at 1000 .*run again to resume"):
        load_split("cifar100", root=tmp_path)
    assert (tmp_path / f"{ARCHIVE}.part").stat().st_size == 1000
    server.cut_after = None
    assert load_split("cifar100", root=tmp_path).provenance["source"] == "official"
    assert server.requests[-1][1] == "bytes=1000-"


def test_mirror_variable_replaces_the_official_address(server, tmp_path, monkeypatch):
    monkeypatch.setitem(registry.DATASETS, "cifar100",
                        replace(registry.DATASETS["cifar100"], url=f"{DEAD_URL}{ARCHIVE}"))
    monkeypatch.setenv("SIMPLECLR_MIRROR", f"{server.url}/mirror/")
    s = load_split("cifar100", root=tmp_path)
    assert s.provenance["source"] == "official"
    assert server.requests == [(f"/mirror/{ARCHIVE}", None)]


def test_no_network_error_names_file_url_folder_and_mirror(tmp_path, monkeypatch):
    monkeypatch.delenv("SIMPLECLR_MIRROR", raising=False)
    monkeypatch.setitem(registry.DATASETS, "cifar100",
                        replace(registry.DATASETS["cifar100"], url=f"{DEAD_URL}{ARCHIVE}"))
    with pytest.raises(DataError) as e:
        load_split("cifar100", root=tmp_path)
    msg = str(e.value)
    for part in (ARCHIVE, f"{DEAD_URL}{ARCHIVE}", str(tmp_path), "SIMPLECLR_MIRROR", "failed"):
        assert part in msg
    assert "\n" not in msg and leftovers(tmp_path) == []
    with pytest.raises(DataError, match=f"downloading is off.*{ARCHIVE}.*SIMPLECLR_MIRROR"):
        load_split("cifar100", root=tmp_path, download=False)


def test_bad_names_sizes_and_splits_fail_before_any_work(tmp_path):
    with pytest.raises(DataError, match=r"unknown dataset 'cifar1000': use one of cifar100, cifar10, "
                                        r"tiny-imagenet, stl10, synthetic-cifar100, .*imagefolder:<path>"):
        load_split("cifar1000", root=tmp_path)
    with pytest.raises(DataError, match="no split 'validation'"):
        load_split("cifar100", "validation", root=tmp_path)
    with pytest.raises(DataError, match=r"image_size=4 is invalid"):
        load_split("cifar100", root=tmp_path, image_size=4)
    with pytest.raises(DataError, match="bad parameter 'size=3'"):
        load_split("synthetic-cifar100:size=3", root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_placed_extracted_folder_is_used_and_incomplete_one_refused(archives, tmp_path):
    import tarfile
    import io

    with tarfile.open(fileobj=io.BytesIO(archives["good"])) as tar:
        tar.extractall(tmp_path, filter="data")
    s = load_split("cifar100", root=tmp_path, download=False)
    assert s.provenance["source"] == "user-folder" and len(s) == 20
    other = tmp_path / "other"
    (other / "cifar-100-python").mkdir(parents=True)
    (other / "cifar-100-python" / "train").write_bytes(b"x")
    with pytest.raises(DataError, match="exists but is incomplete"):
        load_split("cifar100", root=other, download=False)


def test_read_only_data_dir_is_named(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        import os
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(DataError, match="not writable"):
            load_split("synthetic-cifar100", root=ro)
    finally:
        ro.chmod(0o700)


def count_builds(monkeypatch):
    calls = []
    real = cache_mod.write_cache

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(api, "write_cache", spy)
    return calls


def test_concurrent_threads_build_once(tmp_path, monkeypatch):
    calls = count_builds(monkeypatch)
    name = "synthetic-cifar100:classes=5,train=6,test=2"
    out, errors = [None, None], []

    def work(i):
        try:
            out[i] = load_split(name, root=tmp_path)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(calls) == 1
    assert torch.equal(out[0].images, out[1].images) and len(out[0]) == 30


def _prepare_in_child(root, name, queue):
    calls = []
    real = api.write_cache
    api.write_cache = lambda *a, **k: (calls.append(1), real(*a, **k))[1]
    try:
        queue.put((prepare(name, root=root)["splits"], len(calls)))
    except Exception as e:  # noqa: BLE001
        queue.put((repr(e), -1))


def test_concurrent_processes_build_once(tmp_path):
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    name = "synthetic-cifar100:classes=4,train=5,test=2"
    procs = [ctx.Process(target=_prepare_in_child, args=(str(tmp_path), name, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [r[0] for r in results] == [{"train": 20, "test": 8}] * 2
    assert sorted(r[1] for r in results) == [0, 1]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("has_filter", [True, False])
def test_archive_with_a_path_escaping_member_is_refused(tmp_path, monkeypatch, has_filter):
    import io
    import tarfile

    if not has_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    with tarfile.open(tmp_path / ARCHIVE, "w:gz") as tar:
        info_ = tarfile.TarInfo("../escaped.txt")
        info_.size = 2
        tar.addfile(info_, io.BytesIO(b"hi"))
    with pytest.raises(DataError, match="unsafe"):
        load_split("cifar100", root=tmp_path, accept_checksum="any", download=False)
    assert not (tmp_path.parent / "escaped.txt").exists() and leftovers(tmp_path) == []
