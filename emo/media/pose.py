"""Head pose from MediaPipe's facial transformation matrix, and head rotation speed.

Angles are in degrees. MediaPipe's canonical face looks along +z with +y up and +x to the
subject's left in the image; we decompose R = Rz(roll) @ Ry(yaw) @ Rx(pitch).
"""
from __future__ import annotations

import numpy as np


def rotation_to_euler(rotation: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 3) array of (yaw, pitch, roll) in degrees."""
    r = np.asarray(rotation, dtype=np.float64)
    yaw = np.arcsin(np.clip(-r[..., 2, 0], -1.0, 1.0))
    pitch = np.arctan2(r[..., 2, 1], r[..., 2, 2])
    roll = np.arctan2(r[..., 1, 0], r[..., 0, 0])
    return np.degrees(np.stack([yaw, pitch, roll], axis=-1))


def euler_to_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Inverse of rotation_to_euler for one (yaw, pitch, roll) in degrees."""
    y, p, r = np.radians([yaw, pitch, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def rotation_speed(rotations: np.ndarray) -> np.ndarray:
    """Head rotation speed per frame, in degrees per frame, from (T, 3, 3) rotations.

    The speed of frame t is the geodesic angle between the rotations of frames t-1 and t+1,
    halved (a central difference), with one-sided differences at the ends. This is what EMO's
    speed layers are trained on. NaN rotations (frames with no face) give NaN speeds.
    """
    r = np.asarray(rotations, dtype=np.float64)
    t = len(r)
    if t < 2:
        return np.zeros(t, np.float32)

    def angle(a, b):
        rel = np.einsum("...ji,...jk->...ik", a, b)
        cos = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
        return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))

    step = angle(r[:-1], r[1:])              # between t and t+1
    speed = np.empty(t, np.float64)
    speed[0], speed[-1] = step[0], step[-1]
    if t > 2:
        speed[1:-1] = angle(r[:-2], r[2:]) / 2.0
    return speed.astype(np.float32)
