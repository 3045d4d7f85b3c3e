"""One decoding pass that serves every per-frame consumer at the size it needs.

Cut detection wants a small frame of every frame: FFmpeg's scaler converts each decoded frame
straight to it (cheaper than a full-size RGB array first). Face analysis wants a medium frame of
every `stride`-th one: FFmpeg's unscaled colour conversion (its fast path) and an OpenCV resize
make it, for less than half the CPU of a second scaled conversion (measured 2.4 -> 1.0 ms a
frame on a 650x650 source: the scaler's cost grows with the output size, and 640 px is near the
source size). The cut detector's frames are unchanged, so are its cuts. Frames come out
upright (rotation metadata applied), indexed like `emo.media.iter_frames`.

The export decodes again only the kept clips' frames (`ClipFrameReader`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import av
import cv2
import numpy as np

from emo.media import MediaError
from emo.media.video import FrameClock, frame_rotation, upright


@dataclass
class ScaledFrame:
    index: int
    small_bgr: np.ndarray            # for the cut detector
    face_rgb: np.ndarray | None      # for the face analyser (every `stride`-th frame only)
    face_scale: float                # face_rgb pixels per source pixel


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def face_view(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A full-size RGB frame resized to the face analyser's (width, height): averaging pixels
    when it shrinks by 2 or more (no aliasing), bilinear otherwise (several times faster than
    OpenCV's area resize at non-integer ratios near 1)."""
    h, w = rgb.shape[:2]
    if (w, h) == size:
        return rgb
    interp = cv2.INTER_AREA if size[0] * 2 <= w else cv2.INTER_LINEAR
    return cv2.resize(rgb, size, interpolation=interp)


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
        clock = FrameClock(vs)
        sizes = None
        count = 0
        try:
            for frame in container.decode(vs):
                rotation = frame_rotation(frame)
                index = clock.index(frame)
                if index is None:
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
                    face = upright(face_view(frame.to_ndarray(format="rgb24"), (fw, fh)), rotation)
                yield ScaledFrame(index, upright(small, rotation), face, face_scale)
        except av.FFmpegError as exc:
            if count == 0:
                raise MediaError(f"decode error: {exc}") from None


class ClipFrameReader:
    """Upright RGB frames of a video's frame ranges [start, end), read one range after another
    from one open decoder, indexed like `emo.media.iter_frames` (a frame without a timestamp is
    skipped, as there).

    A range that starts at most `continue_s` after where decoding stands continues from there;
    any other is reached by a seek to the keyframe at or before its first frame (decoding
    restarts there), re-seeking earlier if a container's seek lands after it. Frames between
    ranges are decoded but not converted. H.264 decodes the same pixels either way (and with
    FFmpeg's frame threads), so the frames do not depend on the order of the ranges.
    """

    def __init__(self, path: str | os.PathLike, continue_s: float = 1.0):
        self.path = str(path)
        self.continue_s = continue_s
        self.decoded = 0          # frames decoded (converted or not), for profiling and tests
        self.seeks = 0
        self._container = None
        self._frames = None       # iterator of (index, av.VideoFrame) from the decoder
        self._next = None         # the first frame not yet handed out, (index, frame)

    def __enter__(self) -> "ClipFrameReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = self._frames = self._next = None

    def _open(self) -> None:
        try:
            self._container = av.open(self.path)
        except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
            raise MediaError(f"unreadable container: {exc}") from None
        vs = self._container.streams.video[0]
        vs.thread_type = "AUTO"
        self._clock = FrameClock(vs)

    def _decode(self):
        for frame in self._container.decode(self._clock.stream):
            self.decoded += 1
            index = self._clock.index(frame)
            if index is not None:
                yield index, frame

    def _pull(self):
        if self._next is not None:
            item, self._next = self._next, None
            return item
        return next(self._frames, None)

    def _seek(self, start: int) -> None:
        """Decode from the keyframe at or before frame `start` (or from the first frame)."""
        back = 0.0
        while True:
            t = max(0.0, start / self._clock.fps - back)
            self._clock.seek(self._container, t)
            self.seeks += 1
            self._frames = self._decode()
            self._next = next(self._frames, None)
            if t == 0.0 or self._next is None or self._next[0] <= start:
                return
            # The seek landed after the range (a keyframe between a frame whose timestamp rounds
            # up to `start` and start / fps, or a container whose seek is coarse): further back.
            back = max(1.0, 2 * back)

    def read(self, start: int, end: int) -> Iterator[tuple[int, np.ndarray]]:
        """(index, upright RGB frame) for the frames with start <= index < end."""
        try:
            if self._container is None:
                self._open()
                self._frames = self._decode()          # positioned at the first frame
                self._next = next(self._frames, None)
            # Continue only from a known next frame: after an early stop it is not known.
            ahead = self._next[0] if self._next is not None else None
            if ahead is None or not 0 <= start - ahead <= self.continue_s * self._clock.fps:
                self._seek(start)
            while (item := self._pull()) is not None:
                index, frame = item
                if index >= end:
                    self._next = item          # the next range may start here
                    return
                if index >= start:
                    yield index, upright(frame.to_ndarray(format="rgb24"), frame_rotation(frame))
        except av.FFmpegError as exc:
            self.close()                       # the next range starts afresh
            raise MediaError(f"decode error: {exc}") from None
