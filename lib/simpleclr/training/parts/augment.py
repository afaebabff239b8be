"""Batched image augmentation on the device holding the data, with parameters drawn per sample.

torchvision's v2 transforms draw one parameter set per call, so a batched tensor would get one crop
and one colour for all its images. Here every image gets its own, and the whole batch is computed
in a handful of tensor ops (no per-sample Python loop):

* crop + resize + flip is one separable linear map: ``out = Wy @ img @ Wx^T`` with per-sample
  weight matrices that reproduce ``torch.nn.functional.interpolate(mode="bilinear",
  antialias=True, align_corners=False)`` on the cropped region, i.e. torchvision's
  ``resized_crop(..., antialias=True)`` (its default). When the crop is upscaled, antialiasing
  changes nothing, so this is also plain bilinear; when it is downscaled (64 px sources into 32 px
  views) it is the antialiased filter, like torchvision and PIL.
* colour ops follow torchvision's functional definitions (``adjust_brightness``,
  ``adjust_contrast``, ``adjust_saturation``, ``adjust_hue``, ``rgb_to_grayscale``,
  ``gaussian_blur``), vectorised over per-sample factors, in float32 on [0, 1] images. The jitter
  ops run in a random order per sample, as ``ColorJitter`` does.

Everything stays float32: bf16 would cost more than 1/255 of accuracy on [0, 1] values (8 mantissa
bits) and the ops are memory-bound, so it would buy little.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

__all__ = ["SimCLRAugment", "SupervisedAugment", "normalize", "blur_kernel_size"]

Params = dict[str, torch.Tensor]

# rgb_to_grayscale weights (ITU-R 601-2 luma, as torchvision and PIL use)
_LUMA = (0.2989, 0.587, 0.114)
_BLUR_SIGMA = (0.1, 2.0)
_N_TRIES = 10  # RandomResizedCrop's tries before its centre-crop fallback
# ColorJitter's op indices (torchvision's ``fn_idx`` convention)
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


# ---- validation -------------------------------------------------------------------------
def _check_images(x: torch.Tensor, who: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{who} expects uint8 images of shape (B, 3, H, W); got {got}: pass the data "
                         "split's uint8 image tensor (convert other images with (x*255).round().byte())")
    if x.shape[0] == 0 or x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"{who} got an empty batch {tuple(x.shape)}: pass at least one image")


def _check_stats(mean: Sequence[float], std: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean_t = tuple(float(m) for m in torch.as_tensor(mean).flatten().tolist())
    std_t = tuple(float(s) for s in torch.as_tensor(std).flatten().tolist())
    if len(mean_t) != 3 or len(std_t) != 3 or min(std_t) <= 0:
        raise ValueError(f"mean and std must be 3 per-channel values with std > 0; got mean={mean_t}, "
                         f"std={std_t}: use the data split's .mean and .std")
    return mean_t, std_t


def _check_prob(name: str, p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1]; got {p}")
    return float(p)


def _per_view(name: str, p: float | tuple[float, float]) -> tuple[float, float]:
    pair = (p, p) if isinstance(p, (int, float)) else tuple(p)
    if len(pair) != 2:
        raise ValueError(f"{name} must be one probability or one per view (two); got {p}")
    return _check_prob(name, pair[0]), _check_prob(name, pair[1])


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer (output side in pixels); got {size!r}")
    return size


def _no_autocast(device: torch.device) -> torch.autocast:
    """Augmentation is float32 arithmetic even when called inside an autocast region (bf16 matmuls
    would cost more than 1/255 of accuracy in the resize)."""
    return torch.autocast(device_type=device.type, enabled=False)


def use_gather(device: torch.device) -> bool:
    """Apply per-sample branches to the selected samples only (CPU), or to all samples followed by
    ``where`` (accelerators: no host sync, fixed shapes)."""
    return device.type == "cpu"


def _affine(mean: tuple[float, ...], std: tuple[float, ...], scale: float,
            device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (a, b) with ``x * a + b == (x * scale - mean) / std``: normalisation in one pass."""
    a = torch.tensor([scale / s for s in std], device=device).view(1, 3, 1, 1)
    b = torch.tensor([-m / s for m, s in zip(mean, std)], device=device).view(1, 3, 1, 1)
    return a, b


