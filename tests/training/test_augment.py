"""Batched per-sample augmentation against torchvision's functional ops on single images,
parameter distributions against torchvision's samplers, reproducibility and the supervised crop."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.v2.functional as TF

from simpleclr.training.parts import augment as A
from simpleclr.training.parts.augment import SimCLRAugment, SupervisedAugment, normalize

MEAN = (0.5071, 0.4865, 0.4409)
STD = (0.2673, 0.2564, 0.2762)
TOL = 1e-4  # un-normalised [0, 1] space; the brief asks for 1/255, we match to float rounding


def images(b: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random colour images (structure survives resizing), uint8 (b, 3, size, size)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(b, 3, 5, 5, generator=g)
    smooth = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    noise = 0.1 * torch.rand(b, 3, size, size, generator=g)
    return (smooth + noise).clamp(0, 1).mul(255).round().to(torch.uint8)


def unnormalize(x: torch.Tensor) -> torch.Tensor:
    return x * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)


def torchvision_view(img: torch.Tensor, p: dict, i: int, size: int, blur_kernel: int) -> torch.Tensor:
    """One SimCLR view of a single uint8 image with torchvision's functional ops, in [0, 1]."""
    x = TF.to_dtype(img, torch.float32, scale=True)
    x = TF.resized_crop(x, int(p["top"][i]), int(p["left"][i]), int(p["height"][i]), int(p["width"][i]),
                        [size, size], antialias=True)
    if p["flip"][i]:
        x = TF.horizontal_flip(x)
    if p["jitter"][i]:
        ops = {0: lambda y: TF.adjust_brightness(y, float(p["brightness"][i])),
               1: lambda y: TF.adjust_contrast(y, float(p["contrast"][i])),
               2: lambda y: TF.adjust_saturation(y, float(p["saturation"][i])),
               3: lambda y: TF.adjust_hue(y, float(p["hue"][i]))}
        for op in p["order"][i].tolist():
            x = ops[op](x)
    if p["gray"][i]:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    if p["blur"][i]:
        s = float(p["sigma"][i])
        x = TF.gaussian_blur(x, [blur_kernel, blur_kernel], [s, s])
    return x


def covering_params(aug: SimCLRAugment, b: int, h: int, w: int, seed: int) -> dict:
    """Random parameters with every branch forced on for some samples and off for others."""
    p = aug.sample_params(b, h, w, torch.Generator().manual_seed(seed))
    idx = torch.arange(b)
    p["flip"] = idx % 2 == 0
    p["jitter"] = idx % 4 != 3
    p["gray"] = idx % 3 == 1
    p["blur"] = (idx % 5 >= 2) if aug.blur_prob > 0 else torch.zeros(b, dtype=torch.bool)
    return p


@pytest.mark.parametrize("src,size,blur", [(32, 32, 0.0), (32, 32, 0.5), (64, 32, 0.5), (32, 48, 0.0),
                                           (64, 64, 0.5)])
def test_simclr_matches_torchvision_functional_ops(src: int, size: int, blur: float) -> None:
    b = 16
    x = images(b, src, seed=src + size)
    aug = SimCLRAugment(size, MEAN, STD, blur_prob=blur)
    p = covering_params(aug, b, src, src, seed=size)
    out = aug.apply(x, p)
    assert out.shape == (b, 3, size, size) and out.dtype == torch.float32
    ref = torch.stack([torchvision_view(x[i], p, i, size, aug.blur_kernel) for i in range(b)])
    assert (unnormalize(out) - ref).abs().max().item() < TOL
    # and the normalisation itself is torchvision's
    assert torch.allclose(out, TF.normalize(ref, list(MEAN), list(STD)), atol=TOL / min(STD))


def test_extreme_jitter_strength_matches_torchvision() -> None:
    # s=2: brightness/contrast/saturation factors reach 0 and 2.6, hue reaches +-0.4: clamps matter.
    b = 16
    x = images(b, 32, seed=5)
    aug = SimCLRAugment(32, MEAN, STD, jitter_strength=2.0)
    p = covering_params(aug, b, 32, 32, seed=9)
    p["jitter"][:] = True
    ref = torch.stack([torchvision_view(x[i], p, i, 32, aug.blur_kernel) for i in range(b)])
    assert (unnormalize(aug.apply(x, p)) - ref).abs().max().item() < TOL


