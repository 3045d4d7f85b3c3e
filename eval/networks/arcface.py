"""ArcFace identity embedding: insightface's IResNet (arcface_torch `backbone.pth` files).

Key names are those of deepinsight/insightface recognition/arcface_torch/backbones/iresnet.py:
`conv1.weight`, `bn1.*`, `prelu.weight`, `layer{1..4}.{i}.{bn1,conv1,bn2,prelu,conv2,bn3}.*`,
`layer{k}.0.downsample.{0,1}.*`, `bn2.*`, `fc.weight` (512, 512*7*7), `features.*` (BatchNorm1d).
iresnet100 = blocks (3, 13, 30, 3), iresnet50 = (3, 4, 14, 3).

Input: (N, 3, 112, 112) RGB aligned face crops scaled to [-1, 1] ((x / 255 - 0.5) / 0.5), as in
arcface_torch's inference.py. Output: 512-d embedding (compare by cosine similarity).
"""
from __future__ import annotations

import torch
from torch import nn

ARCH_BLOCKS = {"iresnet50": (3, 4, 14, 3), "iresnet100": (3, 13, 30, 3)}
INPUT_SIZE = 112


def _conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = _conv3x3(cin, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (self.downsample(x) if self.downsample is not None else x)


class IResNet(nn.Module):
    def __init__(self, arch: str = "iresnet100", embedding_dim: int = 512):
        super().__init__()
        if arch not in ARCH_BLOCKS:
            raise ValueError(f"unknown arch {arch!r}; one of {sorted(ARCH_BLOCKS)}")
        self.arch = arch
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        cin = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), ARCH_BLOCKS[arch]), start=1):
            # Every stage halves the resolution (stride 2 in its first block), so cin != planes or
            # stride != 1 always holds for the first block: it always has a downsample.
            down = nn.Sequential(nn.Conv2d(cin, planes, kernel_size=1, stride=2, bias=False),
                                 nn.BatchNorm2d(planes, eps=1e-5))
            blocks = [IBasicBlock(cin, planes, 2, down)] + [IBasicBlock(planes, planes) for _ in range(n - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            cin = planes
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(p=0.0)
        self.fc = nn.Linear(512 * 7 * 7, embedding_dim)
        self.features = nn.BatchNorm1d(embedding_dim, eps=1e-5)
        self.eval()

    @staticmethod
    def preprocess(faces_uint8: torch.Tensor) -> torch.Tensor:
        """(N, 112, 112, 3) uint8 RGB -> (N, 3, 112, 112) in [-1, 1]."""
        return (faces_uint8.permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))
