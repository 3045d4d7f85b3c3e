"""FVD (Unterthiner et al. 2019) with the I3D Kinetics-400 network of the TF-Hub module (via
StyleGAN-V's TorchScript port, converted to safetensors): 400-d pre-softmax logits of 16-frame
clips, averaged over time, Frechet distance between the generated and ground-truth clip sets.

Two routes (metrics.yaml `fvd.route`), both recorded in the results' protocol:
- `stylegan_v` (default), as StyleGAN-V's `compute_fvd(num_frames=16)` samples: ONE 16-frame clip
  per video, consecutive frames (subsample_factor 1), videos shorter than 16 frames discarded;
  the real clip starts at a random offset (their `load_n_consecutive_random_offset=True`; here
  seeded per clip id so a run is reproducible), the generated one at frame 0 (their
  `load_n_consecutive_random_offset=False` for generated videos); frames resized to 224 x 224 by
  the detector's bilinear resize (`resize=True`), values mapped to [-1, 1] (`rescale=True`).
- `all_segments` (the earlier route of this toolkit): every consecutive non-overlapping 16-frame
  segment of every clip, on both sides; more features per clip, not the published sampling.
The Frechet distance needs many clips to mean anything (400-d covariances): the entry carries `n`,
and the ground-truth-halves baseline shows the floor at this set size.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch

from .base import ClipSample, Metric, device_of
from .frechet import FrechetOfFeatures

SEGMENT = 16
ROUTES = ("stylegan_v", "all_segments")


def segments(frames: np.ndarray, length: int = SEGMENT) -> np.ndarray:
    """(T, H, W, 3) -> (K, length, H, W, 3), K = T // length consecutive non-overlapping segments."""
    k = len(frames) // length
    return frames[:k * length].reshape(k, length, *frames.shape[1:])


def stylegan_v_clip(frames: np.ndarray, offset_seed: str | None, length: int = SEGMENT) -> np.ndarray:
    """(1, length, H, W, 3): one clip of consecutive frames, at a random offset seeded by
    `offset_seed` (StyleGAN-V's real videos) or at frame 0 when it is None (their generated
    videos); (0, length, H, W, 3) for a video shorter than `length` (discarded, as theirs)."""
    if len(frames) < length:
        return np.zeros((0, length, *frames.shape[1:]), frames.dtype)
    start = 0
    if offset_seed is not None:
        start = int(np.random.default_rng(zlib.crc32(offset_seed.encode())).integers(0, len(frames) - length + 1))
    return frames[None, start:start + length]


def i3d_features(segs: np.ndarray, model, batch: int = 2) -> np.ndarray:
    """(K, 16, H, W, 3) uint8 clips -> (K, 400) features."""
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
    description = "FVD (I3D Kinetics-400 logits as in StyleGAN-V), generated vs ground truth"

    def __init__(self, weights_dir=None, device="cpu", route: str = "stylegan_v"):
        super().__init__(weights_dir, device)
        if route not in ROUTES:
            raise ValueError(f"fvd route {route!r} not in {ROUTES}")
        self.route = route

    def settings(self) -> dict:
        return {"route": self.route}

    def protocol(self) -> dict:
        sampling = ("one 16-frame clip per video (real: seeded random offset, generated: frame 0); "
                    "videos < 16 frames discarded" if self.route == "stylegan_v" else
                    "every non-overlapping 16-frame segment of every clip")
        return {"network": "I3D Kinetics-400 (TF-Hub weights via StyleGAN-V's TorchScript port), 400 logits "
                           "averaged over time",
                "frames": sampling, "resize": "224 x 224 bilinear (align_corners=False), values to [-1, 1]",
                "crop": "none (the whole aligned frame)", "route": self.route}

    def clips(self, sample: ClipSample) -> tuple[np.ndarray, np.ndarray]:
        if self.route == "all_segments":
            return segments(sample.generated), segments(sample.ground_truth)
        return stylegan_v_clip(sample.generated, None), stylegan_v_clip(sample.ground_truth, sample.clip_id)

    def features(self, sample: ClipSample) -> tuple[np.ndarray, np.ndarray]:
        self.require_available()
        from eval.networks import load_network
        model = load_network("i3d_fvd", self.weights_dir).to(self.device)
        gen, real = self.clips(sample)
        return i3d_features(gen, model), i3d_features(real, model)
