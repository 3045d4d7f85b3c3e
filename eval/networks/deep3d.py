"""Deep3DFaceRecon's coefficient regressor (Deng et al. 2019, sicxu/Deep3DFaceRecon_pytorch) and its
input alignment, for E-FID as EMO defines it (Frechet distance of the 64 expression coefficients).

The network: `models/networks.py` ReconNetWrapper('resnet50', use_last_fc=False): a ResNet-50
(torchvision's layout and key names: `conv1`, `bn1`, `layer1.0.conv1` ... `layer4.2.bn3`,
`downsample.0/1`; no `fc`) under `backbone.`, then seven 1 x 1 convolutions with bias under
`final_layers.{0..6}` giving 80 identity, 64 expression, 80 texture, 3 angle, 27 lighting and
2 + 1 translation coefficients (257). `epoch_20.pth` holds that state dict under its "net_recon"
entry. Input: (B, 3, 224, 224) RGB in [0, 1]. torchvision itself is not a dependency (its wheel
does not match this torch), so the ResNet-50 is written here with its key names.

The alignment: `util/preprocess.py` align_img with the five standard 3D landmarks of
`BFM/similarity_Lm3D_all.mat` (load_lm3d: nose tip, eye centres from two corners each, mouth
corners; ordered left eye, right eye, nose, left mouth corner, right mouth corner):
1. five image landmarks (x, y up: y' = H - 1 - y);
2. POS: least squares of the 2 x 4 affine map [sR | t] taking the 3D points to the image points;
   scale s = mean norm of the two rows of sR, translation t;
3. the frame is resized by 102 / s (bicubic) and the 224 x 224 window placed so the face centre
   lands at its centre: left = w/2 - 112 + (t_x - W/2) * 102/s, up = h/2 - 112 + (H/2 - t_y) * 102/s.
Here the image landmarks come from MediaPipe (eye corners 33/133 and 362/263, nose tip 1, mouth
corners 61/291) rather than from Deep3DFaceRecon's 68-point detector.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

COEFF_SPLITS = {"id": 80, "exp": 64, "tex": 80, "angle": 3, "gamma": 27, "trans_xy": 2, "trans_z": 1}
INPUT_SIZE = 224
RESCALE_FACTOR = 102.0
# Deep3DFaceRecon's five points from the 68-point scheme (1-based 31, 37/40, 43/46, 49, 55), reordered.
LM68_FIVE = ((36, 39), (42, 45), (30,), (48,), (54,))
# The same five points in MediaPipe's 478-point mesh (image left eye = the subject's right eye).
MEDIAPIPE_FIVE = ((33, 133), (362, 263), (1,), (61,), (291,))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet50(nn.Module):
    """torchvision's ResNet-50 layout without the classifier: (B, 3, H, W) -> (B, 2048, 1, 1)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin, layers = 64, []
        for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            down = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4))
            blocks_ = [Bottleneck(cin, planes, stride, down)]
            cin = planes * 4
            blocks_ += [Bottleneck(cin, planes) for _ in range(blocks - 1)]
            layers.append(nn.Sequential(*blocks_))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x)


class ReconNet(nn.Module):
    """(B, 3, 224, 224) RGB in [0, 1] -> (B, 257) coefficients (COEFF_SPLITS order)."""

    def __init__(self):
        super().__init__()
        self.backbone = ResNet50()
        self.final_layers = nn.ModuleList([nn.Conv2d(2048, n, 1, bias=True) for n in COEFF_SPLITS.values()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.backbone(x)
        return torch.cat([layer(feat) for layer in self.final_layers], 1).flatten(1)

    def expression(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 64) expression coefficients."""
        return self.final_layers[1](self.backbone(x)).flatten(1)


def unwrap_checkpoint(state: dict) -> dict:
    """epoch_20.pth stores {"net_recon": state dict, "optimizer": ..., "epoch": ...}."""
    return state["net_recon"] if isinstance(state, dict) and isinstance(state.get("net_recon"), dict) else state


# --- alignment ------------------------------------------------------------------------------------

def _five(points: np.ndarray, scheme) -> np.ndarray:
    pts = np.asarray(points, np.float64)
    return np.stack([pts[list(idx)].mean(0) for idx in scheme])


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """(478, >=2) MediaPipe landmarks -> (5, 2) left eye, right eye, nose, left mouth, right mouth (pixels)."""
    return _five(np.asarray(landmarks)[:, :2], MEDIAPIPE_FIVE)


def standard_five_3d(lm68_3d: np.ndarray) -> np.ndarray:
    """The 68 standard 3D landmarks of similarity_Lm3D_all.mat -> the (5, 3) Deep3DFaceRecon uses."""
    return _five(lm68_3d, LM68_FIVE)


def pos_fit(points_2d: np.ndarray, points_3d: np.ndarray) -> tuple[np.ndarray, float]:
    """POS: least squares of xy = [sR | t] (X, 1) over the points; returns (t (2,), s)."""
    x2, x3 = np.asarray(points_2d, np.float64), np.asarray(points_3d, np.float64)
    n = len(x2)
    a = np.zeros((2 * n, 8))
    a[0::2, :3], a[0::2, 3] = x3, 1.0
    a[1::2, 4:7], a[1::2, 7] = x3, 1.0
    k = np.linalg.lstsq(a, x2.reshape(-1), rcond=None)[0]
    s = (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2
    return np.array([k[3], k[7]]), float(s)


def align_transform(five_px: np.ndarray, height: int, lm3d_five: np.ndarray) -> tuple[float, float, float]:
    """(scale, left, up): resize the frame by `scale`, then crop [left, left + 224) x [up, up + 224)."""
    pts = np.asarray(five_px, np.float64).copy()
    pts[:, 1] = height - 1 - pts[:, 1]                     # y up, as Deep3DFaceRecon's landmarks
    t, s = pos_fit(pts, lm3d_five)
    return RESCALE_FACTOR / s, float(t[0]), float(t[1])


def align_face(frame: np.ndarray, five_px: np.ndarray, lm3d_five: np.ndarray) -> np.ndarray:
    """RGB uint8 frame + five landmarks (pixels) -> (224, 224, 3) uint8 input of the regressor."""
    from PIL import Image
    h0, w0 = frame.shape[:2]
    scale, tx, ty = align_transform(five_px, h0, lm3d_five)
    w, h = int(w0 * scale), int(h0 * scale)
    left = int(w / 2 - INPUT_SIZE / 2 + (tx - w0 / 2) * scale)
    up = int(h / 2 - INPUT_SIZE / 2 + (h0 / 2 - ty) * scale)
    img = Image.fromarray(frame).resize((w, h), resample=Image.BICUBIC)
    return np.asarray(img.crop((left, up, left + INPUT_SIZE, up + INPUT_SIZE)))


def load_lm3d_five(path) -> np.ndarray:
    """The five standard 3D landmarks from similarity_Lm3D_all.mat (variable 'lm', 68 x 3)."""
    from scipy.io import loadmat
    return standard_five_3d(loadmat(str(path))["lm"])
