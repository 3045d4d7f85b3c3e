"""Head motion against the ground truth (MediaPipe pose): `head_pose_range_error`, the mean over
yaw, pitch, roll of |range(generated) - range(GT)| in degrees (range = max - min over the clip),
and `head_speed_w1`, the Wasserstein-1 distance between the per-frame head rotation speeds
(degrees per frame, emo.media.pose.rotation_speed) of generated and GT.
"""
from __future__ import annotations

import numpy as np

from .base import FACE_PROTOCOL, ClipSample, Metric, faces_cover, finite_mean, sample_landmarks


def pose_range(pose: np.ndarray) -> np.ndarray:
    ok = np.isfinite(pose).all(1)
    return pose[ok].max(0) - pose[ok].min(0) if ok.sum() >= 2 else np.full(3, np.nan)


def head_speeds(rotations: np.ndarray) -> np.ndarray:
    from emo.media.pose import rotation_speed
    speeds = rotation_speed(rotations)
    return speeds[np.isfinite(speeds)]


class HeadPose(Metric):
    needs_mediapipe = True
    name = "head_pose_range_error"
    direction = "lower"
    directions = {"head_pose_range_error": "lower", "head_speed_w1": "lower"}
    description = "head motion vs ground truth: |pose range difference| (deg) and speed distribution distance (deg/frame)"

    protocol_fields = {**FACE_PROTOCOL, "pose": "MediaPipe facial transformation matrix -> yaw, pitch, roll"}

    def score_clip(self, sample: ClipSample) -> dict:
        from scipy.stats import wasserstein_distance
        if not faces_cover(sample):
            return {"head_pose_range_error": float("nan"), "head_speed_w1": float("nan")}
        gen, gt = sample_landmarks(sample, "generated"), sample_landmarks(sample, "ground_truth")
        range_err = finite_mean(np.abs(pose_range(gen.pose) - pose_range(gt.pose)))
        sg, st = head_speeds(gen.rotations), head_speeds(gt.rotations)
        w1 = float(wasserstein_distance(sg, st)) if len(sg) and len(st) else float("nan")
        return {"head_pose_range_error": range_err, "head_speed_w1": w1}
