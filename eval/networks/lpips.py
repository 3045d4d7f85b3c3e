"""LPIPS v0.1 with the AlexNet backbone (Zhang et al. 2018), `lpips.LPIPS(net="alex")`.

Two official files, loaded without renaming:
- torchvision's `alexnet-owt-7be5be79.pth`: keys `features.{0,3,6,8,10}.{weight,bias}` (we keep
  torchvision's `features` Sequential so the indices are the same; `classifier.*` is ignored);
- lpips' `weights/v0.1/alex.pth`: keys `lin{0..4}.model.1.weight` of shape (1, C, 1, 1)
  (lpips' NetLinLayer is Sequential(Dropout, Conv2d 1x1 without bias)).

Forward (lpips.LPIPS.forward, spatial=False): images in [-1, 1] -> ScalingLayer
((x - shift) / scale) -> relu1..relu5 of AlexNet -> unit-normalise each feature vector over
channels -> squared difference -> 1x1 linear head -> spatial mean -> sum over the five layers.
"""
from __future__ import annotations

import torch
from torch import nn

# lpips.pretrained_networks / lpips.LPIPS ScalingLayer constants.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
CHANNELS = (64, 192, 384, 256, 256)
# End (exclusive) of each of the five slices of torchvision's alexnet.features (after relu1..relu5).
SLICE_ENDS = (2, 5, 8, 10, 12)


def alexnet_features() -> nn.Sequential:
    """torchvision.models.alexnet().features, rebuilt so we need no torchvision."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )


class NetLinLayer(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, stride=1, padding=0, bias=False))

    def forward(self, x):
        return self.model(x)


class LinearHeads(nn.Module):
    """The lpips `alex.pth` part: lin0..lin4."""

    def __init__(self):
        super().__init__()
        for i, c in enumerate(CHANNELS):
            setattr(self, f"lin{i}", NetLinLayer(c))


class LPIPSAlex(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = alexnet_features()
        self.heads = LinearHeads()
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def load_official(self, alexnet_state: dict, lin_state: dict) -> None:
        """Load torchvision's AlexNet state dict (features.* only) and lpips' alex.pth, strictly."""
        feats = {k[len("features."):]: v for k, v in alexnet_state.items() if k.startswith("features.")}
        self.features.load_state_dict(feats, strict=True)
        self.heads.load_state_dict(lin_state, strict=True)

    def _activations(self, x):
        out, start = [], 0
        for end in SLICE_ENDS:
            x = self.features[start:end](x)
            out.append(x)
            start = end
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a, b: (N, 3, H, W) in [-1, 1] -> (N,) distances."""
        fa = self._activations((a - self.shift) / self.scale)
        fb = self._activations((b - self.shift) / self.scale)
        total = 0.0
        for i, (x, y) in enumerate(zip(fa, fb)):
            x = x / (torch.sqrt((x ** 2).sum(1, keepdim=True)) + 1e-10)
            y = y / (torch.sqrt((y ** 2).sum(1, keepdim=True)) + 1e-10)
            total = total + getattr(self.heads, f"lin{i}")((x - y) ** 2).mean((2, 3), keepdim=True)
        return total.view(-1)
