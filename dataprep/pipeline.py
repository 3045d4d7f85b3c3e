"""The per-video pipeline: a list of steps a record flows through (datatrove style).

`process_video` is pure with respect to its inputs (a raw file, a config, an output folder): it
writes only the clips of this video and returns a JSON-able result with its manifest rows,
reject rows and timings. The runner knows nothing of what the steps do.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

from .config import DataprepConfig
from .stages.common import VideoRecord
from .stages.cut import cut
from .stages.export import export
from .stages.faces import faces
from .stages.filter import filter_clips
from .stages.probe import probe
from .stages.scan import scan
from .stages.speech import clip_speech, diarize_video
from .stages.sync_stage import sync_clips

Step = Callable[[VideoRecord, DataprepConfig], VideoRecord]

# Order matters only for cost: cheap whole-video rejects first, decoding once, then per-clip
# checks from cheapest to dearest, and the crop encode last, for clips that passed everything.
STEPS: list[tuple[str, Step]] = [
    ("probe", probe),
    ("diarize", diarize_video),
    ("scan", scan),
    ("cut", cut),
    ("faces", faces),
    ("speech", clip_speech),
    ("sync", sync_clips),
    ("filter", filter_clips),
    ("export", export),
]


def run_steps(record: VideoRecord, cfg: DataprepConfig, steps=None) -> tuple[VideoRecord, dict]:
    timings = {}
    for name, step in steps or STEPS:
        if record.rejected:
            break
        t0 = time.perf_counter()
        record = step(record, cfg)
        timings[name] = time.perf_counter() - t0
    return record, timings


def manifest_values(record: VideoRecord, clip) -> dict:
    v = clip.values
    return {
        "clip_id": clip.clip_id, "clip_path": v["clip_path"], "labels_path": v["labels_path"],
        "source_video": record.source_video, "source_start": clip.start_s, "source_end": clip.end_s,
        "fps": float(clip.fps), "n_frames": int(clip.n_frames), "size": int(v["size"]),
        "speaker": v.get("speaker", ""), "speech_ratio": float(v.get("speech_ratio", math.nan)),
        "sync_offset": int(v.get("sync_offset", 0)), "sync_confidence": float(v.get("sync_confidence", math.nan)),
        "sync_corrected": bool(v.get("sync_corrected", False)),
        "sync_trusted": bool(v.get("sync_trusted", False)), "sync_reason": str(v.get("sync_reason", "")),
        "sync_backend": str(v.get("sync_backend", "")),
        **{k: float(v[k]) for k in ("face_size", "face_frac", "yaw_range", "yaw_abs_max", "mean_speed", "sharpness")},
        "face_box": v["face_box"],
    }


def process_video(raw_dir: str | Path, source_video: str, out_dir: str | Path,
                  cfg: DataprepConfig, steps=None) -> dict:
    """Run every step on one video; return {"clips": [...], "rejects": [...], "stats": {...}}."""
    t0 = time.perf_counter()
    record = VideoRecord(source_video=source_video, path=str(Path(raw_dir) / source_video),
                         out_dir=str(out_dir))
    record, timings = run_steps(record, cfg, steps)
    rows, rejects = [], list(record.rejects)
    for clip in record.clips:
        if clip.reject is not None:
            rejects.append(clip.reject)
        else:
            rows.append(manifest_values(record, clip))
    info = record.info
    return {
        "source_video": source_video, "clips": rows, "rejects": rejects,
        "stats": {"seconds": time.perf_counter() - t0, "timings": timings,
                  "duration_s": float(info.duration) if info else 0.0,
                  "fps": float(info.fps) if info else None,
                  "n_shots": len(record.shots), "n_candidate_clips": len(record.clips),
                  "info": info.to_dict() if info else None, "notes": record.notes},
    }
