"""ResNet-18 (He et al. 2016), written out so that building one needs no torchvision import.

Importing torchvision costs about 2.5 s of CPU in every fresh process (each notebook kernel, each
torchrun rank), more than a smoke-sized run trains. This module builds the same network
torchvision's ``resnet18(weights=None)`` builds: the same modules in the same order, so its state
dict has torchvision's keys in its order (ImageNet weights load as they are) and, from one torch
seed, the same initial weights bit for bit, since the He initialisation walks the modules in that
order (``tests/training/test_models.py`` checks both against torchvision).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

__all__ = ["BasicBlock", "ResNet18", "IMAGENET1K_V1_URL", "IMAGENET_MEAN", "IMAGENET_STD"]

# torchvision's ResNet18_Weights.IMAGENET1K_V1: where the file is and how its inputs were normalised
IMAGENET1K_V1_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual connection (projected when the shape
    changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def _stage(cin: int, cout: int, stride: int) -> nn.Sequential:
    """Two blocks, the first with a 1x1 projection where the shape changes."""
    downsample = None
    if stride != 1 or cin != cout:
        downsample = nn.Sequential(nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False),
                                   nn.BatchNorm2d(cout))
    first = BasicBlock(cin, cout, stride, downsample)
    return nn.Sequential(first, BasicBlock(cout, cout))


class ResNet18(nn.Module):
    """ResNet-18 for ImageNet-sized inputs: a 7x7 stride-2 stem and max-pool, four stages of two
    blocks (64, 128, 256, 512 channels), global average pooling and a ``num_classes`` classifier.
    Convolutions are He-initialised (fan-out), batch norms start at weight 1 and bias 0.

    ``width`` scales every stage (``width``, 2x, 4x, 8x channels): 64 is ResNet-18; smaller ones
    are for checking plumbing cheaply (16 costs about a tenth of 64's step on a CPU)."""

    def __init__(self, num_classes: int = 1000, width: int = 64):
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(3, w, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _stage(w, w, 1)
        self.layer2 = _stage(w, 2 * w, 2)
        self.layer3 = _stage(2 * w, 4 * w, 2)
        self.layer4 = _stage(4 * w, 8 * w, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc: nn.Module = nn.Linear(8 * w, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
