"""The evaluation metrics: one file per metric (FID/KID and Sync-C/Sync-D share a file and their
features), `all_metrics()` builds the standard set.

The contract with the harness is in `base.py` (ClipSample, Metric). Settings (cost knobs and named
protocol routes) come from `metrics.yaml` beside this file, typed by `settings.py`.
"""
from __future__ import annotations

from .base import ClipSample, FaceDetectionRate, FaceTrack, Metric, MetricUnavailable, sample_landmarks
from .blink import BlinkRate
from .efid import EFID3DMM, EFIDBlendshapes
from .fid import FID, KID
from .fsim import FSIM
from .fvd import FVD
from .head_pose import HeadPose
from .lm_sync import LandmarkSync
from .lmd import LMD
from .lpips import LPIPS
from .pixel import PSNR, SSIM
from .settings import SETTINGS_FILE, MetricSettings, load_settings
from .sync import SyncC, SyncD

__all__ = ["ClipSample", "FaceTrack", "Metric", "MetricUnavailable", "sample_landmarks", "all_metrics",
           "METRIC_CLASSES", "load_settings", "MetricSettings", "SETTINGS_FILE", "FID", "KID", "FVD", "SyncC",
           "SyncD", "LandmarkSync", "EFID3DMM", "EFIDBlendshapes", "FSIM", "SSIM", "PSNR", "LPIPS", "LMD",
           "BlinkRate", "HeadPose", "FaceDetectionRate"]

# Report order: face detection first (it qualifies every face metric), image quality, video
# quality, lip sync, expression, identity, pixel fidelity, motion.
METRIC_CLASSES = [FaceDetectionRate, FID, KID, FVD, SyncC, SyncD, LandmarkSync, EFID3DMM, EFIDBlendshapes,
                  FSIM, SSIM, PSNR, LPIPS, LMD, BlinkRate, HeadPose]


def all_metrics(weights_dir=None, device: str = "cpu", settings: MetricSettings | dict | None = None) -> list[Metric]:
    """Every metric, configured from metrics.yaml; `settings` is a MetricSettings or overrides
    {section: {key: value}} applied to the file (checked the same way)."""
    cfg = settings if isinstance(settings, MetricSettings) else load_settings(overrides=settings)
    return [cls(weights_dir=weights_dir, device=device, **cfg.for_metric(cls.name)) for cls in METRIC_CLASSES]
