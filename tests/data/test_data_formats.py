"""Each on-disk format's loader, on generated archives whose pixels encode their labels."""
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.datagen import coded_cifar10, coded_cifar100, coded_tiny, tiny_value
from helpers.formats import write_stl10_folder
from simpleclr import data
from simpleclr.data import DataError, load_split


def test_cifar100_loader_keeps_labels_with_their_images(tmp_path):
    coded_cifar100(tmp_path / "cifar-100-python.tar.gz", num_classes=10, train=6, test=3)
    tr = load_split("cifar100", root=tmp_path, accept_checksum="any")
    te = load_split("cifar100", "test", root=tmp_path, accept_checksum="any")
    assert (len(tr), len(te)) == (60, 30)
    assert tr.images.shape == (60, 3, 32, 32) and tr.images.dtype == torch.uint8
    assert tr.labels.dtype == torch.int64
    for s in (tr, te):
        assert torch.equal(s.images[:, 0, 0, 0].long(), 2 * s.labels)        # label <-> image
        assert torch.equal(s.images[:, 1, 0, 0].long(), torch.arange(len(s)))  # file order kept
        assert torch.equal(s.coarse_labels, s.labels // 5)
        assert torch.bincount(s.labels).tolist() == [len(s) // 10] * 10
    assert tr.classes == [f"fine{c}" for c in range(10)] and tr.coarse_classes == ["coarse0", "coarse1"]
    assert tr.provenance["source"] == "accepted-unofficial" and te.mean == tr.mean


def test_cifar10_loader_joins_the_five_batches(tmp_path):
    coded_cifar10(tmp_path / "cifar-10-python.tar.gz", train=5, test=2)
    tr = load_split("cifar10", root=tmp_path, accept_checksum="any")
    te = load_split("cifar10", "test", root=tmp_path, accept_checksum="any")
    assert (len(tr), len(te)) == (50, 20) and tr.coarse_labels is None and tr.num_classes == 10
    assert torch.equal(tr.images[:, 0, 0, 0].long(), 2 * tr.labels)
    assert torch.equal(tr.images[:, 1, 0, 0].long(), torch.arange(50))
    assert torch.bincount(te.labels).tolist() == [2] * 10


def test_tiny_imagenet_val_is_resorted_and_grey_becomes_rgb(tmp_path):
    _, wnids, annotations = coded_tiny(tmp_path / "tiny-imagenet-200.zip", num_classes=4, train=3, val=2)
    tr = load_split("tiny-imagenet", root=tmp_path, accept_checksum="any")
    va = load_split("tiny-imagenet", "val", root=tmp_path, accept_checksum="any")
    assert tr.images.shape == (12, 3, 64, 64) and len(va) == 8
    assert tr.classes == [f"thing{c}" for c in range(4)]  # wnids sorted; words.txt's first name
    for s in (tr, va):
        red = s.images[:, 0].float().mean(dim=(1, 2))
        expected = torch.tensor([tiny_value(c) for c in s.labels.tolist()], dtype=torch.float32)
        assert (red - expected).abs().max() < 3                       # label <-> image
    # val: labels from val_annotations.txt (independently counted), sorted by class
    counts = np.bincount([wnids.index(w) for _, w in annotations], minlength=4)
    assert va.labels.tolist() == sorted(va.labels.tolist())
    assert torch.bincount(va.labels, minlength=4).tolist() == counts.tolist()
    # every third image was a one-channel JPEG: served as RGB with equal channels
    allimg = torch.cat([tr.images, va.images]).int()
    grey = (allimg[:, 0] - allimg[:, 1]).abs().amax(dim=(1, 2)) <= 2
    assert 4 <= int(grey.sum()) < len(allimg)
    assert (allimg[grey, 0] - allimg[grey, 2]).abs().max() <= 2
    # "test" serves the labelled val split; the unlabelled test images are never labelled data
    assert load_split("tiny-imagenet", "test", root=tmp_path, accept_checksum="any").split == "val"
    info = data.info("tiny-imagenet", root=tmp_path, accept_checksum="any")
    assert set(info["splits"]) == {"train", "val"} and info["unlabelled_test_images_not_offered"] == 1


def stl_bytes(images):
    """Independent reference for the STL-10 byte order: byte (c, x, y) holds pixel [c, y, x]."""
    n = len(images)
    out = np.empty(n * 3 * 96 * 96, np.uint8)
    c, y, x = np.meshgrid(np.arange(3), np.arange(96), np.arange(96), indexing="ij")
    for i in range(n):
        out[i * 27648 + c * 9216 + x * 96 + y] = images[i, c, y, x]
    return out


def test_stl10_reads_column_major_binaries_and_unlabeled(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (4, 3, 96, 96), dtype=np.uint8)
    labels = np.array([0, 9, 3, 3])
    folder = write_stl10_folder(tmp_path / "src" / "stl10_binary", (train, labels),
                                (train[:2], labels[:2]), train[:3], [f"k{i}" for i in range(10)])
    assert np.array_equal(np.fromfile(folder / "train_X.bin", np.uint8), stl_bytes(train))
    with tarfile.open(tmp_path / "stl10_binary.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="stl10_binary")
    s = load_split("stl10", root=tmp_path, accept_checksum="any")
    assert torch.equal(s.images, torch.from_numpy(train)) and s.labels.tolist() == [0, 9, 3, 3]
    u = load_split("stl10", "unlabeled", root=tmp_path, accept_checksum="any")
    assert len(u) == 3 and u.labels.tolist() == [-1, -1, -1] and not u.labelled
    assert s.classes == [f"k{i}" for i in range(10)]
    with pytest.raises(DataError, match="no split 'val'.*train, test, unlabeled"):
        load_split("stl10", "val", root=tmp_path, accept_checksum="any")


def save_png(path, value, size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, 7)).save(path)


def test_imagefolder_with_train_and_val(tmp_path):
    root = tmp_path / "pets"
    for split, n in (("train", 3), ("val", 1)):
        for c, name in enumerate(["cat", "dog"]):
            for i in range(n):
                save_png(root / split / name / f"{i}.png", 50 + 100 * c)
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    name = f"imagefolder:{root}"
    tr = load_split(name, root=tmp_path / "d")
    va = load_split(name, "val", root=tmp_path / "d")
    assert tr.classes == ["cat", "dog"] and tr.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(tr.images[:, 0, 0, 0].long(), 50 + 100 * tr.labels)
    assert len(va) == 2 and va.provenance["source"] == "user-folder" and tr.image_size == 8
    assert load_split(name, "test", root=tmp_path / "d").split == "val"
    # a changed folder is re-read, not served stale from the cache
    save_png(root / "train" / "cat" / "9.png", 50)
    assert len(load_split(name, root=tmp_path / "d")) == 7
    # images of another size are scaled and centre-cropped when a size is given
    up = load_split(name, root=tmp_path / "d", image_size=16)
    assert up.images.shape[-1] == 16 and torch.equal(up.labels, torch.tensor([0] * 4 + [1] * 3))


def test_imagefolder_errors_name_the_problem(tmp_path):
    flat = tmp_path / "flat"
    save_png(flat / "a" / "1.png", 10)
    (flat / "a" / "2.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read image .*2\.png"):
        load_split(f"imagefolder:{flat}", root=tmp_path / "d")
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    with pytest.raises(DataError, match=r"class folder .*empty/a holds no images"):
        load_split(f"imagefolder:{empty}", root=tmp_path / "d")
    with pytest.raises(DataError, match="no class sub-folders"):
        load_split(f"imagefolder:{tmp_path / 'empty' / 'a'}", root=tmp_path / "d")
    with pytest.raises(DataError, match="does not exist"):
        load_split(f"imagefolder:{tmp_path / 'nope'}", root=tmp_path / "d")
    mixed = tmp_path / "mixed"
    save_png(mixed / "a" / "1.png", 10, (8, 8))
    save_png(mixed / "b" / "1.png", 10, (12, 9))
    with pytest.raises(DataError, match="not all one square size.*image_size"):
        load_split(f"imagefolder:{mixed}", root=tmp_path / "d")
    assert load_split(f"imagefolder:{mixed}", root=tmp_path / "d", image_size=8).images.shape == (2, 3, 8, 8)


def test_synthetic_tiny_imagenet_is_a_real_layout_zip(tmp_path):
    s = load_split("synthetic-tiny-imagenet:classes=6,train=4,val=2", root=tmp_path)
    v = load_split("synthetic-tiny-imagenet:classes=6,train=4,val=2", "val", root=tmp_path)
    assert s.images.shape == (24, 3, 64, 64) and len(v) == 12 and s.num_classes == 6
    assert s.provenance["source"] == "generated" and s.provenance["generator"]["classes"] == 6
    archive = Path(s.provenance["archive"])
    assert archive.name == "tiny-imagenet-200.zip" and archive.parent.parent == tmp_path
    names = set(zipfile.ZipFile(archive).namelist())
    wnid = "n90000000"
    for member in ("wnids.txt", "words.txt", "val/val_annotations.txt", "val/images/val_0.JPEG",
                   f"train/{wnid}/images/{wnid}_0.JPEG", f"train/{wnid}/{wnid}_boxes.txt",
                   "test/images/test_0.JPEG"):
        assert f"tiny-imagenet-200/{member}" in names


def test_resize_is_done_once_and_stats_are_at_the_served_size(tmp_path):
    name = "synthetic-cifar100:classes=5,train=8,test=2"
    native = load_split(name, root=tmp_path)
    small = load_split(name, root=tmp_path, image_size=16)
    assert small.images.shape == (40, 3, 16, 16) and torch.equal(small.labels, native.labels)
    ref = np.stack([np.asarray(Image.fromarray(im.permute(1, 2, 0).numpy()).resize(
        (16, 16), Image.Resampling.BILINEAR)) for im in native.images]).transpose(0, 3, 1, 2)
    assert np.abs(small.images.numpy().astype(int) - ref).max() <= 1     # PIL as reference
    x = small.images.double() / 255
    assert np.allclose(small.mean, x.mean(dim=(0, 2, 3)).tolist(), atol=1e-9)
    assert np.allclose(small.std, x.std(dim=(0, 2, 3), unbiased=False).tolist(), atol=1e-9)
    assert small.provenance["resized_from"] == 32 and small.provenance["image_size"] == 16
    test = load_split(name, "test", root=tmp_path, image_size=16)
    assert test.mean == small.mean  # every split is normalised with the train statistics


def test_synthetic_classes_are_learnable_and_survive_simclr_style_augmentation(tmp_path):
    """A closed-form ridge probe on greyscale power spectra (blind to colour, phase and position)
    separates the classes; mirrored test images score as well (classes are flip-symmetric); and
    random resized crops + flips + colour jitter + grayscale leave a clear signal. (Hue jitter is
    left out only because torchvision's per-image hue is slow; the features are hue-blind.)"""
    from torchvision.transforms import v2

    name = "synthetic-cifar100:classes=20,train=30,test=15"
    tr, te = load_split(name, root=tmp_path), load_split(name, "test", root=tmp_path)

    def features(images):
        grey = images.double().mean(dim=1)
        spec = torch.fft.fft2(grey - grey.mean(dim=(1, 2), keepdim=True)).abs()
        return torch.log1p(spec).flatten(1)

    def probe_accuracy(train_images, test_images):
        ftr, fte = features(train_images), features(test_images)
        mu, sd = ftr.mean(0), ftr.std(0) + 1e-6
        ftr, fte = (ftr - mu) / sd, (fte - mu) / sd
        targets = torch.nn.functional.one_hot(tr.labels, 20).double()
        w = torch.linalg.solve(ftr.T @ ftr + 100 * torch.eye(ftr.shape[1], dtype=torch.double),
                               ftr.T @ targets)
        return ((fte @ w).argmax(1) == te.labels).double().mean().item()

    clean = probe_accuracy(tr.images, te.images)
    mirrored = probe_accuracy(tr.images, te.images.flip(-1))
    torch.manual_seed(0)
    aug = v2.Compose([v2.RandomResizedCrop(32, scale=(0.3, 1.0), antialias=True),
                      v2.RandomHorizontalFlip(), v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4)], p=0.8),
                      v2.RandomGrayscale(0.2)])
    augmented = probe_accuracy(*(torch.stack([aug(im) for im in s.images]) for s in (tr, te)))
    assert clean > 0.6 and abs(mirrored - clean) < 0.12 and augmented > 0.2, (clean, mirrored, augmented)


