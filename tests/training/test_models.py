"""ResNet-18 stems, projection head, and strict encoder loading (checkpoints, prefixes, ImageNet)."""
from __future__ import annotations

import copy
import subprocess
import sys
import urllib.error

import pytest
import torch
from torch import nn

from simpleclr.training.parts import models, resnet
from simpleclr.training.parts.models import (IMAGENET_MEAN, IMAGENET_STD, Classifier, ProjectionHead, SimCLRNet,
                                       WeightsError, encoder_state, load_encoder, resnet18_encoder,
                                       write_standin_imagenet_weights)
from simpleclr.runs.rundir import RunDir

torch.set_num_threads(min(2, torch.get_num_threads()))


def _layer1_hw(net: nn.Module, size: int) -> tuple[int, int]:
    seen = {}

    def record(module, inputs, output):
        seen["hw"] = tuple(output.shape[-2:])

    hook = net.layer1.register_forward_hook(record)
    with torch.no_grad():
        out = net.eval()(torch.randn(2, 3, size, size))
    hook.remove()
    assert out.shape == (2, 512)
    return seen["hw"]


@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_our_resnet18_is_torchvisions_bit_for_bit(stem):
    """Same keys, shapes and initial weights from one seed as torchvision's resnet18 (with the
    cifar stem swapped in the same way), and the same output on the same weights."""
    from torchvision.models import ResNet18_Weights, resnet18

    torch.manual_seed(7)
    ours = resnet18_encoder(stem)
    torch.manual_seed(7)
    ref = resnet18(weights=None)
    if stem == "cifar":
        ref.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(ref.conv1.weight, mode="fan_out", nonlinearity="relu")
        ref.maxpool = nn.Identity()
    ref.fc = nn.Identity()
    a, b = ours.state_dict(), ref.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(2, 3, 32, 32)
    ours.eval(), ref.eval()
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))
    # the full network's keys (with fc) are what ImageNet weights files hold
    assert list(resnet.ResNet18().state_dict()) == list(resnet18(weights=None).state_dict())
    weights = ResNet18_Weights.IMAGENET1K_V1
    assert resnet.IMAGENET1K_V1_URL == weights.url
    assert (tuple(weights.transforms().mean), tuple(weights.transforms().std)) == (resnet.IMAGENET_MEAN,
                                                                                  resnet.IMAGENET_STD)


@pytest.mark.slow
def test_building_an_encoder_never_imports_torchvision():
    """torchvision costs seconds in every fresh process (each kernel, each rank)."""
    code = ("import sys; from simpleclr.training.parts import models; models.resnet18_encoder('cifar'); "
            "models.resnet18_encoder('imagenet'); assert 'torchvision' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cifar_stem_keeps_resolution_and_outputs_512():
    torch.manual_seed(0)
    net = resnet18_encoder("cifar")
    assert net.feature_dim == 512 and isinstance(net.fc, nn.Identity)
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, nn.Identity)
    assert _layer1_hw(net, 32) == (32, 32)  # no downsampling before layer1


def test_imagenet_stem_is_torchvisions():
    torch.manual_seed(0)
    net = resnet18_encoder("imagenet")
    assert net.conv1.kernel_size == (7, 7) and net.conv1.stride == (2, 2)
    assert isinstance(net.maxpool, nn.MaxPool2d)
    assert _layer1_hw(net, 64) == (16, 16)  # /4 by the stem, as in torchvision
    with pytest.raises(ValueError, match="stem"):
        resnet18_encoder("tiny")


@pytest.mark.parametrize("bn", [True, False])
def test_projection_head_shapes_and_layers(bn):
    head = ProjectionHead(512, 64, 16, batch_norm=bn)
    assert head(torch.randn(5, 512)).shape == (5, 16)
    first = head.net[0]
    assert first.out_features == 64 and (first.bias is None) == bn
    assert any(isinstance(m, nn.BatchNorm1d) for m in head.modules()) == bn


def test_simclr_net_and_classifier_compose():
    torch.manual_seed(0)
    enc = resnet18_encoder("cifar")
    net = SimCLRNet(enc, ProjectionHead(512, 32, 8)).eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        z = net(x)
        assert torch.allclose(z, net.head(enc(x)))
    assert z.shape == (3, 8)
    clf = Classifier(enc, 7).eval()
    assert clf.encoder is enc and clf.fc.in_features == 512 and clf.fc.out_features == 7
    with torch.no_grad():
        assert torch.allclose(clf(x), clf.fc(enc(x)))


def test_random_encoder_follows_callers_seed():
    torch.manual_seed(3)
    a, meta = load_encoder("random", stem="cifar")
    torch.manual_seed(3)
    b, _ = load_encoder("random", stem="cifar")
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert meta == {"stem": "cifar", "mean": None, "std": None, "image_size": None, "source": "random"}


