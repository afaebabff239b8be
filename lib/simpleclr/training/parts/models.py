"""ResNet-18 encoders (CIFAR or ImageNet stem), the SimCLR projection head, and weight loading.

Every encoder leaves here with ``fc = Identity`` and ``feature_dim`` set (512 for ResNet-18, 8x the
width of a narrower one), so SimCLR, supervised training and the linear probe all read the same
pooled features. Loading is strict: an encoder
either receives every one of its weights or the load fails with the missing / unexpected keys, so a
probe can never silently run on a half-random network.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import torch
from torch import nn

from ...config import RESNET18_WIDTH, STEMS
from ...errors import SimpleCLRError
from .resnet import IMAGENET1K_V1_URL, IMAGENET_MEAN, IMAGENET_STD, ResNet18

FEATURE_DIM = 512
WIDTH = RESNET18_WIDTH
# Wrappers whose state-dict keys carry a prefix: torch.compile (``_orig_mod.``) and DDP (``module.``).
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")
DOWNLOAD_TIMEOUT_S = 15.0


class WeightsError(SimpleCLRError, RuntimeError):
    """Weights that cannot be found or loaded; the message is one line saying what to do."""


# ---- architectures ----------------------------------------------------------------------
def resnet18_encoder(stem: str = "cifar", width: int = WIDTH) -> nn.Module:
    """ResNet-18 (torchvision's, :mod:`.resnet`) without its classifier (512-d output at width 64).

    ``stem="cifar"`` swaps the 7x7 stride-2 conv and max-pool for one 3x3 stride-1 conv, which keeps
    32 px inputs at 32x32 through the first stage (the SimCLR paper's CIFAR variant); ``"imagenet"``
    keeps the original stem. Weights are drawn from the caller's torch RNG.
    """
    if stem not in STEMS:
        raise ValueError(f"stem={stem!r} is not known: use one of {STEMS}")
    net = ResNet18(width=width)
    if stem == "cifar":
        net.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
    return _strip_classifier(net)


class ProjectionHead(nn.Module):
    """SimCLR's MLP g(h): Linear-(BN)-ReLU-Linear. The first Linear has no bias when BN follows."""

    def __init__(self, in_dim: int = FEATURE_DIM, hidden_dim: int = 2048, out_dim: int = 128,
                 batch_norm: bool = True):
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers += [nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)]
        self.net = nn.Sequential(*layers)
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class SimCLRNet(nn.Module):
    """Encoder f followed by projection head g; ``forward(x) -> z`` (the loss's input)."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class Classifier(nn.Module):
    """Encoder followed by one Linear layer; ``forward(x) -> logits``.

    ``freeze_encoder``: the encoder gets no gradients and stays in eval() even while the
    classifier trains, so its batch-norm statistics do not move either (a linear probe trained by
    SGD, as MoCo's protocol does).
    """

    def __init__(self, encoder: nn.Module, num_classes: int, freeze_encoder: bool = False):
        super().__init__()
        self.encoder = encoder
        self.fc = nn.Linear(getattr(encoder, "feature_dim", FEATURE_DIM), num_classes)
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def train(self, mode: bool = True) -> "Classifier":
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.encoder(x))


# ---- ImageNet weights -------------------------------------------------------------------
def imagenet_weights_file() -> Path:
    """Where torchvision's cache keeps the ImageNet ResNet-18 file (honours ``TORCH_HOME``)."""
    url = IMAGENET1K_V1_URL
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def official_hash_prefix() -> str:
    """The sha256 prefix torchvision puts in the official weights file name (<name>-<prefix>.pth)."""
    return IMAGENET1K_V1_URL.rsplit("-", 1)[-1].split(".")[0]


def _imagenet_source(path: Path) -> tuple[str, str]:
    """("imagenet", sha) for torchvision's own file, ("standin", sha) for anything else."""
    digest = _sha256(path)
    return ("imagenet" if digest.startswith(official_hash_prefix()) else "standin"), digest


def _first_line(e: object) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _strip_classifier(net: nn.Module) -> nn.Module:
    net.feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net


def width_of(state: dict[str, Any]) -> Optional[int]:
    """An encoder state's base width: the channels of its first convolution."""
    w = state.get("conv1.weight")
    return int(w.shape[0]) if isinstance(w, torch.Tensor) and w.ndim == 4 else None


def imagenet_encoder(progress: bool = False, *, path: Optional[Union[str, os.PathLike]] = None,
                     timeout_s: float = DOWNLOAD_TIMEOUT_S) -> nn.Module:
    """ResNet-18 with torchvision's ImageNet-1k weights (``IMAGENET1K_V1``), classifier removed.

    The file is read from (or downloaded once, hash-checked, into) torchvision's cache,
    ``torch.hub.get_dir()/checkpoints``, and loaded with ``weights_only=True`` (torchvision's own
    loader would trust a cached file fully). ``path`` loads a file in torchvision's format from
    elsewhere instead (e.g. a stand-in from :func:`write_standin_imagenet_weights`). Offline with no
    cached file, raises :class:`WeightsError` naming the file, the folder and the URL.
    """
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise WeightsError(f"ImageNet weights file {path} does not exist: give the path of a "
                               "ResNet-18 state dict in torchvision's format")
        return _imagenet_from_file(path, "give a ResNet-18 state dict in torchvision's format (with fc.*)")
    target = imagenet_weights_file()
    advice = (f"download {IMAGENET1K_V1_URL} and put it in {target.parent} as {target.name} "
              "(or point TORCH_HOME at a folder whose hub/checkpoints holds it)")
    if not target.is_file():
        _download_imagenet(IMAGENET1K_V1_URL, target, progress, timeout_s, advice)
    return _imagenet_from_file(target, f"delete it and {advice}")


def _imagenet_from_file(path: Path, advice: str) -> nn.Module:
    net = ResNet18()
    _load_strict(net, _torch_load(path, advice), f"ImageNet weights {path}", advice)
    return _strip_classifier(net)


def _download_imagenet(url: str, target: Path, progress: bool, timeout_s: float, advice: str) -> None:
    """torch.hub's download into the cache: a temporary file, renamed only when its sha256 matches
    the prefix in torchvision's file name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _socket_timeout(timeout_s):
            torch.hub.download_url_to_file(url, str(target), hash_prefix=official_hash_prefix(),
                                           progress=progress)
    except (OSError, TimeoutError) as e:  # URLError, DNS failure, refused, timed out
        raise WeightsError(f"ImageNet weights {target.name} are not in {target.parent} and could not "
                           f"be downloaded ({_first_line(getattr(e, 'reason', e))}): {advice}") from None
    except RuntimeError as e:  # torch.hub's hash check on the downloaded bytes
        raise WeightsError(f"ImageNet weights downloaded from {url} failed their hash check "
                           f"({_first_line(e)}): {advice}") from None


def write_standin_imagenet_weights(path: Union[str, os.PathLike], seed: int = 0) -> Path:
    """Write a randomly initialised ResNet-18 state dict in torchvision's exact key format.

    For running the ImageNet branch of a plan on a machine without the real file: loaded through
    ``load_encoder("imagenet:<path>")`` (or placed in the cache), it is reported as source
    ``"standin"`` because its hash is not torchvision's.
    """
    from ...runs.rundir import atomic_torch_save

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = ResNet18().state_dict()
    atomic_torch_save(state, path)
    return Path(path)


# ---- portable encoder state -------------------------------------------------------------
def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside torch.compile (``_orig_mod``) and DDP (``module``) wrappers."""
    while True:
        if hasattr(module, "_orig_mod") and isinstance(module._orig_mod, nn.Module):
            module = module._orig_mod
        elif type(module).__name__ in ("DistributedDataParallel", "DataParallel"):
            module = module.module
        else:
            return module


def strip_wrapper_prefixes(state: dict[str, Any]) -> dict[str, Any]:
    """Remove torch.compile / DDP key prefixes (in any nesting) from a state dict."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def _stem_of(state: dict[str, Any]) -> Optional[str]:
    w = state.get("conv1.weight")
    if not isinstance(w, torch.Tensor) or w.ndim != 4:
        return None
    return {3: "cifar", 7: "imagenet"}.get(int(w.shape[-1]))


def encoder_state(encoder: nn.Module, meta: dict) -> dict:
    """``{"encoder": state_dict, "meta": {...}}``: what checkpoints store and :func:`load_encoder` reads.

    The state dict is a CPU copy without wrapper prefixes, so a checkpoint written from a compiled or
    DDP model loads into a plain one. ``meta`` must name the ``stem``; ``mean``, ``std`` (the
    normalisation the encoder was trained with), ``image_size`` and ``source`` default to None.
    """
    meta = dict(meta)
    if meta.get("stem") not in STEMS:
        raise ValueError(f"encoder_state needs meta['stem'] in {STEMS}, got {meta.get('stem')!r}")
    for key in ("mean", "std"):
        if meta.get(key) is not None:
            meta[key] = [float(v) for v in meta[key]]
    for key in ("mean", "std", "image_size", "source"):
        meta.setdefault(key, None)
    state = strip_wrapper_prefixes(unwrap(encoder).state_dict())
    return {"encoder": {k: v.detach().to("cpu", copy=True) for k, v in state.items()}, "meta": meta}


def source_name(meta: dict) -> str:
    """A short label for where an encoder came from: "random", "imagenet", "standin", or the stage
    of the run that trained it ("pretrain", "supervised", "finetune"; trainers store a dict)."""
    source = meta.get("source")
    if isinstance(source, dict):
        return str(source.get("stage") or "checkpoint")
    return str(source or "checkpoint")


def uses_standin(meta: dict) -> bool:
    """True when a stand-in (not torchvision's real ImageNet file) is anywhere in the encoder's past."""
    source = meta.get("source")
    if isinstance(source, dict):
        return any(v == "standin" or (isinstance(v, dict) and uses_standin({"source": v}))
                   for v in source.values())
    return source == "standin"


def load_projection_head(spec: str) -> ProjectionHead:
    """The projection head g saved beside a SimCLR run's encoder (its ``"head"`` state), sized from
    the saved weights; the probe of g(h) reads it (SimCLR's Fig. 8 compares it with h)."""
    path = _checkpoint_path(spec.strip())
    obj = _torch_load(path)
    state = obj.get("head") if isinstance(obj, dict) else None
    if not isinstance(state, dict) or "net.0.weight" not in state:
        raise WeightsError(f"{path} holds no projection head (a SimCLR pretraining run's 'head'): "
                           "set probe_layer to encoder, or name a pretraining run")
    batch_norm = "net.1.running_mean" in state
    last = state.get(f"net.{3 if batch_norm else 2}.weight")
    if not isinstance(last, torch.Tensor) or last.dim() != 2:
        raise WeightsError(f"{path}'s projection head has no final Linear layer: it is damaged")
    hidden, in_dim = state["net.0.weight"].shape
    head = ProjectionHead(in_dim, hidden, last.shape[0], batch_norm)
    _load_strict(head, state, f"{path}'s projection head", hint="it is damaged: pretrain again")
    return head


def _torch_load(path: Path, advice: str = "give a checkpoint of tensors written by torch.save "
                "(e.g. a run folder's checkpoints/final.pt)") -> Any:
    """The file's tensors, loaded with ``weights_only=True`` and nothing else: a checkpoint someone
    hands over must never run code, so a refused file is an error, never a second, trusting try."""
    from ...runs.rundir import TorchFileError, load_torch_file

    try:
        return load_torch_file(path)
    except TorchFileError as e:
        raise WeightsError(f"{e}: {advice}") from None


def _short(keys: Sequence[str], limit: int = 8) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _load_strict(net: nn.Module, state: dict[str, Any], what: str,
                 hint: str = "save it with simpleclr.training.parts.models.encoder_state") -> None:
    """Load every weight of ``net`` from ``state`` or raise one line listing the gaps."""
    state = strip_wrapper_prefixes(state)
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        lines = [s.strip() for s in str(e).splitlines() if "size mismatch" in s]
        raise WeightsError(f"{what} does not fit a ResNet-18 encoder "
                           f"({'; '.join(lines[:3]) or _first_line(e)}): {hint}") from None
    if result.missing_keys or result.unexpected_keys:
        parts = []
        if result.missing_keys:
            parts.append(f"missing {len(result.missing_keys)}: {_short(result.missing_keys)}")
        if result.unexpected_keys:
            parts.append(f"unexpected {len(result.unexpected_keys)}: {_short(result.unexpected_keys)}")
        raise WeightsError(f"{what} does not match a ResNet-18 encoder ({'; '.join(parts)}): {hint}")


def _checkpoint_path(spec: str) -> Path:
    path = Path(spec).expanduser()
    if path.is_dir():
        final = path / "checkpoints" / "final.pt"
        if not final.is_file():
            raise WeightsError(f"run folder {path} has no checkpoints/final.pt: finish its training "
                               "first, or name a checkpoint file")
        return final
    if path.is_file():
        return path
    raise WeightsError(f"encoder {spec!r} is neither 'random', 'imagenet', 'imagenet:<file>', a run "
                       "folder nor a checkpoint file: check the path")


def load_encoder(spec: str, stem: str = "cifar", width: int = WIDTH) -> tuple[nn.Module, dict]:
    """An encoder and its meta ``{stem, mean, std, image_size, source, ...}`` from ``spec``.

    ``spec``: ``"random"`` (drawn from the caller's torch seed, with ``stem``; mean/std None so the
    caller uses its dataset's), ``"imagenet"`` (torchvision's weights and cache),
    ``"imagenet:<file>"`` (a file in torchvision's format, e.g. a stand-in), a run folder (its
    ``checkpoints/final.pt``) or a checkpoint path. Checkpoints hold ``{"encoder", "meta", ...}``
    (other keys such as a head are ignored) or a bare ResNet-18 state dict (its ``fc.*`` dropped).
    ``stem`` is used only for ``"random"``; checkpoints carry their own. ``width`` builds a random
    encoder, and any other must have it (a config naming one width cannot run on another).
    """
    spec = spec.strip()
    if spec == "random":
        if stem not in STEMS:
            raise WeightsError(f"stem={stem!r} is not known: use one of {STEMS}")
        return resnet18_encoder(stem, width), {"stem": stem, "mean": None, "std": None, "image_size": None,
                                               "source": "random"}
    if spec == "imagenet" or spec.startswith("imagenet:"):
        if width != WIDTH:
            raise WeightsError(f"the ImageNet weights are a ResNet-18 of width {WIDTH}, but the config "
                               f"asks for width {width}: set width to {WIDTH} for this run")
        path = Path(spec.split(":", 1)[1]).expanduser() if ":" in spec else None
        net = imagenet_encoder(path=path)
        file = path if path is not None else imagenet_weights_file()
        source, digest = _imagenet_source(file)
        return net, {"stem": "imagenet", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                     "image_size": None, "source": source, "weights": "IMAGENET1K_V1",
                     "file": str(file), "sha256": digest}

    path = _checkpoint_path(spec)
    obj = _torch_load(path)
    if isinstance(obj, dict) and isinstance(obj.get("encoder"), dict):
        state, meta = obj["encoder"], dict(obj.get("meta") or {})
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = {k: v for k, v in strip_wrapper_prefixes(obj).items() if not k.startswith("fc.")}
        meta = {}
    else:
        raise WeightsError(f"{path} holds no encoder weights (expected a dict with an 'encoder' "
                           "state dict): save checkpoints with simpleclr.training.parts.models.encoder_state")
    state = strip_wrapper_prefixes(state)
    ckpt_stem = meta.get("stem") or _stem_of(state)
    if ckpt_stem not in STEMS:
        raise WeightsError(f"{path} does not say which stem its encoder has (meta['stem']) and its "
                           f"conv1 does not tell: save it with simpleclr.training.parts.models.encoder_state")
    ckpt_width = width_of(state) or WIDTH
    if ckpt_width != width:
        raise WeightsError(f"{path} holds an encoder of width {ckpt_width}, but the config asks for "
                           f"width {width}: set width to {ckpt_width} for this run")
    net = resnet18_encoder(ckpt_stem, ckpt_width)
    _load_strict(net, state, str(path))
    for key in ("mean", "std", "image_size"):
        meta.setdefault(key, None)
    meta["stem"] = ckpt_stem
    meta["source"] = meta.get("source") or "checkpoint"
    meta["checkpoint"] = str(path)
    return net, meta
