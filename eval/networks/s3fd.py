"""S3FD face detector (Zhang et al. 2017), as syncnet_python runs it for its Sync-C/D pipeline.

Key names follow joonson/syncnet_python `detectors/s3fd/nets.py` (`S3FDNet`), so its
`sfd_face.pth` loads strictly: `vgg.{0,2,5,7,10,12,14,17,19,21,24,26,28,31,33}.{weight,bias}`
(VGG-16 with fc6/fc7 as convolutions; the indices count ReLUs and pools), `L2Norm3_3.weight`,
`L2Norm4_3.weight`, `L2Norm5_3.weight`, `extras.{0..3}`, `loc.{0..5}`, `conf.{0..5}` (conf.0 has
4 channels: 3 background + 1 face, "max-out" background).

Detection, as syncnet_python's `S3FD.detect_faces(image, conf_th=0.9, scales=[0.25])`:
1. the RGB frame resized by `scale` (bilinear), minus the mean (R, G, B) = (123, 117, 104);
2. the network: per prior box 4 offsets and 2 class logits (softmax);
3. prior boxes: one per cell of each of the six source maps, strides 4 .. 128, sizes 16 .. 512 px
   (normalised centre x, y, width, height);
4. decode with variances (0.1, 0.2), boxes normalised to the (scaled) image;
5. candidates with face score > 0.05, NMS at IoU 0.3 (top 5000 in, 750 out), then score >
   `conf_th`, boxes scaled to the frame, and a final NMS at IoU 0.1.
The post-processing steps are plain functions, tested on synthetic outputs with known answers.
"""
from __future__ import annotations

from itertools import product

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MEAN_RGB = (123.0, 117.0, 104.0)
STEPS = (4, 8, 16, 32, 64, 128)
MIN_SIZES = (16, 32, 64, 128, 256, 512)
VARIANCES = (0.1, 0.2)
# VGG-16 layers as (out channels) with "M" = max pool, "C" = ceil-mode max pool; ReLU after each conv.
_VGG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512, "M")


class L2Norm(nn.Module):
    """Channel-wise L2 normalisation with a learned per-channel scale (`weight`)."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10
        return x / norm * self.weight.view(1, -1, 1, 1)


class S3FDNet(nn.Module):
    def __init__(self):
        super().__init__()
        layers, cin = [], 3
        for v in _VGG:
            if v in ("M", "C"):
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=v == "C"))
            else:
                layers += [nn.Conv2d(cin, v, 3, 1, padding=1), nn.ReLU(inplace=True)]
                cin = v
        layers += [nn.Conv2d(512, 1024, 3, 1, padding=6, dilation=6), nn.ReLU(inplace=True),
                   nn.Conv2d(1024, 1024, 1, 1), nn.ReLU(inplace=True)]
        self.vgg = nn.ModuleList(layers)
        self.L2Norm3_3, self.L2Norm4_3, self.L2Norm5_3 = L2Norm(256, 10), L2Norm(512, 8), L2Norm(512, 5)
        self.extras = nn.ModuleList([nn.Conv2d(1024, 256, 1, 1), nn.Conv2d(256, 512, 3, 2, padding=1),
                                     nn.Conv2d(512, 128, 1, 1), nn.Conv2d(128, 256, 3, 2, padding=1)])
        source_channels = (256, 512, 512, 1024, 512, 256)
        self.loc = nn.ModuleList([nn.Conv2d(c, 4, 3, 1, padding=1) for c in source_channels])
        self.conf = nn.ModuleList([nn.Conv2d(c, 4 if i == 0 else 2, 3, 1, padding=1)
                                   for i, c in enumerate(source_channels)])

    def sources(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The six feature maps the heads read (conv3_3, conv4_3, conv5_3 normalised; fc7; two extras)."""
        out = []
        for lo, hi, norm in ((0, 16, self.L2Norm3_3), (16, 23, self.L2Norm4_3), (23, 30, self.L2Norm5_3)):
            for k in range(lo, hi):
                x = self.vgg[k](x)
            out.append(norm(x))
        for k in range(30, len(self.vgg)):
            x = self.vgg[k](x)
        out.append(x)
        for k, layer in enumerate(self.extras):
            x = F.relu(layer(x))
            if k % 2 == 1:
                out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
        """(B, 3, H, W) mean-subtracted RGB -> (loc (B, N, 4), face probability (B, N), map sizes)."""
        locs, confs, sizes = [], [], []
        for i, src in enumerate(self.sources(x)):
            conf = self.conf[i](src)
            if i == 0:   # max-out background: the largest of three background logits against the face one
                conf = torch.cat([conf[:, :3].max(dim=1, keepdim=True).values, conf[:, 3:]], 1)
            locs.append(self.loc[i](src).permute(0, 2, 3, 1).reshape(len(x), -1, 4))
            confs.append(conf.permute(0, 2, 3, 1).reshape(len(x), -1, 2))
            sizes.append((src.shape[2], src.shape[3]))
        return torch.cat(locs, 1), torch.cat(confs, 1).softmax(-1)[..., 1], sizes