_TRAINED: dict[str, nn.Module] = {}


def _trained_like(stem: str = "cifar") -> nn.Module:
    """An encoder whose BN buffers differ from a fresh one (so a load that skips them is caught);
    built once per stem, handed out as copies."""
    if stem not in _TRAINED:
        torch.manual_seed(1)
        enc = resnet18_encoder(stem)
        with torch.no_grad():
            enc.train()(torch.randn(4, 3, 16, 16))
        _TRAINED[stem] = enc.eval()
    return copy.deepcopy(_TRAINED[stem])


def test_run_folder_round_trip(tmp_path):
    enc = _trained_like()
    meta = {"stem": "cifar", "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.2, 0.2), "image_size": 32,
            "source": {"stage": "pretrain", "run": "x"}}
    state = encoder_state(enc, meta)
    state["head"] = ProjectionHead(512, 8, 4).state_dict()  # extra keys beside the encoder are ignored
    RunDir(tmp_path / "run").save_checkpoint(state, "final")

    torch.manual_seed(99)  # a different seed must not matter: every weight comes from the file
    loaded, got = load_encoder(str(tmp_path / "run"))
    for k, v in enc.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), enc(x))
    assert got["stem"] == "cifar" and got["mean"] == [0.5, 0.4, 0.3] and got["image_size"] == 32
    assert got["checkpoint"].endswith("final.pt") and models.source_name(got) == "pretrain"
    # the same file named directly
    again, _ = load_encoder(str(tmp_path / "run" / "checkpoints" / "final.pt"))
    assert torch.equal(again.conv1.weight, enc.conv1.weight)


def test_encoder_state_is_a_detached_copy_and_needs_a_stem():
    enc = _trained_like()
    state = encoder_state(enc, {"stem": "cifar"})
    with torch.no_grad():
        enc.conv1.weight.add_(1.0)
    assert not torch.equal(state["encoder"]["conv1.weight"], enc.conv1.weight)
    assert state["meta"] == {"stem": "cifar", "mean": None, "std": None, "image_size": None, "source": None}
    with pytest.raises(ValueError, match="stem"):
        encoder_state(enc, {"mean": None})


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    state = encoder_state(_trained_like(), {"stem": "cifar"})
    del state["encoder"]["layer4.1.bn2.running_var"]
    state["encoder"]["proj.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(WeightsError) as err:
        load_encoder(str(tmp_path / "bad.pt"))
    msg = str(err.value)
    assert "\n" not in msg
    assert "missing 1: layer4.1.bn2.running_var" in msg and "unexpected 1: proj.weight" in msg


def test_wrong_shapes_fail_with_one_line(tmp_path):
    state = encoder_state(_trained_like("imagenet"), {"stem": "imagenet"})
    state["meta"]["stem"] = "cifar"  # a lie: the weights have a 7x7 conv1
    torch.save(state, tmp_path / "lie.pt")
    with pytest.raises(WeightsError, match="conv1.weight") as err:
        load_encoder(str(tmp_path / "lie.pt"))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("prefix", ["_orig_mod.", "module.", "module._orig_mod."])
def test_compile_and_ddp_prefixes_are_stripped(tmp_path, prefix):
    enc = _trained_like()
    state = encoder_state(enc, {"stem": "cifar"})
    state["encoder"] = {prefix + k: v for k, v in state["encoder"].items()}
    torch.save(state, tmp_path / "wrapped.pt")
    loaded, _ = load_encoder(str(tmp_path / "wrapped.pt"))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in enc.state_dict().items())


@pytest.mark.slow
def test_encoder_state_unwraps_a_compiled_module():
    enc = _trained_like()
    compiled = torch.compile(enc)  # wrapping is lazy: nothing is compiled until it runs
    assert any(k.startswith("_orig_mod.") for k in compiled.state_dict())
    keys = set(encoder_state(compiled, {"stem": "cifar"})["encoder"])
    assert keys == set(enc.state_dict())


def test_bad_specs_say_what_to_do(tmp_path):
    with pytest.raises(WeightsError, match="neither"):
        load_encoder(str(tmp_path / "nope"))
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(WeightsError, match="no checkpoints/final.pt"):
        load_encoder(str(tmp_path / "unfinished"))
    torch.save({"step": 3}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="no encoder weights"):
        load_encoder(str(tmp_path / "other.pt"))


