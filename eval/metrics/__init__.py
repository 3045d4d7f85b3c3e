"""The evaluation metrics: one file per metric (FID/KID and Sync-C/Sync-D share a file and their
features), `all_metrics()` builds the standard set.

The contract with the harness is in `base.py` (ClipSample, Metric). Cost settings come from
`metrics.yaml` beside this file (overridable per call).
"""
from __future__ import annotations

from pathlib import Path

import yaml

from .base import ClipSample, FaceTrack, Metric, MetricUnavailable, sample_landmarks
from .efid import EFID3DMM, EFIDBlendshapes
from .fid import FID, KID
from .fsim import FSIM
from .fvd import FVD
from .blink import BlinkRate
from .head_pose import HeadPose
from .lm_sync import LandmarkSync
from .lmd import LMD
from .lpips import LPIPS
from .pixel import PSNR, SSIM
from .sync import SyncC, SyncD

__all__ = ["ClipSample", "FaceTrack", "Metric", "MetricUnavailable", "sample_landmarks", "all_metrics",
           "METRIC_CLASSES", "load_settings", "FID", "KID", "FVD", "SyncC", "SyncD", "LandmarkSync", "EFID3DMM",
           "EFIDBlendshapes", "FSIM", "SSIM", "PSNR", "LPIPS", "LMD", "BlinkRate", "HeadPose"]

# Report order: image quality, video quality, lip sync, expression, identity, pixel fidelity, motion.
METRIC_CLASSES = [FID, KID, FVD, SyncC, SyncD, LandmarkSync, EFID3DMM, EFIDBlendshapes, FSIM,
                  SSIM, PSNR, LPIPS, LMD, BlinkRate, HeadPose]
SETTINGS_FILE = Path(__file__).with_name("metrics.yaml")


def load_settings(path: str | Path | None = None) -> dict:
    with open(path or SETTINGS_FILE) as f:
        return yaml.safe_load(f) or {}


def all_metrics(weights_dir=None, device: str = "cpu", settings: dict | None = None) -> list[Metric]:
    """Every metric, configured from metrics.yaml (+ `settings` overrides {metric name: {key: value}})."""
    cfg = load_settings()
    for name, over in (settings or {}).items():
        cfg.setdefault(name, {}).update(over)
    return [cls(weights_dir=weights_dir, device=device, **cfg.get(cls.name, {})) for cls in METRIC_CLASSES]