# ---- crop + resize as per-sample linear maps --------------------------------------------
def resize_weights(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int) -> torch.Tensor:
    """(n, out_size, in_size) float32 matrices resizing the span ``[start, start + length)`` of an
    axis of ``in_size`` pixels to ``out_size`` pixels.

    Reproduces the weights of torch's antialiased bilinear interpolation (``align_corners=False``):
    a triangle filter whose support widens by the scale factor when downscaling, cut at the span's
    edges and renormalised, which for upscaling is exactly plain bilinear with edge clamping.
    """
    start = start.to(torch.float32)
    length = length.to(torch.float32)
    scale = (length / out_size)[:, None, None]  # (n, 1, 1)
    down = scale >= 1.0
    support = torch.where(down, scale, torch.ones_like(scale))
    inv = torch.where(down, 1.0 / scale, torch.ones_like(scale))
    i = torch.arange(out_size, dtype=torch.float32, device=start.device)[None, :, None]
    center = scale * (i + 0.5)  # (n, out, 1), in span coordinates
    lo = torch.trunc(center - support + 0.5).clamp(min=0)
    hi = torch.minimum(torch.trunc(center + support + 0.5), length[:, None, None])
    q = torch.arange(in_size, dtype=torch.float32, device=start.device)[None, None, :] - start[:, None, None]
    w = (1.0 - ((q - center + 0.5) * inv).abs()).clamp_(min=0.0)
    w = w.mul_((q >= lo) & (q < hi))
    return w.div_(w.sum(dim=2, keepdim=True))


def _separable(x: torch.Tensor, wy: torch.Tensor, wx: torch.Tensor) -> torch.Tensor:
    """``wy[k, b] @ x[b, c] @ wx[k, b]^T`` for all k, b, c: x (B, 3, H, W), wy (K, B, S, H),
    wx (K, B, T, W) -> (K*B, 3, S, T). K views per image without copying the images."""
    out = torch.einsum("kbsh,bchw,kbtw->kbcst", wy, x, wx)
    return out.reshape(-1, *out.shape[2:]).contiguous()


# ---- colour ops (torchvision's definitions, per-sample factors) -------------------------
def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=1)
    return r.mul(_LUMA[0]).add_(g, alpha=_LUMA[1]).add_(b, alpha=_LUMA[2]).unsqueeze(1)


def _col(f: torch.Tensor) -> torch.Tensor:
    return f.view(-1, 1, 1, 1)


def _blend(x: torch.Tensor, other: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    f = _col(f)
    return (x * f).add_(other * (1.0 - f)).clamp_(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * _col(f)).clamp_(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True), f)


def adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, _gray(x), f)


