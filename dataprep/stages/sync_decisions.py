"""Audio-video sync decisions: measure a clip's offset with one of two backends, then decide.

Backends (``SyncConfig.backend``; ``auto`` = SyncNet when its weights file is present):
- ``syncnet``: ``emo.media.syncnet`` (the network, face crop and protocol eval's Sync-C/D use);
  its offset is trusted when its confidence (Sync-C) reaches ``syncnet_min_confidence`` (3, as
  LatentSync filters its training data); below that the face is not taken to be speaking.
- ``offline``: ``emo.media.lipsync`` (MediaPipe mouth landmarks against the speech envelope, no
  download). Its offset is trusted only when it is unambiguous: the best peak of the correlation
  curve stands ``offline_min_margin`` above the best distinct other peak, at least
  ``offline_min_stability`` of the leave-one-second-out re-measurements agree within a frame (no
  single second of footage decides the answer) and every leave-one-quarter-out re-measurement
  does (no stretch of the clip does). Its reading of an unshifted clip varies by
  +-2 frames between people, so it corrects only beyond ``offline_tolerance`` frames.

Decisions, in order (offsets in frames, + = audio late):
1. no evidence that the face speaks this audio (confidence below the backend's minimum)
   -> reject "face not speaking";
2. the offset is ambiguous -> ``trusted = False``, never corrected; kept (flagged in the
   manifest's ``sync_trusted`` / ``sync_reason``) or rejected "sync ambiguous" (``untrusted``);
3. |offset| > ``max_correctable`` -> reject "out of sync";
4. |offset| > tolerance -> keep, corrected: the exported audio is delayed by -offset frames
   (``emo.media.audio.shift_audio``'s convention);
5. otherwise keep as is.
Only a trusted measurement ever shifts audio.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from emo.media.lipsync import distinct_peak_margin, measure_offset, mouth_features

from ..config import SyncConfig

@dataclass
class SyncMeasurement:
    backend: str           # "syncnet" | "offline"
    offset: int            # frames, + = audio late
    confidence: float      # SyncNet: Sync-C; offline: peak minus median of the curve
    speaking: bool         # enough evidence that the face speaks this audio
    trusted: bool          # the offset is unambiguous enough to act on
    reason: str = ""       # why not trusted ("" when trusted)
    margin: float = math.nan
    stability: float = math.nan
    quarters: float = math.nan


@dataclass
class SyncDecision:
    offset: int            # frames, > 0: audio late (measured before any correction)
    confidence: float
    keep: bool
    reason: str            # "" when kept, else "face not speaking" | "out of sync" | "sync ambiguous"
    corrected: bool        # kept with the audio delayed by -offset frames
    trusted: bool = True   # False: the offset is reported but never acted on
    trust_reason: str = "" # why the offset is not trusted
    backend: str = "offline"


def measure_offline(landmarks_px: np.ndarray, audio: np.ndarray, rate: int, fps: float,
                    cfg: SyncConfig) -> SyncMeasurement:
    """The offline measure on a clip's face landmarks (T, 478, 3) in pixels (NaN where no face)
    and its mono audio covering the same T frames."""
    r = measure_offset(mouth_features(landmarks_px), audio, rate, fps,
                       max_offset=cfg.max_offset, highpass_s=cfg.highpass_s, jackknife_s=1.0)
    speaking = r.confidence >= cfg.offline_min_confidence
    reasons = []
    if not r.margin >= cfg.offline_min_margin:
        reasons.append(f"second peak within {r.margin:.3f} of the best (< {cfg.offline_min_margin})")
    if not r.stability >= cfg.offline_min_stability:
        reasons.append(f"offset moves when one second is left out ({r.stability:.0%} agree, "
                       f"< {cfg.offline_min_stability:.0%})")
    if not r.quarters >= cfg.offline_min_quarters:
        reasons.append(f"offset moves when a quarter of the clip is left out ({r.quarters:.0%} agree, "
                       f"< {cfg.offline_min_quarters:.0%})")
    if abs(r.offset) >= cfg.max_offset:
        reasons.append("offset at the edge of the search range")
    return SyncMeasurement("offline", int(r.offset), float(r.confidence), bool(speaking),
                           not reasons, "; ".join(reasons), float(r.margin), float(r.stability),
                           float(r.quarters))


def measure_syncnet(net, frames: np.ndarray, boxes: np.ndarray, audio: np.ndarray, rate: int,
                    fps: float, cfg: SyncConfig) -> SyncMeasurement:
    """SyncNet's offset and confidence (eval's Sync-C) on RGB frames with per-frame face boxes."""
    from emo.media.syncnet import VSHIFT, measure_sync

    s = measure_sync(net, frames, fps, boxes, audio, rate)
    speaking = s.confidence >= cfg.syncnet_min_confidence
    edge = abs(s.offset) >= VSHIFT
    reason = "offset at the edge of SyncNet's search range" if edge else ""
    return SyncMeasurement("syncnet", int(s.offset), float(s.confidence), bool(speaking), not edge,
                           reason, distinct_peak_margin(-np.asarray(s.mean_dists)), math.nan)


def decide(m: SyncMeasurement, cfg: SyncConfig) -> SyncDecision:
    base = dict(offset=m.offset, confidence=m.confidence, trusted=m.trusted, trust_reason=m.reason,
                backend=m.backend)
    if not m.speaking:
        return SyncDecision(keep=False, reason="face not speaking", corrected=False, **base)
    if not m.trusted:
        if cfg.untrusted == "reject":
            return SyncDecision(keep=False, reason="sync ambiguous", corrected=False, **base)
        return SyncDecision(keep=True, reason="", corrected=False, **base)
    if abs(m.offset) > cfg.max_correctable:
        return SyncDecision(keep=False, reason="out of sync", corrected=False, **base)
    tolerance = max(cfg.tolerance, cfg.offline_tolerance) if m.backend == "offline" else cfg.tolerance
    return SyncDecision(keep=True, reason="", corrected=abs(m.offset) > tolerance, **base)


def check_sync(landmarks_px: np.ndarray, audio: np.ndarray, rate: int, fps: float,
               cfg: SyncConfig | None = None) -> SyncDecision:
    """The offline backend's decision on one clip (landmarks (T, 478, 3) in pixels, mono audio)."""
    cfg = cfg or SyncConfig()
    return decide(measure_offline(landmarks_px, audio, rate, fps, cfg), cfg)