def test_crop_resize_equals_interpolate_on_the_crop() -> None:
    # The separable weights are torch's antialiased bilinear: check them against it to float precision.
    img = torch.rand(1, 3, 64, 64, dtype=torch.float32)
    for top, left, h, w, size in [(0, 0, 64, 64, 32), (3, 5, 20, 37, 32), (10, 2, 7, 9, 32),
                                  (5, 5, 50, 11, 24), (0, 1, 64, 63, 17), (60, 60, 4, 4, 64)]:
        ref = F.interpolate(img[..., top:top + h, left:left + w], size=(size, size), mode="bilinear",
                            antialias=True, align_corners=False)
        wy = A.resize_weights(torch.tensor([top]), torch.tensor([h]), 64, size)[0]
        wx = A.resize_weights(torch.tensor([left]), torch.tensor([w]), 64, size)[0]
        assert torch.allclose(wy @ img[0] @ wx.T, ref[0], atol=2e-6)


def test_hue_known_values() -> None:
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).repeat(3, 1, 1, 1)
    got = A.adjust_hue(red, torch.tensor([1 / 3, -1 / 3, 0.5])).flatten(1)
    expected = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 1.0]])  # green, blue, cyan
    assert torch.allclose(got, expected, atol=1e-6)
    grey = torch.full((2, 3, 2, 2), 0.4)
    assert torch.equal(A.adjust_hue(grey, torch.tensor([0.25, -0.5])), grey)


def test_identity_settings_reduce_to_normalize() -> None:
    x = images(6, 32)
    aug = SimCLRAugment(32, MEAN, STD, scale=(1.0, 1.0), ratio=(1.0, 1.0), jitter_prob=0.0,
                        gray_prob=0.0, flip_prob=0.0)
    assert torch.allclose(aug(x, torch.Generator().manual_seed(0)), normalize(x, MEAN, STD), atol=1e-5)


def test_images_in_one_batch_get_different_crops_and_colours() -> None:
    x = images(1, 32).repeat(16, 1, 1, 1)  # one image, 16 times
    aug = SimCLRAugment(32, MEAN, STD, jitter_prob=1.0)
    g = torch.Generator().manual_seed(1)
    p = aug.sample_params(16, 32, 32, g)
    boxes = {tuple(int(p[k][i]) for k in ("top", "left", "height", "width")) for i in range(16)}
    assert len(boxes) == 16
    assert len(set(p["brightness"].tolist())) == 16 and len(set(p["hue"].tolist())) == 16
    out = aug.apply(x, p)
    flat = out.flatten(1)
    for i, j in itertools.combinations(range(16), 2):
        assert (flat[i] - flat[j]).abs().max() > 0.1
    # colours, not just geometry: per-view mean colours are spread out
    assert unnormalize(out).mean(dim=(2, 3)).std(dim=0).min() > 0.02


def test_fixed_seed_reproduces_and_other_seed_differs() -> None:
    x = images(8, 32)
    aug = SimCLRAugment(32, MEAN, STD, blur_prob=0.5)
    a1, a2 = aug.two_views(x, torch.Generator().manual_seed(42))
    b1, b2 = aug.two_views(x, torch.Generator().manual_seed(42))
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    c1, _ = aug.two_views(x, torch.Generator().manual_seed(43))
    assert not torch.allclose(a1, c1)
    assert torch.equal(aug(x, torch.Generator().manual_seed(7)), aug(x, torch.Generator().manual_seed(7)))


def test_two_views_are_apply_on_2b_parameter_sets() -> None:
    x = images(5, 32)
    aug = SimCLRAugment(32, MEAN, STD)
    v1, v2 = aug.two_views(x, torch.Generator().manual_seed(3))
    p = aug.sample_params(10, 32, 32, torch.Generator().manual_seed(3))
    both = aug.apply(x, p)
    assert torch.equal(torch.cat([v1, v2]), both)
    assert not torch.allclose(v1, v2)
    # view k*B + b comes from image b: the same as giving the batch twice
    assert torch.allclose(both, aug.apply(torch.cat([x, x]), p), atol=1e-5)


