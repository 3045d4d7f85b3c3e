"""FVD (Unterthiner et al. 2019) as StyleGAN-V computes it: 16-frame clips, I3D Kinetics-400
(TF-Hub weights, via StyleGAN-V's port converted to safetensors), 400-d pre-softmax logits,
Frechet distance between the generated and ground-truth clip sets.

Each held-out clip is cut into consecutive non-overlapping 16-frame segments (frames in the
clip's own fps; StyleGAN-V's subsample_factor=1); a clip shorter than 16 frames gives none. The
Frechet distance needs many segments to mean anything (400-d covariances): the result carries
`n` and the report should be read with that in mind.
"""
from __future__ import annotations

import numpy as np
import torch

from .base import ClipSample, Metric, device_of
from .frechet import FrechetOfFeatures

SEGMENT = 16


def segments(frames: np.ndarray, length: int = SEGMENT) -> np.ndarray:
    """(T, H, W, 3) -> (K, length, H, W, 3), K = T // length consecutive non-overlapping segments."""
    k = len(frames) // length
    return frames[:k * length].reshape(k, length, *frames.shape[1:])


def i3d_features(frames: np.ndarray, model, batch: int = 2) -> np.ndarray:
    segs = segments(frames)
    out = []
    for i in range(0, len(segs), batch):
        video = torch.from_numpy(np.ascontiguousarray(segs[i:i + batch])).permute(0, 4, 1, 2, 3)
        with torch.no_grad():
            out.append(model.fvd_features(video.to(device_of(model))).double().cpu().numpy())
    return np.concatenate(out, 0) if out else np.zeros((0, 400))


class FVD(FrechetOfFeatures, Metric):
    name = "fvd"
    direction = "lower"
    level = "set"
    weights = ("i3d_fvd",)
    description = "FVD over 16-frame segments (I3D Kinetics-400 logits as in StyleGAN-V), generated vs ground truth"

    def features(self, sample: ClipSample) -> tuple[np.ndarray, np.ndarray]:
        self.require_available()
        from eval.networks import load_network
        model = load_network("i3d_fvd", self.weights_dir).to(self.device)
        return i3d_features(sample.generated, model), i3d_features(sample.ground_truth, model)