def test_generated_archives_are_byte_identical_for_the_same_arguments(tmp_path):
    from simpleclr.data import write_synthetic_cifar100, write_synthetic_tiny_imagenet

    args = dict(num_classes=3, n_train_per_class=2, seed=4)
    a = write_synthetic_cifar100(tmp_path / "a.tar.gz", n_test_per_class=1, **args).read_bytes()
    b = write_synthetic_cifar100(tmp_path / "b.tar.gz", n_test_per_class=1, **args).read_bytes()
    c = write_synthetic_cifar100(tmp_path / "c.tar.gz", n_test_per_class=1,
                                 **{**args, "seed": 5}).read_bytes()
    assert a == b != c
    z1 = write_synthetic_tiny_imagenet(tmp_path / "1.zip", n_val_per_class=1, **args).read_bytes()
    z2 = write_synthetic_tiny_imagenet(tmp_path / "2.zip", n_val_per_class=1, **args).read_bytes()
    assert z1 == z2


def test_split_subset_accepts_tensors_lists_and_arrays(tmp_path):
    s = load_split("synthetic-cifar100:classes=3,train=2,test=1", root=tmp_path)
    for idx in (torch.tensor([5, 0]), [5, 0], np.array([5, 0])):
        sub = s.subset(idx)
        assert torch.equal(sub.images, s.images[[5, 0]]) and torch.equal(sub.labels, s.labels[[5, 0]])