# ---- ImageNet weights ---------------------------------------------------------------------
@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty torch cache (TORCH_HOME) where every download fails as it does offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    calls = []

    def no_network(url, dst, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "torch" / "hub" / "checkpoints", calls


def test_imagenet_offline_error_names_file_folder_and_url(offline_cache):
    folder, calls = offline_cache
    with pytest.raises(WeightsError) as err:
        load_encoder("imagenet")
    msg = str(err.value)
    assert "\n" not in msg
    assert "resnet18-f37072fd.pth" in msg and str(folder) in msg
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in msg
    assert "name resolution" in msg  # the reason
    assert calls == ["https://download.pytorch.org/models/resnet18-f37072fd.pth"]
    assert not (folder / "resnet18-f37072fd.pth").exists()


def test_imagenet_weights_from_the_cache_without_network(offline_cache, monkeypatch):
    folder, calls = offline_cache
    file = write_standin_imagenet_weights(folder / "resnet18-f37072fd.pth", seed=5)
    written = torch.load(file, weights_only=True)
    from torchvision.models import resnet18

    assert set(written) == set(resnet18(weights=None).state_dict())  # torchvision's exact keys

    net, meta = load_encoder("imagenet")
    assert calls == []  # read from the cache, no download attempted
    assert isinstance(net.fc, nn.Identity) and net.feature_dim == 512
    for k, v in net.state_dict().items():
        assert torch.equal(v, written[k]), k
    assert meta["stem"] == "imagenet" and meta["mean"] == list(IMAGENET_MEAN)
    assert meta["std"] == list(IMAGENET_STD)
    assert meta["source"] == "standin"  # its hash is not torchvision's: reported as a stand-in

    # The source rule itself: a file whose sha256 starts with the official prefix is "imagenet".
    monkeypatch.setattr(models, "official_hash_prefix", lambda: meta["sha256"][:8])
    assert load_encoder("imagenet")[1]["source"] == "imagenet"


def test_standin_path_spec_and_seed(tmp_path):
    a = write_standin_imagenet_weights(tmp_path / "a.pt", seed=1)
    b = write_standin_imagenet_weights(tmp_path / "b.pt", seed=1)
    c = write_standin_imagenet_weights(tmp_path / "c.pt", seed=2)
    sa, sb, sc = (torch.load(p, weights_only=True) for p in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and not torch.equal(sa["conv1.weight"], sc["conv1.weight"])
    net, meta = load_encoder(f"imagenet:{a}")
    assert meta["source"] == "standin" and meta["file"] == str(a) and meta["stem"] == "imagenet"
    assert torch.equal(net.layer3[0].conv1.weight, sa["layer3.0.conv1.weight"])
    # a bare torchvision-format file named as a checkpoint: stem read from conv1, fc dropped
    net2, meta2 = load_encoder(str(a))
    assert meta2["stem"] == "imagenet" and torch.equal(net2.conv1.weight, sa["conv1.weight"])
    # a torchvision-format file with a key missing is refused
    del sa["layer1.0.bn1.weight"]
    torch.save(sa, tmp_path / "broken.pt")
    with pytest.raises(WeightsError, match="missing 1: layer1.0.bn1.weight"):
        load_encoder(f"imagenet:{tmp_path / 'broken.pt'}")
    with pytest.raises(WeightsError, match="does not exist"):
        load_encoder(f"imagenet:{tmp_path / 'absent.pt'}")


def test_a_narrower_encoder_scales_every_stage_and_round_trips_at_its_width(tmp_path):
    torch.manual_seed(0)
    enc = models.resnet18_encoder("cifar", width=16)
    assert enc.feature_dim == 128 and enc(torch.randn(2, 3, 16, 16)).shape == (2, 128)
    assert [enc.layer1[0].conv1.out_channels, enc.layer4[1].conv2.out_channels] == [16, 128]
    full = sum(p.numel() for p in models.resnet18_encoder("cifar").parameters())
    assert sum(p.numel() for p in enc.parameters()) < full / 15  # weights scale with width squared
    run = RunDir(tmp_path / "run")
    run.save_checkpoint(models.encoder_state(enc, {"stem": "cifar"}), "final")
    back, _ = models.load_encoder(str(tmp_path / "run"), width=16)
    assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(), back.state_dict().values()))
    # a config that names another width is refused with the width to set, before anything runs
    with pytest.raises(models.WeightsError, match="holds an encoder of width 16.*set width to 16"):
        models.load_encoder(str(tmp_path / "run"))
    with pytest.raises(models.WeightsError, match="ImageNet weights are a ResNet-18 of width 64"):
        models.load_encoder("imagenet", width=16)
    assert models.load_encoder("random", width=8)[0].feature_dim == 64
    head = ProjectionHead(enc.feature_dim, 32, 16)
    assert SimCLRNet(enc, head)(torch.randn(2, 3, 8, 8)).shape == (2, 16)


def test_the_width_joins_the_fingerprint_only_away_from_resnet18s():
    from simpleclr.config import PretrainConfig

    base = PretrainConfig()
    assert base.replace(width=64).fingerprint() == base.fingerprint()  # older run folders still match
    assert base.replace(width=16).fingerprint() != base.fingerprint()
