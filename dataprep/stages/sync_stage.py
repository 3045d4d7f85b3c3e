"""Stage 5: audio-visual sync of every live clip (the decisions are `sync_decisions`).

The backend is chosen once per process (`SyncConfig.backend`; `auto` takes SyncNet when its
weights file is present) and recorded in `record.notes["sync_backend"]` and in each clip's
manifest row. A clip whose offset is corrected gets its audio delayed by -offset frames when it
is exported (`Clip.audio_delay`, the convention of `emo.media.audio.shift_audio`); one that is
rejected gets the decision's reason.
"""
from __future__ import annotations

import cv2
import numpy as np

from emo.media import iter_frames

from ..config import DataprepConfig, SyncConfig
from .common import Clip, VideoRecord, reject_clip
from .sync_decisions import decide, measure_offline, measure_syncnet

# SyncNet crops ~1.4 face heights and resizes them to 224 px: frames are decoded at a scale
# that makes the face about this tall, which keeps the crop sharp and a 12-s clip's frames small.
SYNCNET_FACE_PX = 320.0

_NETS: dict = {}


def clip_audio(record: VideoRecord, clip: Clip, delay_frames: int = 0) -> np.ndarray:
    """The clip's audio delayed by `delay_frames` video frames (< 0: advanced), read from the
    source (so a shifted clip keeps real sound at its ends where the source has it); zeros past
    the source's ends. Same convention as `emo.media.audio.shift_audio`."""
    rate = record.audio_rate
    n = int(round(clip.n_frames / clip.fps * rate))
    i0 = int(round((clip.start_frame - delay_frames) / clip.fps * rate))
    out = np.zeros(n, np.float32)
    a, b = max(0, i0), min(len(record.audio), i0 + n)
    if b > a:
        out[a - i0:b - i0] = record.audio[a:b]
    return out


def sync_backend(cfg: SyncConfig) -> str:
    """'syncnet' or 'offline' for this config (FileNotFoundError naming the file and the fetch
    command when 'syncnet' is asked for and its weights are absent)."""
    from emo.weights import find_weights, how_to_get

    found = find_weights("syncnet", cfg.weights_dir)
    if cfg.backend == "syncnet" and found is None:
        raise FileNotFoundError(f"sync backend 'syncnet' needs SyncNet's weights: {how_to_get('syncnet', cfg.weights_dir)}")
    if cfg.backend == "offline" or found is None:
        return "offline"
    return "syncnet"


def _syncnet(cfg: SyncConfig):
    from emo.media.syncnet import load_syncnet
    from emo.weights import find_weights

    key = str(find_weights("syncnet", cfg.weights_dir))
    if key not in _NETS:
        _NETS[key] = load_syncnet(cfg.weights_dir)
    return _NETS[key]


def _syncnet_measurement(record: VideoRecord, clip: Clip, cfg: SyncConfig):
    boxes = np.asarray(clip.track.boxes, np.float64)
    height = float(np.nanmedian(boxes[:, 3] - boxes[:, 1]))
    scale = min(1.0, SYNCNET_FACE_PX / max(height, 1.0))
    frames = []
    for index, rgb in iter_frames(record.path, clip.start_s, clip.end_s):   # resized as decoded
        if len(frames) >= clip.n_frames:
            break
        if scale < 1.0:
            h, w = rgb.shape[:2]
            rgb = cv2.resize(rgb, (max(2, int(round(w * scale))), max(2, int(round(h * scale)))),
                             interpolation=cv2.INTER_AREA)
        frames.append(rgb)
    frames = np.stack(frames)
    boxes = boxes[:len(frames)] * scale
    return measure_syncnet(_syncnet(cfg), frames, boxes, clip_audio(record, clip)[:], record.audio_rate,
                           clip.fps, cfg)


def sync_clips(record: VideoRecord, cfg: DataprepConfig) -> VideoRecord:
    scfg = cfg.sync
    backend = sync_backend(scfg)
    record.notes["sync_backend"] = backend
    for clip in record.live_clips():
        if backend == "syncnet":
            m = _syncnet_measurement(record, clip, scfg)
        else:
            m = measure_offline(clip.track.landmarks, clip_audio(record, clip), record.audio_rate,
                                clip.fps, scfg)
        d = decide(m, scfg)
        clip.values.update(sync_offset=int(d.offset), sync_confidence=float(d.confidence),
                           sync_corrected=bool(d.corrected), sync_trusted=bool(d.trusted),
                           sync_reason=d.trust_reason, sync_backend=d.backend)
        detail = f"{d.backend}: offset {d.offset:+d} frames, confidence {d.confidence:.3f}"
        if d.trust_reason:
            detail += f" ({d.trust_reason})"
        if not d.keep:
            reject_clip(record, clip, "sync", d.reason, detail)
        elif d.corrected:
            clip.audio_delay = -int(d.offset)
    return record
