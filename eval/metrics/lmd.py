"""`lmd`: mouth landmark distance to the ground truth.

The 40 MediaPipe lip points of each side are centred on their own centroid (head translation is
not a mouth error) and divided by that frame's outer-eye-corner distance (face size); LMD is the
mean point distance over points and frames with a face on both sides, in inter-ocular distances.
"""
from __future__ import annotations

import numpy as np

from .base import FACE_PROTOCOL, ClipSample, Metric, faces_cover, finite_mean, sample_landmarks

LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185,
        78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
EYE_OUTER = (33, 263)


def mouth_shape(landmarks: np.ndarray) -> np.ndarray:
    """(T, 478, 3) -> (T, 40, 2) lip points, centred and divided by the inter-ocular distance."""
    lips = landmarks[:, LIPS, :2].astype(np.float64)
    iod = np.linalg.norm(landmarks[:, EYE_OUTER[0], :2] - landmarks[:, EYE_OUTER[1], :2], axis=-1)
    iod = np.where(iod > 1e-6, iod, np.nan)
    return (lips - lips.mean(1, keepdims=True)) / iod[:, None, None]


def landmark_distance(gen_landmarks: np.ndarray, gt_landmarks: np.ndarray) -> float:
    d = np.linalg.norm(mouth_shape(gen_landmarks) - mouth_shape(gt_landmarks), axis=-1).mean(1)
    return finite_mean(d)


class LMD(Metric):
    needs_mediapipe = True
    name = "lmd"
    direction = "lower"
    description = "mouth landmark distance to ground truth (lip shape, centred, in inter-ocular distances)"
    protocol_fields = {**FACE_PROTOCOL, "points": "40 MediaPipe lip points, centred, / outer-eye-corner distance"}

    def score_clip(self, sample: ClipSample) -> float:
        if not faces_cover(sample):
            return float("nan")
        return landmark_distance(sample_landmarks(sample, "generated").landmarks,
                                 sample_landmarks(sample, "ground_truth").landmarks)
