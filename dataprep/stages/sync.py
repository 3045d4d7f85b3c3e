"""Audio-video sync stage: is the visible face the one speaking, and is its audio on time?

The measure itself lives in ``emo.media.lipsync`` (eval uses the same one on generated videos).
Decisions, in order:
1. confidence < ``min_confidence``      -> reject "face not speaking" (flat curve: the visible face
   is not the speaker, or there is no speech to align);
2. the lip and jaw features disagree on the offset by more than ``agreement_frames`` -> the offset
   is not trusted: keep, uncorrected, ``trusted=False`` (on short real shots the crude measure is
   often ambiguous; rejecting on it would throw away good clips, correcting would damage them);
3. |offset| > ``max_correctable``         -> reject "out of sync";
4. ``tolerance`` < |offset| <= ``max_correctable`` -> keep, corrected=True: the pipeline shifts the
   clip's audio by -offset with ``shift_audio`` (manifest: sync_corrected);
5. otherwise keep as is.
Defaults: ``tolerance`` 1 frame (40 ms at 25 fps, under the ~45-ms audio-lead detectability
threshold of ITU-R BT.1359 and within the measure's own +-1-frame jitter), ``max_correctable`` 8
frames (320 ms). An offset at the edge of the search range (|offset| == max_offset) may lie
beyond it, so max_correctable must stay below max_offset.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emo.media.lipsync import measure_offset, mouth_features


@dataclass
class SyncConfig:
    max_offset: int = 15          # frames searched on each side
    min_confidence: float = 0.1   # peak minus median of the correlation curve
    max_correctable: int = 8      # frames; beyond this the clip is rejected "out of sync"
    tolerance: int = 1            # |offset| <= tolerance is left uncorrected
    agreement_frames: int = 2     # lip and jaw offsets further apart: offset not trusted
    highpass_s: float = 0.75      # moving-average window removed from both signals

    @classmethod
    def from_dict(cls, d: dict | None) -> "SyncConfig":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown sync config keys: {sorted(unknown)}")
        return cls(**d)


@dataclass
class SyncDecision:
    offset: int            # frames, > 0: audio late (measured before any correction)
    confidence: float
    keep: bool
    reason: str            # "" when kept, else "face not speaking" | "out of sync"
    corrected: bool        # keep with the audio shifted by -offset
    trusted: bool = True   # False: the features disagreed, the offset is reported but not acted on


def check_sync(landmarks_px: np.ndarray, audio: np.ndarray, rate: int, fps: float,
               cfg: SyncConfig | None = None) -> SyncDecision:
    """Decide on one shot from its face landmarks (T, 478, 3) in pixels (NaN where no face)
    and its mono audio covering the same T frames."""
    cfg = cfg or SyncConfig()
    if cfg.max_correctable >= cfg.max_offset:
        raise ValueError("max_correctable must be smaller than max_offset")
    result = measure_offset(mouth_features(landmarks_px), audio, rate, fps,
                            max_offset=cfg.max_offset, highpass_s=cfg.highpass_s)
    offset, conf = int(result.offset), float(result.confidence)
    if not conf >= cfg.min_confidence:
        return SyncDecision(offset, conf, False, "face not speaking", False)
    if result.feature_offsets and \
            max(result.feature_offsets) - min(result.feature_offsets) > cfg.agreement_frames:
        return SyncDecision(offset, conf, True, "", False, trusted=False)
    if abs(offset) > cfg.max_correctable:
        return SyncDecision(offset, conf, False, "out of sync", False)
    corrected = abs(offset) > cfg.tolerance
    return SyncDecision(offset, conf, True, "", corrected)


def shift_audio(audio: np.ndarray, rate: int, fps: float, offset: int) -> np.ndarray:
    """Undo a measured offset, keeping the length: audio late by `offset` frames (> 0) is
    advanced (its start dropped, silence padded at the end); audio early (< 0) is delayed."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"shift_audio expects mono (n,), got {audio.shape}")
    n = int(round(abs(offset) * rate / fps))
    if n == 0 or len(audio) == 0:
        return audio.copy()
    n = min(n, len(audio))
    pad = np.zeros(n, audio.dtype)
    if offset > 0:
        return np.concatenate([audio[n:], pad])
    return np.concatenate([pad, audio[:len(audio) - n]])
