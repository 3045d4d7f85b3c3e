"""I3D (Inception-v1 inflated to 3D, Carreira & Zisserman 2017), Kinetics-400, for FVD.

Key names follow piergiaj/pytorch-i3d `pytorch_i3d.py` (`InceptionI3d`): `Conv3d_1a_7x7.conv3d.weight`,
`Conv3d_1a_7x7.bn.{weight,bias,running_mean,running_var}`, `Mixed_3b.b0.conv3d.weight`,
`Mixed_3b.b1a/b1b/b2a/b2b/b3b.*`, `logits.conv3d.{weight,bias}` (400, 1024, 1, 1, 1).
TF "SAME" padding is computed from the input size at run time, BatchNorm eps=1e-3.

Which weights: FVD (Unterthiner et al. 2019) uses the TF-Hub `i3d-kinetics-400` module, whose
weights differ from DeepMind's originally released checkpoint (StyleGAN-V notes this). StyleGAN-V
ships a faithful TorchScript port, `i3d_torchscript.pt`, and feeds it uint8 videos
(B, 3, T, H, W) with `rescale=True, resize=True, return_features=True`: frames resized to
224 x 224, values mapped to [-1, 1], and the 400 pre-softmax logits averaged over time returned.
We reproduce that in `fvd_features`. `convert_torchscript_file` writes the TorchScript module's
parameters into this module's key names and refuses unless both give the same logits.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

FVD_SIZE = 224
# (in_channels, [b0, b1a, b1b, b2a, b2b, b3b]) per Inception block, from the I3D paper / pytorch-i3d.
MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


def same_pad(x: torch.Tensor, kernel, stride) -> torch.Tensor:
    """TensorFlow 'SAME' padding for a (B, C, T, H, W) input (extra pixel at the end)."""
    pads = []
    for size, k, s in zip(x.shape[2:], kernel, stride):
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pads.append((total // 2, total - total // 2))
    return F.pad(x, [p for pair in reversed(pads) for p in pair])


class Unit3D(nn.Module):
    def __init__(self, cin, cout, kernel=(1, 1, 1), stride=(1, 1, 1), bn=True, relu=True, bias=False):
        super().__init__()
        self.kernel, self.stride, self.relu = tuple(kernel), tuple(stride), relu
        self.conv3d = nn.Conv3d(cin, cout, kernel_size=self.kernel, stride=self.stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(cout, eps=0.001, momentum=0.01) if bn else None

    def forward(self, x):
        x = self.conv3d(same_pad(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class MaxPoolSame(nn.Module):
    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x):
        return F.max_pool3d(same_pad(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionModule(nn.Module):
    def __init__(self, cin: int, c):
        super().__init__()
        self.b0 = Unit3D(cin, c[0])
        self.b1a = Unit3D(cin, c[1])
        self.b1b = Unit3D(c[1], c[2], kernel=(3, 3, 3))
        self.b2a = Unit3D(cin, c[3])
        self.b2b = Unit3D(c[3], c[4], kernel=(3, 3, 3))
        self.b3a = MaxPoolSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(cin, c[5])

    def forward(self, x):
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


class InceptionI3d(nn.Module):
    """(B, 3, T, 224, 224) in [-1, 1] -> (B, 400, T') logits (before time averaging)."""

    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, kernel=(7, 7, 7), stride=(2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, kernel=(3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionModule(*MIXED["Mixed_3b"])
        self.Mixed_3c = InceptionModule(*MIXED["Mixed_3c"])
        self.MaxPool3d_4a_3x3 = MaxPoolSame((3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            setattr(self, name, InceptionModule(*MIXED[name]))
        self.MaxPool3d_5a_2x2 = MaxPoolSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionModule(*MIXED["Mixed_5b"])
        self.Mixed_5c = InceptionModule(*MIXED["Mixed_5c"])
        self.logits = Unit3D(1024, num_classes, bn=False, relu=False, bias=True)
        self.eval()

    ORDER = ("Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
             "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
             "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.ORDER:
            x = getattr(self, name)(x)
        # Final pool: (2, 7, 7) window, stride 1, VALID (as in the I3D graph).
        x = F.avg_pool3d(x, kernel_size=(2, 7, 7), stride=1)
        return self.logits(x).flatten(2)   # (B, 400, T')

    def fvd_features(self, videos_uint8: torch.Tensor) -> torch.Tensor:
        """StyleGAN-V's detector call (rescale=True, resize=True, return_features=True):
        uint8 (B, 3, T, H, W) -> (B, 400) time-averaged pre-softmax logits."""
        if videos_uint8.dtype != torch.uint8 or videos_uint8.ndim != 5:
            raise ValueError(f"expected uint8 (B, 3, T, H, W), got {tuple(videos_uint8.shape)} {videos_uint8.dtype}")
        b, c, t, h, w = videos_uint8.shape
        x = videos_uint8.float() / 127.5 - 1.0                      # rescale to [-1, 1]
        if (h, w) != (FVD_SIZE, FVD_SIZE):                          # resize each frame
            frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
            frames = F.interpolate(frames, size=(FVD_SIZE, FVD_SIZE), mode="bilinear", align_corners=False)
            x = frames.reshape(b, t, c, FVD_SIZE, FVD_SIZE).permute(0, 2, 1, 3, 4)
        return self.forward(x).mean(2)


def convert_torchscript_file(src: str | Path, dst: str | Path, atol: float = 1e-3) -> Path:
    """Turn StyleGAN-V's `i3d_torchscript.pt` into a safetensors state dict for InceptionI3d.

    This is the one place a TorchScript archive is opened (torch.jit.load runs TorchScript, not
    arbitrary pickles, but it is still code from the file): run it once, on the file fetched from
    the registry URL, on request (`python -m eval weights convert`). The parameter names inside
    the archive must map onto ours one-to-one by name (after stripping a common prefix); if they
    do not, or if the two modules disagree on a random video, nothing is written.
    """
    from emo.weights import save_state_dict_atomic   # emo, not eval.weights: eval.weights imports this module

    scripted = torch.jit.load(str(src), map_location="cpu").eval()
    theirs = scripted.state_dict()
    ours = InceptionI3d()
    want = ours.state_dict()
    mapped = {}
    for key, value in theirs.items():
        match = next((k for k in want if key == k or key.endswith("." + k)), None)
        if match is not None and want[match].shape == value.shape:
            mapped[match] = value
    missing = sorted(set(want) - set(mapped))
    if missing:
        raise ValueError(f"{src}: cannot map {len(missing)} of our keys (e.g. {missing[:5]}) onto the "
                         f"TorchScript parameters (e.g. {list(theirs)[:5]}); not converted")
    ours.load_state_dict(mapped, strict=True)
    # Three checks, so a failure says which part differs: the network alone (a [-1, 1] float video
    # at 224 x 224, no preprocessing), then the uint8 preprocessing when it upsamples (64 x 64) and
    # when it downsamples (512 x 512: an antialiased resize would pass the first and fail here).
    gen = torch.Generator().manual_seed(0)
    video = torch.rand((1, 3, 16, FVD_SIZE, FVD_SIZE), generator=gen) * 2 - 1
    small = torch.randint(0, 256, (1, 3, 16, 64, 64), dtype=torch.uint8, generator=gen)
    large = torch.randint(0, 256, (1, 3, 16, 512, 512), dtype=torch.uint8, generator=gen)
    with torch.no_grad():
        checks = [("network", scripted(video, rescale=False, resize=False, return_features=True), ours(video).mean(2)),
                  ("uint8 rescale/resize preprocessing",
                   scripted(small, rescale=True, resize=True, return_features=True), ours.fvd_features(small)),
                  ("uint8 downsampling preprocessing (512 x 512)",
                   scripted(large, rescale=True, resize=True, return_features=True), ours.fvd_features(large))]
    for what, ref, got in checks:
        err = float((ref.float() - got).abs().max())
        if not math.isfinite(err) or err > atol:
            raise ValueError(f"{src}: converted I3D differs from the TorchScript module by {err:.3g} "
                             f"(> {atol}) in the {what}; not converted")
    return save_state_dict_atomic(ours.state_dict(), dst)
