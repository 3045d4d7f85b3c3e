"""Stage 5 glue: audio-visual sync per clip via `dataprep.stages.sync.check_sync`.

A clip whose offset the checker can correct gets its audio read `offset` frames later when it is
encoded (offset > 0: the audio is late); one it cannot is rejected with the checker's reason.
"""
from __future__ import annotations

import importlib

import numpy as np

from ..config import DataprepConfig
from .common import Clip, VideoRecord, reject_clip
from .speech import stage_config


def clip_audio(record: VideoRecord, clip: Clip, shift_frames: int = 0) -> np.ndarray:
    """The clip's audio, `shift_frames` video frames later in the source; zeros past the ends."""
    rate = record.audio_rate
    n = int(round(clip.n_frames / clip.fps * rate))
    i0 = int(round((clip.start_frame + shift_frames) / clip.fps * rate))
    out = np.zeros(n, np.float32)
    a, b = max(0, i0), min(len(record.audio), i0 + n)
    if b > a:
        out[a - i0:b - i0] = record.audio[a:b]
    return out


def sync_clips(record: VideoRecord, cfg: DataprepConfig) -> VideoRecord:
    try:
        sync_mod = importlib.import_module(f"{__package__}.sync")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.sync":
            raise
        # The sync stage is not installed in this checkout: record that, measure nothing.
        record.notes["sync"] = "unavailable: dataprep/stages/sync.py missing"
        for clip in record.live_clips():
            clip.values.update(sync_offset=0, sync_confidence=float("nan"), sync_corrected=False)
        return record
    scfg = stage_config(sync_mod, "SyncConfig", cfg.sync)
    for clip in record.live_clips():
        decision = sync_mod.check_sync(clip.track.landmarks, clip_audio(record, clip),
                                       record.audio_rate, clip.fps, scfg)
        clip.values.update(sync_offset=int(decision.offset), sync_confidence=float(decision.confidence),
                           sync_corrected=bool(decision.corrected))
        if not decision.keep:
            reject_clip(record, clip, "sync", decision.reason or "out of sync",
                        f"offset {decision.offset} frames, confidence {decision.confidence:.3f}")
        elif decision.corrected:
            clip.audio_shift = int(decision.offset)
    return record
