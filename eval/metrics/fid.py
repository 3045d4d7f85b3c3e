"""FID (Heusel et al. 2017) and KID over frames: generated frames vs ground-truth frames of the
held-out clips, Inception pool3 (2048-d) features of the FID reference network.

The number is torchmetrics' `FrechetInceptionDistance` with our Inception module as `feature`
(`fid_from_images`); for the bootstrap over clips the per-frame features are computed once per
clip and fed to the same torchmetrics class through a pass-through feature module
(`fid_from_features`), which is the same computation without re-running Inception. Bootstrap
resamples may use `bootstrap_aggregate` (an exact reformulation without a 2048 x 2048 general
eigen-decomposition, tested equal to torchmetrics).
`eval.metrics.frechet.frechet_distance` (scipy) is the independent check (tests compare them).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import ClipSample, Metric, device_of
from .frechet import frechet_distance_fast, kid, stack_features


class PrecomputedFeatures(nn.Module):
    """A torchmetrics `feature=` module that returns its input: rows are features already."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def fid_from_features(gen: np.ndarray, real: np.ndarray) -> float:
    from torchmetrics.image.fid import FrechetInceptionDistance

    gen, real = np.asarray(gen, np.float64), np.asarray(real, np.float64)
    if len(gen) < 2 or len(real) < 2:
        return float("nan")
    metric = FrechetInceptionDistance(feature=PrecomputedFeatures(gen.shape[1]))
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(gen), real=False)
    return float(metric.compute())


def fid_from_images(gen_images: np.ndarray, real_images: np.ndarray, model: nn.Module, batch: int = 16) -> float:
    """(N, H, W, 3) uint8 frames -> FID through torchmetrics with `model` as the feature extractor."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=model)
    for images, real in ((real_images, True), (gen_images, False)):
        for i in range(0, len(images), batch):
            chunk = torch.from_numpy(np.ascontiguousarray(images[i:i + batch])).permute(0, 3, 1, 2)
            with torch.no_grad():
                metric.update(chunk, real=real)
    return float(metric.compute())


def inception_features(frames: np.ndarray, model: nn.Module, batch: int = 16) -> np.ndarray:
    out = []
    for i in range(0, len(frames), batch):
        chunk = torch.from_numpy(np.ascontiguousarray(frames[i:i + batch])).permute(0, 3, 1, 2)
        with torch.no_grad():
            out.append(model(chunk.to(device_of(model))).double().cpu().numpy())
    return np.concatenate(out, 0) if out else np.zeros((0, 2048))


class _InceptionFeatures(Metric):
    level = "set"
    weights = ("inception_fid",)

    def __init__(self, weights_dir=None, device="cpu", frame_stride: int = 1, batch: int = 16):
        super().__init__(weights_dir, device)
        self.frame_stride, self.batch = max(1, int(frame_stride)), int(batch)

    protocol_fields = {"network": "TF Inception 2015-12-05 pool3 (2048-d), torch-fidelity port",
                       "resize": "299 x 299, TF1 bilinear (align_corners=False, no antialias) as torch-fidelity; "
                                 "pytorch-fid and torchmetrics >= 1.8 (antialiased resize) give different numbers",
                       "frames": "every frame_stride-th aligned frame, generated vs ground truth of the same clips",
                       "crop": "none (the whole aligned frame)"}

    def settings(self) -> dict:
        return {"frame_stride": self.frame_stride}

    def features(self, sample: ClipSample) -> tuple[np.ndarray, np.ndarray]:
        # FID and KID share the features of a sample.
        key = ("inception_fid", self.frame_stride)
        if key not in sample.cache:
            self.require_available()
            from eval.networks import load_network
            model = load_network("inception_fid", self.weights_dir).to(self.device)
            idx = slice(None, None, self.frame_stride)
            sample.cache[key] = (inception_features(sample.generated[idx], model, self.batch),
                                 inception_features(sample.ground_truth[idx], model, self.batch))
        return sample.cache[key]


class FID(_InceptionFeatures):
    name = "fid"
    direction = "lower"
    description = ("FID between generated and ground-truth frames (Inception 2015-12-05 pool3, "
                   "torch-fidelity preprocessing, torchmetrics)")

    def aggregate(self, gen, real) -> float:
        return fid_from_features(stack_features(gen), stack_features(real))

    def bootstrap_aggregate(self, gen, real) -> float:
        """The same number as `aggregate` (tested), several times faster: for bootstrap resamples."""
        return frechet_distance_fast(stack_features(gen), stack_features(real))


class KID(_InceptionFeatures):
    name = "kid"
    direction = "lower"
    description = "KID (cubic-kernel MMD^2 on the FID Inception features), generated vs ground-truth frames"

    def aggregate(self, gen, real) -> float:
        # torchmetrics' KernelInceptionDistance defaults: 100 subsets of 1000 samples.
        return kid(stack_features(gen), stack_features(real), subset_size=1000, n_subsets=100)

    def bootstrap_aggregate(self, gen, real) -> float:
        """Fewer subsets per resample (cost); the interval then also carries subset-sampling noise."""
        return kid(stack_features(gen), stack_features(real), subset_size=1000, n_subsets=5)
