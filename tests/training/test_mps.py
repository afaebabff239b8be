"""Apple's MPS: chosen by ``device=auto`` where there is no CUDA GPU, in fp32 with contiguous memory,
and nothing on the training path refuses it. No Mac runs these tests here: MPS's availability is
mocked for the device choice; the tests that need a real MPS device skip elsewhere."""
from __future__ import annotations

import pytest
import torch

from simpleclr.config import ConfigError, PretrainConfig
from simpleclr.training.parts import augment, device

MPS = torch.device("mps")
HAS_MPS = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


@pytest.fixture
def gpus(monkeypatch):
    """Set which accelerators this process sees: ``gpus(cuda=False, mps=True)``."""
    def set_(cuda: bool, mps: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    return set_


def test_auto_picks_mps_without_cuda_and_cuda_before_mps(gpus):
    gpus(cuda=False, mps=True)
    assert device.resolve_device("auto") == MPS
    assert device.resolve_device("mps") == MPS
    gpus(cuda=True, mps=True)
    assert device.resolve_device("auto") == torch.device("cuda", 0)
    gpus(cuda=False, mps=False)
    assert device.resolve_device("auto") == torch.device("cpu")


def test_mps_asked_for_where_there_is_none_is_one_clear_line(gpus):
    gpus(cuda=False, mps=False)
    with pytest.raises(ConfigError, match=r"^device='mps' was asked for but MPS is not available: use"):
        device.resolve_device("mps")


def test_auto_precision_on_mps_is_fp32_contiguous_without_a_scaler(gpus):
    gpus(cuda=False, mps=True)
    rt = device.resolve_runtime("auto", "auto")
    assert (rt.device, rt.precision, rt.channels_last, rt.use_grad_scaler) == (MPS, "fp32", False, False)
    assert rt.describe()["device"] == "mps"


@pytest.mark.parametrize("precision,scaler", [("bf16", False), ("fp16", True), ("fp32", False)])
def test_every_precision_asked_for_on_mps_is_honoured_and_its_autocast_and_scaler_build(gpus, precision, scaler):
    gpus(cuda=False, mps=True)
    rt = device.resolve_runtime("mps", precision)
    assert rt.precision == precision and rt.use_grad_scaler is scaler
    with rt.autocast():  # torch.autocast accepts device_type "mps" for bf16 and fp16
        pass
    if scaler:
        torch.amp.GradScaler(rt.device.type)  # the training loop's scaler for fp16 takes "mps"


def test_stage_configs_accept_mps_and_compile_on_it():
    cfg = PretrainConfig(device="mps", compile=True)
    assert cfg.device == "mps" and cfg.compile


def test_float64_arithmetic_for_mps_runs_on_the_cpu_and_stays_put_elsewhere():
    assert augment.float64_device(MPS) == torch.device("cpu")
    assert augment.float64_device(torch.device("cpu")) == torch.device("cpu")
    assert augment.float64_device(torch.device("cuda", 1)) == torch.device("cuda", 1)


@pytest.mark.skipif(not HAS_MPS, reason="needs Apple's MPS (an M-series Mac)")
def test_crops_sampled_on_mps_are_on_mps_inside_the_image_and_seeded():
    aug = augment.SimCLRAugment(16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    draw = [aug.sample_params(64, 32, 24, torch.Generator(device=MPS).manual_seed(0), MPS) for _ in range(2)]
    for key in ("top", "left", "height", "width"):
        assert draw[0][key].device.type == "mps" and torch.equal(draw[0][key].cpu(), draw[1][key].cpu()), key
    p = {k: v.cpu() for k, v in draw[0].items()}
    assert bool((p["top"] >= 0).all() and (p["top"] + p["height"] <= 32).all())
    assert bool((p["left"] >= 0).all() and (p["left"] + p["width"] <= 24).all())


@pytest.mark.skipif(not HAS_MPS, reason="needs Apple's MPS (an M-series Mac)")
def test_a_short_simclr_pretraining_runs_on_mps_in_fp32(tmp_path):
    from simpleclr.training.stages import pretrain

    cfg = PretrainConfig(dataset="synthetic-cifar100:train=4,test=2", device="mps", batch_size=16, steps=2,
                         epochs=1, image_size=8, width=8, warmup_epochs=0.0, knn_every=0, progress=False)
    result = pretrain.pretrain(cfg, tmp_path / "run")
    assert result["runtime"]["device"] == "mps" and result["runtime"]["precision"] == "fp32"
    assert torch.isfinite(torch.tensor(result["final_loss"]))
