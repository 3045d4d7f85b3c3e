"""One decoding pass that serves every per-frame consumer at the size it needs.

Cut detection wants small frames, face analysis medium ones; converting each decoded frame
straight to those sizes (FFmpeg's scaler) is much cheaper than making full-size RGB arrays
first. Frames come out upright (rotation metadata applied), indexed like
`emo.media.iter_frames`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import av
import numpy as np

from emo.media import MediaError


@dataclass
class ScaledFrame:
    index: int
    small_bgr: np.ndarray            # for the cut detector
    face_rgb: np.ndarray | None      # for the face analyser (every `stride`-th frame only)
    face_scale: float                # face_rgb pixels per source pixel


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def _upright(arr: np.ndarray, rotation: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(arr, k=rotation // 90)) if rotation else arr


def iter_scaled(path: str | os.PathLike, small_width: int = 256, face_max_side: int = 640,
                stride: int = 1) -> Iterator[ScaledFrame]:
    """Decode every frame once; yield a small BGR copy of each and an RGB copy of every
    `stride`-th one for face analysis. A decode error after some frames ends the stream (the
    frames before it stay usable); one before any frame raises MediaError("decode error")."""
    try:
        container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise MediaError(f"unreadable container: {exc}") from None
    with container:
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        fps = float(vs.average_rate or vs.guessed_rate)
        t0 = float(vs.start_time * vs.time_base) if vs.start_time is not None else 0.0
        sizes = None
        count = 0
        try:
            for frame in container.decode(vs):
                rotation = int(round(getattr(frame, "rotation", 0) or 0)) % 360
                if frame.pts is not None:
                    index = int(round((float(frame.pts * vs.time_base) - t0) * fps))
                else:
                    index = count
                count += 1
                if sizes is None:
                    w, h = frame.width, frame.height
                    up_w = h if rotation in (90, 270) else w
                    small_scale = small_width / up_w
                    face_scale = min(1.0, face_max_side / max(w, h))
                    fw = _even(w * face_scale)
                    sizes = ((_even(w * small_scale), _even(h * small_scale)),
                             (fw, _even(h * face_scale)), fw / w)
                (sw, sh), (fw, fh), face_scale = sizes
                small = frame.reformat(width=sw, height=sh, format="bgr24").to_ndarray()
                face = None
                if index % stride == 0:
                    face = _upright(frame.reformat(width=fw, height=fh, format="rgb24").to_ndarray(), rotation)
                yield ScaledFrame(index, _upright(small, rotation), face, face_scale)
        except av.FFmpegError as exc:
            if count == 0:
                raise MediaError(f"decode error: {exc}") from None
