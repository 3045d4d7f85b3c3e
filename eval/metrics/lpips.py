"""LPIPS v0.1 (AlexNet) of generated frames against ground-truth frames, mean over frames.

Frames are mapped from uint8 to [-1, 1] (lpips' `normalize=False` input convention) at their
aligned resolution; no resizing.
"""
from __future__ import annotations

import numpy as np
import torch

from .base import ClipSample, Metric, device_of


def lpips_frames(net, a: np.ndarray, b: np.ndarray, batch: int = 8) -> np.ndarray:
    out = []
    for i in range(0, len(a), batch):
        x = torch.from_numpy(np.ascontiguousarray(a[i:i + batch])).permute(0, 3, 1, 2).float() / 127.5 - 1
        y = torch.from_numpy(np.ascontiguousarray(b[i:i + batch])).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.no_grad():
            dev = device_of(net)
            out.append(net(x.to(dev), y.to(dev)).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


class LPIPS(Metric):
    name = "lpips"
    direction = "lower"
    weights = ("alexnet", "lpips_alex")
    description = "LPIPS v0.1 (AlexNet) of generated vs ground-truth frames, mean over frames"

    def __init__(self, weights_dir=None, device="cpu", frame_stride: int = 1):
        super().__init__(weights_dir, device)
        self.frame_stride = max(1, int(frame_stride))

    protocol_fields = {"network": "LPIPS v0.1, AlexNet", "frames": "every frame_stride-th aligned frame",
                       "resize": "none beyond the alignment rule", "input": "[-1, 1]"}

    def settings(self) -> dict:
        return {"frame_stride": self.frame_stride}

    def score_clip(self, sample: ClipSample) -> float:
        self.require_available()
        from eval.networks import load_network
        idx = slice(None, None, self.frame_stride)
        net = load_network("lpips", self.weights_dir).to(self.device)
        return float(lpips_frames(net, sample.generated[idx], sample.ground_truth[idx]).mean())