def adjust_hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue by ``f`` turns. Uses the closed form of hsv->rgb,
    ``c_n = V - V*S*clamp(min(k_n, 4 - k_n), 0, 1)``, ``k_n = (n + 6H) mod 6``, n = 5, 3, 1 for
    R, G, B, which equals the sector table torchvision uses; ``V*S`` is simply max - min."""
    r, g, b = x.unbind(dim=1)
    maxc, minc = x.amax(dim=1), x.amin(dim=1)
    delta = maxc - minc
    inv = torch.where(delta > 0, delta, 1.0).reciprocal_()  # grey pixels: any hue, zero chroma
    h6 = torch.where(maxc == r, g - b, torch.where(maxc == g, (b - r).add_(delta, alpha=2.0),
                                                   (r - g).add_(delta, alpha=4.0)))
    h6 = h6.mul_(inv).add_((6.0 * f).view(-1, 1, 1))
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = torch.remainder(h6.unsqueeze(1) + n, 6.0)
    k = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return k.mul_(-delta.unsqueeze(1)).add_(maxc.unsqueeze(1))


_JITTER_OPS = {BRIGHTNESS: ("brightness", adjust_brightness), CONTRAST: ("contrast", adjust_contrast),
               SATURATION: ("saturation", adjust_saturation), HUE: ("hue", adjust_hue)}


def gaussian_kernels(sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """(n, kernel_size) normalised 1-D Gaussians, one per sigma (torchvision's sampling grid)."""
    t = torch.arange(kernel_size, dtype=torch.float32, device=sigma.device) - (kernel_size - 1) / 2
    return torch.softmax(-0.5 * (t[None, :] / sigma[:, None]) ** 2, dim=1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Per-sample Gaussian blur with reflect padding, separable (equal to torchvision's 2-D kernel)."""
    k = gaussian_kernels(sigma, kernel_size)
    pad = kernel_size // 2
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    h, w = x.shape[-2:]
    rows = sum(k[:, t].view(-1, 1, 1, 1) * xp[..., t:t + w] for t in range(kernel_size))
    return sum(k[:, t].view(-1, 1, 1, 1) * rows[..., t:t + h, :] for t in range(kernel_size))


def _masked(x: torch.Tensor, mask: torch.Tensor, fn, *factors: torch.Tensor, gather: bool) -> torch.Tensor:
    """``fn`` applied to the samples where ``mask`` holds. ``gather``: compute it on those samples
    only (cheapest on CPU); else on all and select with ``where`` (no host sync, for GPUs)."""
    if gather:
        idx = mask.nonzero().squeeze(1)
        if idx.numel() == 0:
            return x
        if idx.numel() == x.shape[0]:
            return fn(x, *factors)
        return x.index_copy_(0, idx, fn(x.index_select(0, idx), *(f.index_select(0, idx) for f in factors)))
    return torch.where(_col(mask), fn(x, *factors), x)


def blur_kernel_size(size: int) -> int:
    """SimCLR's blur kernel: about 10% of the image side, odd, at least 3 (32 px: 3, 64 px: 7)."""
    return max(3, int(0.1 * size) // 2 * 2 + 1)


# ---- random resized crop parameters -----------------------------------------------------
def _sample_crops(u: torch.Tensor, height: int, width: int, scale: tuple[float, float],
                  ratio: tuple[float, float]) -> tuple[torch.Tensor, ...]:
    """RandomResizedCrop's sampling for n samples at once from uniforms ``u`` (n, 2*10 + 2): area
    fraction uniform in ``scale``, aspect ratio log-uniform in ``ratio``, the first of 10 tries that
    fits, else the centre crop of the nearest allowed ratio. Returns (top, left, h, w) int64 on
    ``u``'s device. The arithmetic is float64, on the CPU where the device has none (Apple's MPS)."""
    device = u.device
    u = u.to(float64_device(device), torch.float64)
    area = height * width
    target = area * (scale[0] + (scale[1] - scale[0]) * u[:, :_N_TRIES])
    lr0, lr1 = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lr0 + (lr1 - lr0) * u[:, _N_TRIES:2 * _N_TRIES])
    w = torch.round(torch.sqrt(target * aspect))  # round half to even, like Python's round
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.to(torch.int8).argmax(dim=1, keepdim=True)
    found = ok.any(dim=1)
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    w = torch.where(found, w.gather(1, first).squeeze(1), torch.full_like(w[:, 0], fw)).to(torch.int64)
    h = torch.where(found, h.gather(1, first).squeeze(1), torch.full_like(h[:, 0], fh)).to(torch.int64)
    top = torch.floor(u[:, 2 * _N_TRIES] * (height - h + 1)).to(torch.int64).clamp(max=height - h)
    left = torch.floor(u[:, 2 * _N_TRIES + 1] * (width - w + 1)).to(torch.int64).clamp(max=width - w)
    top = torch.where(found, top, torch.full_like(top, (height - fh) // 2))
    left = torch.where(found, left, torch.full_like(left, (width - fw) // 2))
    return top.to(device), left.to(device), h.to(device), w.to(device)


def float64_device(device: torch.device) -> torch.device:
    """Where float64 arithmetic meant for ``device`` runs: the CPU for Apple's MPS, which has no
    float64 and refuses to convert to it; the device itself elsewhere."""
    return torch.device("cpu") if device.type == "mps" else device


def _uniforms(n: int, cols: int, generator: Optional[torch.Generator],
              device: torch.device) -> torch.Tensor:
    """All uniforms of one draw in a single call (on the generator's device), moved to ``device``."""
    src = generator.device if generator is not None else device
    return torch.rand(n, cols, generator=generator, device=src).to(device)


def _image_size_of(params: Params, x: torch.Tensor, who: str, kind: str) -> int:
    """Check params fit x (same source size, batch a multiple of x's) and return the view count."""
    size = params.get("image_size")
    if size is None or params.get("kind") is None:
        raise ValueError(f"{who}.apply needs the dict returned by its sample_params; got keys {sorted(params)}")
    hw = tuple(int(v) for v in size.tolist())
    if hw != tuple(x.shape[-2:]) or int(params["kind"]) != {"simclr": 0, "supervised": 1}[kind]:
        raise ValueError(f"{who}.apply: parameters were drawn for {hw} images ({kind}?) but the batch is "
                         f"{tuple(x.shape[-2:])}: call sample_params with the batch's height and width")
    n = params["flip"].shape[0]
    if n % x.shape[0]:
        raise ValueError(f"{who}.apply: {n} parameter sets for a batch of {x.shape[0]} images: the count "
                         "must be a multiple of the batch (k views per image)")
    return n // x.shape[0]


class SimCLRAugment:
    """SimCLR's view distribution (Chen et al., 2020, appendix A), drawn per sample, batched.

    Per view: random resized crop (area ``scale``, aspect ``ratio``) to ``size`` x ``size``,
    horizontal flip (``flip_prob``), colour jitter with probability ``jitter_prob`` (brightness,
    contrast, saturation ``0.8*s``, hue ``0.2*s``, in a random order per sample; ``saturation``
    replaces ``0.8*s`` for saturation alone, as solo-learn's BYOL and VICReg recipes' 0.2), grayscale
    (``gray_prob``), Gaussian blur (``blur_prob``; sigma in [0.1, 2], kernel ~10% of ``size``),
    then normalisation with ``mean`` / ``std``.
    """

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], *,
                 scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 jitter_strength: float = 1.0, jitter_prob: float = 0.8, gray_prob: float = 0.2,
                 blur_prob: float | tuple[float, float] = 0.0, flip_prob: float = 0.5,
                 solarize_prob: float | tuple[float, float] = 0.0, saturation: Optional[float] = None) -> None:
        self.size = _check_size(size)
        self.mean, self.std = _check_stats(mean, std)
        if not (len(scale) == 2 and 0.0 < scale[0] <= scale[1] <= 1.0):
            raise ValueError(f"scale must be (min, max) area fractions with 0 < min <= max <= 1; got {scale}")
        if not (len(ratio) == 2 and 0.0 < ratio[0] <= ratio[1]):
            raise ValueError(f"ratio must be (min, max) aspect ratios with 0 < min <= max; got {ratio}")
        if not 0.0 <= jitter_strength <= 2.5:
            raise ValueError(f"jitter_strength must be in [0, 2.5] (hue 0.2*s may not exceed 0.5); "
                             f"got {jitter_strength}")
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.jitter_strength = float(jitter_strength)
        if saturation is not None and not 0.0 <= saturation <= 1.0:
            raise ValueError(f"saturation must be None (0.8 x jitter_strength) or in [0, 1]; got {saturation}")
        self.saturation = 0.8 * self.jitter_strength if saturation is None else float(saturation)
        self.jitter_prob = _check_prob("jitter_prob", jitter_prob)
        self.gray_prob = _check_prob("gray_prob", gray_prob)
        # per view (view 1, view 2 of :meth:`two_views`): BYOL's asymmetric views
        self.blur_probs = _per_view("blur_prob", blur_prob)
        self.solarize_probs = _per_view("solarize_prob", solarize_prob)
        self.blur_prob, self.solarize_prob = max(self.blur_probs), max(self.solarize_probs)
        self.flip_prob = _check_prob("flip_prob", flip_prob)
        self.blur_kernel = blur_kernel_size(self.size)
        if self.blur_prob > 0 and self.blur_kernel // 2 >= self.size:
            raise ValueError(f"size={self.size} is too small for a {self.blur_kernel}-px blur: set blur_prob=0")

    def __repr__(self) -> str:
        return (f"SimCLRAugment(size={self.size}, scale={self.scale}, ratio={self.ratio}, "
                f"jitter_strength={self.jitter_strength}, saturation={self.saturation}, "
                f"jitter_prob={self.jitter_prob}, "
                f"gray_prob={self.gray_prob}, blur_prob={self.blur_probs}, flip_prob={self.flip_prob}, "
                f"solarize_prob={self.solarize_probs})")

    def sample_params(self, batch: int, height: int, width: int, generator: Optional[torch.Generator] = None,
                      device: torch.device | str = "cpu", pair: bool = False) -> Params:
        """Per-sample parameters for ``batch`` views of ``height`` x ``width`` images (``pair``: the
        first half view 1, the second view 2, each with its own blur and solarization chance).

        Keys: ``top``, ``left``, ``height``, ``width`` (crop box, int64), ``flip``, ``jitter``,
        ``gray``, ``blur`` (bool), ``brightness``, ``contrast``, ``saturation``, ``hue``, ``sigma``
        (float32), ``order`` (int64 (batch, 4), the jitter ops' order: 0 brightness, 1 contrast,
        2 saturation, 3 hue), ``solarize`` (bool; drawn only where a view may solarize, so the
        other streams stay as they were), plus ``image_size`` and ``kind`` (CPU, for checking in
        ``apply``).
        """
        device = torch.device(device)
        s = self.jitter_strength
        u = _uniforms(batch, 2 * _N_TRIES + 2 + 13 + (self.solarize_prob > 0), generator, device)
        top, left, h, w = _sample_crops(u[:, :2 * _N_TRIES + 2], height, width, self.scale, self.ratio)
        v = u[:, 2 * _N_TRIES + 2:]
        lo = max(0.0, 1.0 - 0.8 * s)
        bcs = lo + (1.0 + 0.8 * s - lo) * v[:, 0:3]
        if self.saturation != 0.8 * s:  # its own range, from the same uniform
            sat_lo = max(0.0, 1.0 - self.saturation)
            bcs[:, 2] = sat_lo + (1.0 + self.saturation - sat_lo) * v[:, 2]
        return {
            "top": top, "left": left, "height": h, "width": w,
            "flip": v[:, 3] < self.flip_prob,
            "jitter": (v[:, 4] < self.jitter_prob) & (s > 0 or self.saturation > 0),
            "brightness": bcs[:, 0].contiguous(), "contrast": bcs[:, 1].contiguous(),
            "saturation": bcs[:, 2].contiguous(),
            "hue": (0.2 * s * (2.0 * v[:, 5] - 1.0)).contiguous(),
            "order": v[:, 6:10].argsort(dim=1),
            "gray": v[:, 10] < self.gray_prob,
            "blur": v[:, 11] < self._view_probs(self.blur_probs, batch, pair, device),
            "sigma": (_BLUR_SIGMA[0] + (_BLUR_SIGMA[1] - _BLUR_SIGMA[0]) * v[:, 12]).contiguous(),
            "image_size": torch.tensor([height, width]),
            "kind": torch.tensor(0),
            **({"solarize": v[:, 13] < self._view_probs(self.solarize_probs, batch, pair, device)}
               if self.solarize_prob > 0 else {}),
        }

    @staticmethod
    def _view_probs(probs: tuple[float, float], batch: int, pair: bool,
                    device: torch.device) -> float | torch.Tensor:
        """One probability for every row, or per row for a pair of asymmetric views."""
        if probs[0] == probs[1] or not pair:
            return probs[0]
        return torch.tensor(probs, device=device).repeat_interleave(batch // 2)

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """The views described by ``params`` of the uint8 batch ``x`` (B, 3, H, W): normalised float32
        (K*B, 3, size, size) on x's device, where K = (number of parameter sets) / B and view
        ``k*B + b`` comes from image ``b``."""
        _check_images(x, "SimCLRAugment")
        k = _image_size_of(params, x, "SimCLRAugment", "simclr")
        with _no_autocast(x.device):
            return self._apply(x, params, k)

    def _apply(self, x: torch.Tensor, params: Params, k: int) -> torch.Tensor:
        p = {key: t.to(x.device) for key, t in params.items() if key not in ("image_size", "kind")}
        b, _, height, width = x.shape
        wy = resize_weights(p["top"], p["height"], height, self.size) * (1.0 / 255.0)
        wx = resize_weights(p["left"], p["width"], width, self.size)
        wx = torch.where(p["flip"].view(-1, 1, 1), wx.flip(1), wx)
        out = _separable(x.to(torch.float32), wy.view(k, b, *wy.shape[1:]), wx.view(k, b, *wx.shape[1:]))
        gather = use_gather(x.device)
        out = color_jitter(out, p, gather=gather)
        out = _masked(out, p["gray"], lambda y: _gray(y).expand_as(y).contiguous(), gather=gather)
        if self.blur_prob > 0:
            out = _masked(out, p["blur"], lambda y, sg: gaussian_blur(y, sg, self.blur_kernel), p["sigma"],
                          gather=gather)
        if "solarize" in p:  # invert the pixels at or above the middle grey (torchvision's 128 of 255)
            out = _masked(out, p["solarize"], lambda y: torch.where(y >= 0.5, 1.0 - y, y), gather=gather)
        a, c = _affine(self.mean, self.std, 1.0, x.device)
        return out.mul_(a).add_(c)

    def __call__(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        _check_images(x, "SimCLRAugment")
        return self.apply(x, self.sample_params(x.shape[0], x.shape[2], x.shape[3], generator, x.device))

    def two_views(self, x: torch.Tensor,
                  generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independent views of every image, computed together in one pass."""
        _check_images(x, "SimCLRAugment")
        b = x.shape[0]
        views = self.apply(x, self.sample_params(2 * b, x.shape[2], x.shape[3], generator, x.device, pair=True))
        return views[:b], views[b:]


def color_jitter(x: torch.Tensor, params: Params, *, gather: bool) -> torch.Tensor:
    """ColorJitter on the samples with ``params["jitter"]``, each in its own ``params["order"]``."""
    jitter = params["jitter"]
    for pos in range(4):
        for op, (name, fn) in _JITTER_OPS.items():
            x = _masked(x, jitter & (params["order"][:, pos] == op), fn, params[name], gather=gather)
    return x


class SupervisedAugment:
    """The standard CIFAR training augmentation, per sample and batched: random ``size`` crop of the
    image zero-padded by ``padding`` (torchvision ``RandomCrop(size, padding)``), horizontal flip,
    normalisation. Images whose side differs from ``size`` are first resized to it (antialiased
    bilinear, as :func:`normalize` does), so training and evaluation see the same scale."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], *, padding: int = 4,
                 flip_prob: float = 0.5) -> None:
        self.size = _check_size(size)
        self.mean, self.std = _check_stats(mean, std)
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"padding must be a non-negative integer; got {padding!r}")
        self.padding = padding
        self.flip_prob = _check_prob("flip_prob", flip_prob)

    def __repr__(self) -> str:
        return f"SupervisedAugment(size={self.size}, padding={self.padding}, flip_prob={self.flip_prob})"

    def sample_params(self, batch: int, height: int, width: int, generator: Optional[torch.Generator] = None,
                      device: torch.device | str = "cpu") -> Params:
        """``top``, ``left`` (int64 offsets in the padded image, in [0, 2*padding]) and ``flip``."""
        device = torch.device(device)
        u = _uniforms(batch, 3, generator, device)
        span = 2 * self.padding + 1
        return {"top": torch.floor(u[:, 0] * span).to(torch.int64).clamp(max=span - 1),
                "left": torch.floor(u[:, 1] * span).to(torch.int64).clamp(max=span - 1),
                "flip": u[:, 2] < self.flip_prob,
                "image_size": torch.tensor([height, width]), "kind": torch.tensor(1)}

    def _axis(self, offset: torch.Tensor, in_size: int) -> torch.Tensor:
        """(n, size, in_size) maps: resize the axis to ``size`` (identity when equal), pad, crop."""
        dev = offset.device
        if in_size == self.size:
            base = torch.eye(self.size, device=dev)
        else:
            zero = torch.zeros(1, dtype=torch.int64, device=dev)
            base = resize_weights(zero, torch.full_like(zero, in_size), in_size, self.size)[0]
        padded = F.pad(base, (0, 0, self.padding, self.padding))  # zero rows: the zero padding
        rows = offset[:, None] + torch.arange(self.size, device=dev)[None, :]
        return padded[rows]

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """Normalised float32 (K*B, 3, size, size) crops of the uint8 batch ``x`` (view k*B + b from
        image b)."""
        _check_images(x, "SupervisedAugment")
        k = _image_size_of(params, x, "SupervisedAugment", "supervised")
        b, _, height, width = x.shape
        top, left, flip = (params[key].to(x.device) for key in ("top", "left", "flip"))
        wy = self._axis(top, height)
        wx = self._axis(left, width)
        wx = torch.where(flip.view(-1, 1, 1), wx.flip(1), wx)
        with _no_autocast(x.device):
            out = _separable(x.to(torch.float32), wy.view(k, b, *wy.shape[1:]), wx.view(k, b, *wx.shape[1:]))
        a, c = _affine(self.mean, self.std, 1.0 / 255.0, x.device)
        return out.mul_(a).add_(c)

    def __call__(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        _check_images(x, "SupervisedAugment")
        return self.apply(x, self.sample_params(x.shape[0], x.shape[2], x.shape[3], generator, x.device))


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float],
              size: Optional[int] = None) -> torch.Tensor:
    """Evaluation transform: uint8 (B, 3, H, W) -> float32 in [0, 1], resized to ``size`` x ``size``
    (bilinear, antialiased) when that differs from H x W, then ``(x - mean) / std``."""
    _check_images(x, "normalize")
    mean_t, std_t = _check_stats(mean, std)
    out = x.to(torch.float32).div_(255.0)
    if size is not None and tuple(out.shape[-2:]) != (_check_size(size),) * 2:
        with _no_autocast(x.device):
            out = F.interpolate(out, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    a, c = _affine(mean_t, std_t, 1.0, x.device)
    return out.mul_(a).add_(c)
