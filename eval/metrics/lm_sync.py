"""`lm_sync`: audio-video offset and confidence of the generated video from its mouth landmarks and
the speech envelope, with `emo.media.lipsync.measure_offset` (the measure dataprep uses to accept
clips; + = audio late). Outputs `lm_sync_offset_abs` (|frames|, lower better) and
`lm_sync_confidence` (peak minus median correlation, higher better). Needs only MediaPipe.
"""
from __future__ import annotations

import numpy as np

from .base import FACE_PROTOCOL, ClipSample, Metric, faces_cover, sample_landmarks


class LandmarkSync(Metric):
    needs_mediapipe = True
    name = "lm_sync"
    direction = "higher"
    directions = {"lm_sync_offset_abs": "lower", "lm_sync_confidence": "higher"}
    description = "audio-video offset |frames| and confidence from mouth landmarks vs speech envelope (dataprep's measure)"

    def __init__(self, weights_dir=None, device="cpu", max_offset: int = 15):
        super().__init__(weights_dir, device)
        self.max_offset = int(max_offset)

    protocol_fields = {**FACE_PROTOCOL, "mouth": "emo.media.lipsync mouth features vs speech envelope"}

    def settings(self) -> dict:
        return {"max_offset": self.max_offset}

    def measure(self, sample: ClipSample, which: str = "generated"):
        from emo.media.lipsync import measure_offset, mouth_features
        mouth = mouth_features(sample_landmarks(sample, which).landmarks)
        return measure_offset(mouth, sample.audio, sample.audio_rate, sample.fps, max_offset=self.max_offset)

    def score_clip(self, sample: ClipSample) -> dict:
        if not faces_cover(sample):
            return {"lm_sync_offset_abs": float("nan"), "lm_sync_confidence": float("nan")}
        result = self.measure(sample)
        if not np.isfinite(result.curve).any():
            # No face tracked long enough to correlate: no measurement, not "offset 0, confidence 0".
            return {"lm_sync_offset_abs": float("nan"), "lm_sync_confidence": float("nan")}
        return {"lm_sync_offset_abs": float(abs(result.offset)), "lm_sync_confidence": float(result.confidence)}
