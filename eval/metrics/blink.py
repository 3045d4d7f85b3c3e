"""`blink_rate_error`: |blinks per minute (generated) - blinks per minute (ground truth)|.

A blink is a run of frames whose mean eyeBlinkLeft/Right blendshape exceeds 0.5, ended when it
drops under 0.35 (hysteresis, so one blink is not counted twice). Needs only MediaPipe.

A frame without a face is missing, not "eyes open": the eye state is unknown there, so a blink
whose onset or end falls in a gap is not counted, and the minutes are those of the frames with a
face. A clip whose generated video lost the face on too many frames gives no value (see
`eval.metrics.base.MIN_FACE_COVERAGE`).
"""
from __future__ import annotations

import numpy as np

from .base import FACE_PROTOCOL, ClipSample, Metric, faces_cover, sample_landmarks

BLINK = (9, 10)                    # eyeBlinkLeft, eyeBlinkRight in BLENDSHAPE_NAMES
BLINK_ON, BLINK_OFF = 0.5, 0.35


def count_blinks(scores: np.ndarray) -> int:
    """Blink onsets in a (T,) blink score series with hysteresis. NaN (no face) is unknown: it
    interrupts the series, and a run has to be seen open -> closed to count."""
    state, n = None, 0                 # None = unknown, False = open, True = closed
    for s in np.asarray(scores, np.float64):
        if not np.isfinite(s):
            state = None
        elif s > BLINK_ON:
            if state is False:
                n += 1
            state = True
        elif s < BLINK_OFF:
            state = False
        elif state is None:            # between the thresholds right after a gap: not yet known
            continue
    return n


def blink_rate(blendshapes: np.ndarray, fps: float) -> float:
    scores = blendshapes[:, list(BLINK)].mean(1)
    minutes = np.isfinite(scores).sum() / fps / 60.0
    return count_blinks(scores) / minutes if minutes > 0 else float("nan")


class BlinkRate(Metric):
    needs_mediapipe = True
    name = "blink_rate_error"
    direction = "lower"
    description = "|blinks per minute of generated - of ground truth| (eyeBlink blendshapes)"
    protocol_fields = {**FACE_PROTOCOL, "blink": f"mean eyeBlink blendshape > {BLINK_ON}, reopens < {BLINK_OFF}; "
                                                 "per minute of frames with a face"}

    def score_clip(self, sample: ClipSample) -> float:
        if not faces_cover(sample):
            return float("nan")
        gen = blink_rate(sample_landmarks(sample, "generated").blendshapes, sample.fps)
        gt = blink_rate(sample_landmarks(sample, "ground_truth").blendshapes, sample.fps)
        return abs(gen - gt)
