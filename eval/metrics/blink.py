"""`blink_rate_error`: |blinks per minute (generated) - blinks per minute (ground truth)|.

A blink is a run of frames whose mean eyeBlinkLeft/Right blendshape exceeds 0.5, ended when it
drops under 0.35 (hysteresis, so one blink is not counted twice). Needs only MediaPipe.
"""
from __future__ import annotations

import numpy as np

from .base import ClipSample, Metric, sample_landmarks

BLINK = (9, 10)                    # eyeBlinkLeft, eyeBlinkRight in BLENDSHAPE_NAMES
BLINK_ON, BLINK_OFF = 0.5, 0.35


def count_blinks(scores: np.ndarray) -> int:
    """Blink onsets in a (T,) blink score series with hysteresis; NaN (no face) counts as open."""
    closed, n = False, 0
    for s in np.nan_to_num(np.asarray(scores, np.float64), nan=0.0):
        if not closed and s > BLINK_ON:
            closed, n = True, n + 1
        elif closed and s < BLINK_OFF:
            closed = False
    return n


def blink_rate(blendshapes: np.ndarray, fps: float) -> float:
    minutes = len(blendshapes) / fps / 60.0
    return count_blinks(blendshapes[:, list(BLINK)].mean(1)) / minutes if minutes > 0 else float("nan")


class BlinkRate(Metric):
    needs_mediapipe = True
    name = "blink_rate_error"
    direction = "lower"
    description = "|blinks per minute of generated - of ground truth| (eyeBlink blendshapes)"

    def score_clip(self, sample: ClipSample) -> float:
        gen = blink_rate(sample_landmarks(sample, "generated").blendshapes, sample.fps)
        gt = blink_rate(sample_landmarks(sample, "ground_truth").blendshapes, sample.fps)
        return abs(gen - gt)
