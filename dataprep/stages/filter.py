"""Stage 6: quality thresholds from the config. Every failing clip becomes a reject row naming
the first failed rule (all failed rules in the detail); NaN measurements (a stage that did not
run) are not judged."""
from __future__ import annotations

import math

from ..config import DataprepConfig
from .common import VideoRecord, reject_clip


def failed_rules(values: dict, duration_s: float, cfg: DataprepConfig) -> list[tuple[str, str]]:
    f = cfg.filter
    rules = [
        ("face too small", values.get("face_frac"), lambda v: v < f.min_face_frac, f"face_frac {{:.3f}} < {f.min_face_frac}"),
        ("blurry", values.get("sharpness"), lambda v: v < f.min_sharpness, f"sharpness {{:.1f}} < {f.min_sharpness}"),
        ("yaw too large", values.get("yaw_abs_max"), lambda v: v > f.max_abs_yaw, f"|yaw| {{:.1f}} > {f.max_abs_yaw}"),
        ("too short", duration_s, lambda v: v < f.min_duration_s, f"duration {{:.2f}} s < {f.min_duration_s}"),
        ("too little speech", values.get("speech_ratio"), lambda v: v < f.min_speech_ratio, f"speech ratio {{:.2f}} < {f.min_speech_ratio}"),
        ("low sync confidence", values.get("sync_confidence"), lambda v: v < f.min_sync_confidence, f"sync confidence {{:.3f}} < {f.min_sync_confidence}"),
    ]
    out = []
    for reason, value, fails, text in rules:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if fails(value):
            out.append((reason, text.format(value)))
    return out


def filter_clips(record: VideoRecord, cfg: DataprepConfig) -> VideoRecord:
    for clip in record.live_clips():
        failed = failed_rules(clip.values, clip.n_frames / clip.fps, cfg)
        if failed:
            reject_clip(record, clip, "filter", failed[0][0], "; ".join(t for _, t in failed))
    return record