def _png16(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit PNG (grey for (H, W), RGB for (H, W, 3)), written by hand: Pillow writes 16-bit
    grey only."""
    import struct
    import zlib

    h, w = pixels.shape[:2]
    colour = 0 if pixels.ndim == 2 else 2
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_16_bit_pngs_are_scaled_to_8_bits_not_saturated(tmp_path):
    root = tmp_path / "deep"
    grey = (np.arange(64, dtype=np.int64).reshape(8, 8) * 1040)  # 0 .. 65520, the whole range
    _png16(root / "train" / "grey" / "0.png", grey)
    rgb = np.stack([grey, grey[::-1], 65535 - grey], axis=-1)
    _png16(root / "train" / "rgb" / "0.png", rgb)
    split = load_split(f"imagefolder:{root}", root=tmp_path / "d")
    assert split.classes == ["grey", "rgb"]
    want = (grey * 255 + 32767) // 65535  # 65535 -> 255, 32768 -> 128, exact integers
    got_grey = split.images[0].numpy().astype(np.int64)
    assert all(np.array_equal(got_grey[c], want) for c in range(3))
    got_rgb = split.images[1].numpy().astype(np.int64).transpose(1, 2, 0)
    assert np.abs(got_rgb - (rgb * 255 + 32767) // 65535).max() <= 1  # Pillow keeps the high byte
    assert (split.images == 255).float().mean() < 0.05  # was 99.6% at 255 for the grey image


def test_float_pixels_are_refused_in_one_line(tmp_path):
    path = tmp_path / "f" / "a" / "0.tif"
    path.parent.mkdir(parents=True)
    Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32)).save(path)
    with pytest.raises(DataError) as e:
        load_split(f"imagefolder:{tmp_path / 'f'}", root=tmp_path / "d")
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "floating-point" in msg
