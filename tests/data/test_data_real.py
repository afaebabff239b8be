"""The real (re-packed) CIFAR-100 archive beside the repository, when present: refused by default,
accepted by its checksum, with the published counts and statistics; and `simpleclr data info`."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from simpleclr.data import DataError, load_split

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar-100-python.tar.gz"
SHA256 = "53a356562b4779af18483408a57092e2fc9983e11509dba11844b51424f87335"
MD5 = "034fa948e57ac38bf4ce6361824d33b8"
pytestmark = [pytest.mark.skipif(not SHARED.is_file(), reason=f"{SHARED} is absent"), pytest.mark.slow]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A data folder holding (a link to) the shared archive."""
    d = tmp_path_factory.mktemp("real")
    (d / SHARED.name).symlink_to(SHARED)
    return d


def test_refused_by_default_with_the_checksum_message(root):
    with pytest.raises(DataError) as e:
        load_split("cifar100", root=root, download=False)
    msg = str(e.value)
    assert "checksum mismatch" in msg and "eb9058c3a382ffc7106e4002c42a8d85" in msg
    assert MD5 in msg and f"--accept-checksum {SHA256}" in msg and "\n" not in msg
    assert not (root / "cifar-100-python").exists() and not (root / "cache" / "cifar100").exists()


@pytest.fixture(scope="module")
def train(root):
    return load_split("cifar100", root=root, accept_checksum=SHA256, download=False)


def test_accepted_archive_has_published_counts_and_statistics(root, train):
    test = load_split("cifar100", "test", root=root, accept_checksum=SHA256, download=False)
    assert train.images.shape == (50000, 3, 32, 32) and len(test) == 10000
    assert torch.bincount(train.labels).tolist() == [500] * 100
    assert torch.bincount(test.labels).tolist() == [100] * 100
    assert torch.bincount(train.coarse_labels).tolist() == [2500] * 20
    # each fine class belongs to exactly one coarse class
    pairs = torch.unique(train.labels * 100 + train.coarse_labels)
    assert len(pairs) == 100
    n = train.images.numel() // 3
    sums = train.images.sum(dim=(0, 2, 3), dtype=torch.int64).double()
    mean = sums / n / 255
    assert torch.allclose(mean, torch.tensor([0.5071, 0.4865, 0.4409], dtype=torch.double), atol=1e-3)
    assert torch.allclose(torch.tensor(train.mean, dtype=torch.double), mean, atol=1e-9)
    assert torch.allclose(torch.tensor(train.std), torch.tensor([0.2673, 0.2564, 0.2762]), atol=1e-3)
    assert test.mean == train.mean
    assert train.classes[:3] == ["apple", "aquarium_fish", "baby"] and len(train.coarse_classes) == 20
    prov = train.provenance
    assert prov["source"] == "accepted-unofficial" and prov["sha256"] == SHA256 and prov["md5"] == MD5
    assert prov["expected_md5"] == "eb9058c3a382ffc7106e4002c42a8d85"


def test_cache_still_refuses_without_acceptance(root, train):
    with pytest.raises(DataError, match=f"re-packed.*{SHA256}"):
        load_split("cifar100", root=root, download=False)


def test_cli_info_prints_the_dataset(root, train, capsys):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "lib")}
    out = subprocess.run([sys.executable, "-m", "simpleclr", "data", "info", "cifar100", "--data-dir",
                          str(root), "--accept-checksum", SHA256], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["splits"]["train"]["images"] == 50000 and info["splits"]["test"]["images"] == 10000
    assert info["splits"]["train"]["per_class_min"] == info["splits"]["train"]["per_class_max"] == 500
    assert info["num_classes"] == 100 and len(info["classes"]) == 100 and info["image_size"] == 32
    assert info["data_dir"] == str(root.resolve()) and Path(info["cache"]).is_dir()
    assert info["checksum"]["status"] == "accepted-unofficial" and info["checksum"]["sha256"] == SHA256

    from simpleclr.cli import main

    assert main(["data", "info", "cifar100", "--data-dir", str(root)]) == 2
    err = capsys.readouterr().err
    assert "re-packed" in err and SHA256 in err and len(err.strip().splitlines()) == 1