def test_gather_and_where_paths_agree() -> None:
    # CPU computes ops on the selected samples only; GPUs use where(). Both must give the same views.
    aug = SimCLRAugment(32, MEAN, STD)
    p = aug.sample_params(32, 32, 32, torch.Generator().manual_seed(4))
    x = torch.rand(32, 3, 32, 32)
    a = A.color_jitter(x.clone(), p, gather=True)
    b = A.color_jitter(x.clone(), p, gather=False)
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(a, x)


def test_accelerator_path_gives_the_same_views(monkeypatch: pytest.MonkeyPatch) -> None:
    # The where() path GPUs take (no host syncs) must produce the CPU path's views, blur included.
    x = images(12, 32)
    aug = SimCLRAugment(32, MEAN, STD, blur_prob=0.5)
    p = aug.sample_params(24, 32, 32, torch.Generator().manual_seed(8))
    cpu_path = aug.apply(x, p)
    monkeypatch.setattr(A, "use_gather", lambda device: False)
    assert torch.allclose(aug.apply(x, p), cpu_path, atol=1e-5)


def test_autocast_region_does_not_lower_precision() -> None:
    x = images(6, 64)
    aug = SimCLRAugment(32, MEAN, STD)
    sup = SupervisedAugment(32, MEAN, STD)
    p = aug.sample_params(6, 64, 64, torch.Generator().manual_seed(0))
    q = sup.sample_params(6, 64, 64, torch.Generator().manual_seed(0))
    plain = aug.apply(x, p), sup.apply(x, q), normalize(x, MEAN, STD, size=32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = aug.apply(x, p), sup.apply(x, q), normalize(x, MEAN, STD, size=32)
    for a, b in zip(plain, amp):
        assert b.dtype == torch.float32 and torch.equal(a, b)


def torchvision_crops(n: int, h: int, w: int, scale, ratio) -> torch.Tensor:
    torch.manual_seed(0)
    img = torch.zeros(3, h, w)
    return torch.tensor([T.RandomResizedCrop.get_params(img, list(scale), list(ratio)) for _ in range(n)])


def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    grid = torch.cat([a, b]).unique()
    cdf_a = torch.searchsorted(a.sort().values, grid, right=True) / len(a)
    cdf_b = torch.searchsorted(b.sort().values, grid, right=True) / len(b)
    return (cdf_a - cdf_b).abs().max().item()


@pytest.mark.parametrize("h,w,scale,ratio", [(32, 32, (0.08, 1.0), (3 / 4, 4 / 3)),
                                             (64, 48, (0.2, 0.9), (0.5, 2.0))])
def test_crop_distribution_matches_torchvision_sampler(h: int, w: int, scale, ratio) -> None:
    aug = SimCLRAugment(32, MEAN, STD, scale=scale, ratio=ratio)
    p = aug.sample_params(20000, h, w, torch.Generator().manual_seed(0))
    top, left, ch, cw = p["top"], p["left"], p["height"], p["width"]
    assert (top >= 0).all() and (left >= 0).all() and (top + ch <= h).all() and (left + cw <= w).all()
    assert (ch >= 1).all() and (cw >= 1).all()
    # area fractions lie in the scale range up to rounding of the sides to whole pixels
    frac = (ch * cw).double() / (h * w)
    slack = (ch + cw + 1).double() / (h * w)
    assert (frac >= scale[0] - slack).all() and (frac <= scale[1] + slack).all()
    ref = torchvision_crops(4000, h, w, scale, ratio)  # rows (top, left, height, width)
    ref_frac = (ref[:, 2] * ref[:, 3]).double() / (h * w)
    # two-sample KS at n=20000 vs 4000: 0.035 is beyond the 0.1% critical value (~0.034)
    assert ks_statistic(frac, ref_frac) < 0.035
    assert ks_statistic((cw.double() / ch), (ref[:, 3].double() / ref[:, 2])) < 0.035
    # the position is uniform over the free range
    free = (h - ch).clamp(min=1).double()
    assert abs((top.double() / free)[h - ch > 8].mean().item() - 0.5) < 0.02


def test_crop_fallback_is_torchvision_centre_crop() -> None:
    # No try can fit a 2:1..3:1 box of the whole area in a square: centre crop at ratio 2.
    aug = SimCLRAugment(16, MEAN, STD, scale=(1.0, 1.0), ratio=(2.0, 3.0))
    p = aug.sample_params(50, 32, 32, torch.Generator().manual_seed(0))
    ref = torchvision_crops(1, 32, 32, (1.0, 1.0), (2.0, 3.0))[0].tolist()
    assert ref == [8, 0, 16, 32]
    for key, value in zip(("top", "left", "height", "width"), ref):
        assert (p[key] == value).all()


def test_colour_and_flip_distributions() -> None:
    n = 20000
    aug = SimCLRAugment(32, MEAN, STD, blur_prob=0.5, jitter_strength=0.5)
    p = aug.sample_params(n, 32, 32, torch.Generator().manual_seed(1))
    for key, rate in (("flip", 0.5), ("jitter", 0.8), ("gray", 0.2), ("blur", 0.5)):
        assert abs(p[key].double().mean().item() - rate) < 0.02, key
    s = 0.5
    for key in ("brightness", "contrast", "saturation"):
        v = p[key]
        assert v.min() >= 1 - 0.8 * s and v.max() <= 1 + 0.8 * s
        assert abs(v.mean().item() - 1.0) < 0.01 and abs(v.std().item() - 0.8 * s / math.sqrt(3)) < 0.01
    assert p["hue"].abs().max() <= 0.2 * s and abs(p["hue"].mean().item()) < 0.005
    assert p["sigma"].min() >= 0.1 and p["sigma"].max() <= 2.0
    # every row of order is a permutation of the 4 ops and all 24 orders occur about equally often
    assert (p["order"].sort(dim=1).values == torch.arange(4)).all()
    counts = torch.unique(p["order"], dim=0, return_counts=True)[1]
    assert len(counts) == 24 and counts.min() > n / 24 * 0.8
    # independence: flips are not tied to the crop
    assert abs(p["flip"][p["width"] > 20].double().mean().item() - 0.5) < 0.03
    # strength 0 turns jitter off entirely
    assert not SimCLRAugment(32, MEAN, STD, jitter_strength=0.0).sample_params(
        500, 32, 32, torch.Generator().manual_seed(0))["jitter"].any()


@pytest.mark.parametrize("src,size", [(32, 32), (64, 32), (32, 64), (64, 48), (48, 24)])
def test_shapes_dtype_device_and_value_range(src: int, size: int) -> None:
    x = images(6, src)
    aug = SimCLRAugment(size, MEAN, STD, blur_prob=0.5 if size >= 32 else 0.0)
    v1, v2 = aug.two_views(x, torch.Generator().manual_seed(0))
    for v in (v1, v2):
        assert v.shape == (6, 3, size, size) and v.dtype == torch.float32 and v.device == x.device
        u = unnormalize(v)
        assert u.min() >= -1e-5 and u.max() <= 1 + 1e-5
    out = aug(x)  # default generator
    assert out.shape == (6, 3, size, size)


def test_supervised_matches_manual_pad_crop_flip() -> None:
    x = images(9, 32)
    aug = SupervisedAugment(32, MEAN, STD, padding=4)
    p = aug.sample_params(9, 32, 32, torch.Generator().manual_seed(0))
    p["top"] = torch.tensor([0, 8, 4, 0, 8, 3, 1, 7, 4])
    p["left"] = torch.tensor([0, 8, 4, 8, 0, 6, 2, 5, 4])
    p["flip"] = torch.arange(9) % 2 == 1
    out = aug.apply(x, p)
    padded = F.pad(TF.to_dtype(x, torch.float32, scale=True), (4, 4, 4, 4))  # zero padding
    for i in range(9):
        t, left = int(p["top"][i]), int(p["left"][i])
        ref = padded[i, :, t:t + 32, left:left + 32]
        if p["flip"][i]:
            ref = ref.flip(-1)
        assert torch.allclose(out[i], TF.normalize(ref, list(MEAN), list(STD)), atol=1e-5)
    assert torch.allclose(out[2], normalize(x[2:3], MEAN, STD)[0], atol=1e-5)  # centre, no flip


def test_supervised_resizes_other_sizes_then_crops() -> None:
    x = images(4, 64)
    aug = SupervisedAugment(32, MEAN, STD, padding=2)
    p = aug.sample_params(4, 64, 64, torch.Generator().manual_seed(0))
    p["top"], p["left"] = torch.tensor([0, 4, 2, 1]), torch.tensor([4, 0, 2, 3])
    p["flip"] = torch.zeros(4, dtype=torch.bool)
    out = aug.apply(x, p)
    small = F.interpolate(TF.to_dtype(x, torch.float32, scale=True), size=(32, 32), mode="bilinear",
                          antialias=True, align_corners=False)
    padded = F.pad(small, (2, 2, 2, 2))
    for i in range(4):
        t, left = int(p["top"][i]), int(p["left"][i])
        ref = TF.normalize(padded[i, :, t:t + 32, left:left + 32], list(MEAN), list(STD))
        assert torch.allclose(out[i], ref, atol=1e-5)


def test_supervised_offsets_and_flips_are_uniform() -> None:
    aug = SupervisedAugment(32, MEAN, STD, padding=4)
    p = aug.sample_params(9000, 32, 32, torch.Generator().manual_seed(0))
    for key in ("top", "left"):
        counts = torch.bincount(p[key], minlength=9)
        assert len(counts) == 9 and counts.min() > 800  # 9 offsets, 1000 each expected
    assert abs(p["flip"].double().mean().item() - 0.5) < 0.02
    x = images(4, 32)
    a = aug(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, aug(x, torch.Generator().manual_seed(5))) and a.shape == (4, 3, 32, 32)


def test_normalize_with_and_without_resize() -> None:
    x = images(3, 64)
    ref = TF.normalize(TF.to_dtype(x, torch.float32, scale=True), list(MEAN), list(STD))
    assert torch.allclose(normalize(x, MEAN, STD), ref, atol=1e-5)
    assert torch.allclose(normalize(x, MEAN, STD, size=64), ref, atol=1e-5)
    small = TF.resize(TF.to_dtype(x, torch.float32, scale=True), [32, 32], antialias=True)
    got = normalize(x, torch.tensor(MEAN), torch.tensor(STD), size=32)
    assert got.dtype == torch.float32 and got.shape == (3, 3, 32, 32)
    assert torch.allclose(got, TF.normalize(small, list(MEAN), list(STD)), atol=1e-5)


@pytest.mark.parametrize("bad", [torch.rand(2, 3, 8, 8), torch.zeros(2, 1, 8, 8, dtype=torch.uint8),
                                 torch.zeros(3, 8, 8, dtype=torch.uint8), torch.zeros(0, 3, 8, 8, dtype=torch.uint8)])
def test_bad_images_are_refused(bad: torch.Tensor) -> None:
    for fn in (SimCLRAugment(8, MEAN, STD), SupervisedAugment(8, MEAN, STD),
               lambda y: normalize(y, MEAN, STD)):
        with pytest.raises(ValueError, match="uint8|empty"):
            fn(bad)


def test_parameters_for_another_image_size_are_refused() -> None:
    aug = SimCLRAugment(32, MEAN, STD)
    p = aug.sample_params(4, 64, 64)
    with pytest.raises(ValueError, match="drawn for"):
        aug.apply(images(4, 32), p)
    with pytest.raises(ValueError, match="multiple"):
        aug.apply(images(3, 64), p)
    sup = SupervisedAugment(32, MEAN, STD)
    with pytest.raises(ValueError, match="drawn for"):
        sup.apply(images(4, 64), sup.sample_params(4, 32, 32))
    with pytest.raises(ValueError, match="drawn for"):  # SimCLR parameters given to the supervised crop
        sup.apply(images(4, 64), p)


@pytest.mark.parametrize("kwargs", [dict(scale=(0.5, 0.2)), dict(scale=(0.0, 1.0)), dict(ratio=(2.0, 1.0)),
                                    dict(jitter_strength=3.0), dict(jitter_prob=1.5), dict(gray_prob=-0.1),
                                    dict(size=0), dict(std=(0.2, 0.0, 0.2)), dict(mean=(0.5, 0.5))])
def test_bad_settings_are_refused(kwargs: dict) -> None:
    args = dict(size=32, mean=MEAN, std=STD) | kwargs
    with pytest.raises(ValueError):
        SimCLRAugment(args.pop("size"), args.pop("mean"), args.pop("std"), **args)
