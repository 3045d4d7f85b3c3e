"""The face-region mask at inference, matched to the one training used.

Training's mask is the union of a clip's per-frame face boxes over 3-12 s (the manifest's
`face_box`), which is larger than any single frame's box because the head moves; inference has one
portrait and its single box. A mask that is tighter at inference than in training asks the face
locator for a face smaller and stiller than any it learned from. So the training loop measures,
over the training clips, how much larger the union is than a single frame's box (`box_scale`,
width and height separately: the median over clips of union size / the clip's median per-frame
box size), stores it in every checkpoint's meta.json (`face_mask_scale`), and the pipeline expands
the portrait's box by it about its centre (`inference_face_box`), unless overridden.
"""
from __future__ import annotations

import numpy as np

META_KEY = "face_mask_scale"


def clip_box_scale(boxes: np.ndarray, union: np.ndarray) -> tuple[float, float] | None:
    """(union width / median frame width, union height / median frame height) of one clip, from
    its per-frame boxes (T, 4) and union box (4,), x0 y0 x1 y1; None when they are not usable
    (no detected frame, an empty box)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    union = np.asarray(union, np.float64).reshape(4)
    ok = np.all(np.isfinite(boxes), 1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if not ok.any() or not np.all(np.isfinite(union)) or union[2] <= union[0] or union[3] <= union[1]:
        return None
    w = np.median(boxes[ok, 2] - boxes[ok, 0])
    h = np.median(boxes[ok, 3] - boxes[ok, 1])
    return float((union[2] - union[0]) / w), float((union[3] - union[1]) / h)


def box_scale(per_clip: list[tuple[float, float] | None]) -> dict | None:
    """The median over clips of `clip_box_scale` (what a checkpoint stores), or None if no clip
    had usable boxes."""
    good = np.array([s for s in per_clip if s is not None], np.float64).reshape(-1, 2)
    if not len(good):
        return None
    return {"x": float(np.median(good[:, 0])), "y": float(np.median(good[:, 1])), "clips": int(len(good)),
            "rule": "median over training clips of union box size / median per-frame box size"}


def expand_box(box: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """Box x0 y0 x1 y1 in [0, 1] scaled by (sx, sy) about its centre, clipped to the image."""
    box = np.asarray(box, np.float32).reshape(4)
    sx, sy = scale
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hw, hh = (box[2] - box[0]) / 2 * sx, (box[3] - box[1]) / 2 * sy
    return np.clip(np.array([cx - hw, cy - hh, cx + hw, cy + hh], np.float32), 0.0, 1.0)


def inference_face_box(box: np.ndarray, model=None, scale: float | tuple[float, float] | None = None) -> np.ndarray:
    """The portrait's face box as the mask should cover it: expanded by `scale` when given (the
    override: a number or (sx, sy); 1 keeps the single box), else by the scale the model's
    checkpoint measured on its training set (`model.face_mask_scale`), else unchanged."""
    if scale is None:
        scale = getattr(model, "face_mask_scale", None)
    if scale is None:
        return np.asarray(box, np.float32).reshape(4)
    if isinstance(scale, dict):
        scale = (scale["x"], scale["y"])
    elif np.isscalar(scale):
        scale = (float(scale), float(scale))
    if min(scale) <= 0:
        raise ValueError(f"face mask scale must be positive, got {scale}")
    return expand_box(box, tuple(scale))
