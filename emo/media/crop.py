"""Square face crops: one rule shared by dataset preparation, inference and evaluation."""
from __future__ import annotations

import cv2
import numpy as np

# The crop side is this many times the larger side of the landmark box: enough to include hair,
# chin and some head motion, as in EMO's face-centred training crops.
CROP_SCALE = 1.8


def square_around(box: np.ndarray, scale: float = CROP_SCALE) -> np.ndarray:
    """(x0, y0, x1, y1) box -> square (cx, cy, side) centred on it, `scale` times its larger side."""
    x0, y0, x1, y1 = [float(v) for v in box]
    side = max(x1 - x0, y1 - y0) * scale
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2, side], dtype=np.float32)


def crop_square(frame: np.ndarray, square: np.ndarray, size: int) -> np.ndarray:
    """Cut the square (cx, cy, side) out of the frame and resize it to size x size.

    Parts outside the frame are filled by replicating the border, so a face near the edge is
    not shifted off-centre.
    """
    cx, cy, side = [float(v) for v in square]
    x0, y0 = cx - side / 2, cy - side / 2
    scale = size / side
    # One affine warp does the crop, the padding and the resize together.
    m = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], dtype=np.float32)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(frame, m, (size, size), flags=interp, borderMode=cv2.BORDER_REPLICATE)


def box_in_crop(box: np.ndarray, square: np.ndarray, size: int) -> np.ndarray:
    """Map a box from frame pixels into the pixels of the crop made by crop_square."""
    cx, cy, side = [float(v) for v in square]
    scale = size / side
    x0, y0 = cx - side / 2, cy - side / 2
    b = np.asarray(box, dtype=np.float32)
    return np.array([(b[0] - x0) * scale, (b[1] - y0) * scale,
                     (b[2] - x0) * scale, (b[3] - y0) * scale], dtype=np.float32)