def prior_boxes(image_hw: tuple[int, int], map_sizes: list[tuple[int, int]]) -> np.ndarray:
    """(N, 4) priors (cx, cy, w, h), normalised to the image, in the order of the flattened heads
    (map by map, row-major cells)."""
    h, w = image_hw
    out = []
    for (fh, fw), step, size in zip(map_sizes, STEPS, MIN_SIZES):
        for i, j in product(range(fh), range(fw)):
            out.append(((j + 0.5) * step / w, (i + 0.5) * step / h, size / w, size / h))
    return np.asarray(out, np.float64).reshape(-1, 4)


def decode(loc: np.ndarray, priors: np.ndarray, variances=VARIANCES) -> np.ndarray:
    """SSD box decoding: (N, 4) offsets + priors (cx, cy, w, h) -> (N, 4) boxes (x0, y0, x1, y1)."""
    loc, priors = np.asarray(loc, np.float64), np.asarray(priors, np.float64)
    centre = priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:]
    size = priors[:, 2:] * np.exp(loc[:, 2:] * variances[1])
    return np.concatenate([centre - size / 2, centre + size / 2], 1)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, top_k: int | None = None) -> np.ndarray:
    """Greedy non-maximum suppression: indices kept, best first (overlap = intersection / union of
    areas (x1 - x0)(y1 - y0), a box suppressed when its IoU with a kept one exceeds the threshold)."""
    boxes, scores = np.asarray(boxes, np.float64), np.asarray(scores, np.float64)
    order = np.argsort(-scores, kind="stable")
    if top_k is not None:
        order = order[:top_k]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        w = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        h = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = w * h
        iou = inter / (area[i] + area[rest] - inter)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, int)


def select_detections(loc: np.ndarray, face_prob: np.ndarray, priors: np.ndarray, frame_wh: tuple[int, int],
                      conf_th: float = 0.9) -> np.ndarray:
    """Steps 4-5 above: (K, 5) boxes (x0, y0, x1, y1 in frame pixels, score), best first."""
    boxes = decode(loc, priors)
    cand = np.flatnonzero(face_prob > 0.05)
    kept = cand[nms(boxes[cand], face_prob[cand], 0.3, top_k=5000)][:750]
    kept = kept[face_prob[kept] > conf_th]
    w, h = frame_wh
    dets = np.concatenate([boxes[kept] * np.array([w, h, w, h]), face_prob[kept, None]], 1)
    return dets[nms(dets[:, :4], dets[:, 4], 0.1)] if len(dets) else np.zeros((0, 5))


def detect_faces(net: S3FDNet, frame_rgb: np.ndarray, conf_th: float = 0.9, scale: float = 0.25) -> np.ndarray:
    """(K, 5) face boxes of one RGB uint8 frame (syncnet_python's call: conf_th 0.9, scale 0.25)."""
    import cv2
    h, w = frame_rgb.shape[:2]
    small = cv2.resize(frame_rgb, dsize=(0, 0), fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    x = torch.from_numpy(small.astype(np.float32) - np.asarray(MEAN_RGB, np.float32)).permute(2, 0, 1)[None]
    param = next(net.parameters())
    with torch.no_grad():
        loc, prob, sizes = net(x.to(param.device, param.dtype))
    priors = prior_boxes(small.shape[:2], sizes)
    return select_detections(loc[0].double().cpu().numpy(), prob[0].double().cpu().numpy(), priors, (w, h), conf_th)
