"""Video reading, probing and writing through PyAV (which ships its own FFmpeg).

Frames are RGB ``uint8`` arrays of shape (H, W, 3), already turned upright when the container
carries rotation metadata. Writers are atomic: they write beside the target and rename, so a
killed process never leaves a half-written file under the final name.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import av
import numpy as np

from ..fileio import atomic_path


class MediaError(RuntimeError):
    """A file that cannot be used, with a short reason meant for a rejects table."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    width: int            # upright width (after rotation)
    height: int           # upright height (after rotation)
    fps: float
    n_frames: int         # counted from the container; estimated from duration when absent
    duration: float       # seconds
    rotation: int         # degrees, as stored in the container's display matrix
    video_codec: str
    has_audio: bool
    audio_rate: int | None
    audio_channels: int | None
    audio_codec: str | None
    audio_duration: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def _stream_duration(stream, container) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def frame_rotation(frame: av.VideoFrame) -> int:
    """Degrees of the frame's display matrix (PyAV exposes it per frame), 0, 90, 180 or 270."""
    return int(round(getattr(frame, "rotation", 0) or 0)) % 360


def upright(arr: np.ndarray, rotation: int) -> np.ndarray:
    """A decoded picture (H, W, ...) turned as its display matrix says."""
    # The display matrix rotates counter-clockwise by `rotation` degrees; np.rot90 does the same.
    return np.ascontiguousarray(np.rot90(arr, k=rotation // 90)) if rotation else arr


class FrameClock:
    """A video stream's frame numbering: frames counted from the file's first frame at the
    stream's average rate, so an index is the same however a range is reached (`iter_frames`,
    dataprep's scan and its clip reader all number frames with it)."""

    def __init__(self, stream):
        self.stream = stream
        self.fps = float(stream.average_rate or stream.guessed_rate)
        self.t0 = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0

    def index(self, frame: av.VideoFrame) -> int | None:
        """The frame's index, or None for a frame without a timestamp."""
        if frame.pts is None:
            return None
        return int(round((float(frame.pts * self.stream.time_base) - self.t0) * self.fps))

    def seek(self, container, seconds: float) -> None:
        """Seek to the keyframe at or before `seconds` after the first frame."""
        vs = self.stream
        container.seek(int(seconds / vs.time_base) + (vs.start_time or 0), stream=vs, backward=True)


def _container_rotation(container, stream) -> int:
    """Rotation from the first decoded frame's display matrix."""
    try:
        for frame in container.decode(stream):
            return frame_rotation(frame)
    except av.FFmpegError:
        return 0
    return 0


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read container metadata; raise MediaError with a reason when the file is unusable."""
    path = str(path)
    if not os.path.exists(path):
        raise MediaError("missing file")
    if os.path.getsize(path) == 0:
        raise MediaError("empty file")
    try:
        container = av.open(path)
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise MediaError(f"unreadable container: {type(exc).__name__}: {exc}".strip()) from None
    with container:
        if not container.streams.video:
            raise MediaError("no video stream")
        vs = container.streams.video[0]
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        if not rate or float(rate) <= 0:
            raise MediaError("video stream has no frame rate")
        fps = float(rate)
        duration = _stream_duration(vs, container)
        n_frames = int(vs.frames or 0)
        if n_frames <= 0 and duration:
            n_frames = int(round(duration * fps))
        if duration is None:
            duration = n_frames / fps if n_frames else 0.0
        width, height = vs.codec_context.width, vs.codec_context.height
        audio = container.streams.audio[0] if container.streams.audio else None
        audio_duration = _stream_duration(audio, container) if audio is not None else None
        rotation = _container_rotation(container, vs)
    if rotation in (90, 270):
        width, height = height, width
    if width <= 0 or height <= 0:
        raise MediaError("video stream has no frame size")
    return VideoInfo(
        path=path, width=width, height=height, fps=fps, n_frames=n_frames, duration=float(duration),
        rotation=rotation, video_codec=vs.codec_context.name, has_audio=audio is not None,
        audio_rate=audio.rate if audio is not None else None,
        audio_channels=audio.channels if audio is not None else None,
        audio_codec=audio.codec_context.name if audio is not None else None,
        audio_duration=audio_duration,
    )


def iter_frames(
    path: str | os.PathLike,
    start: float | None = None,
    end: float | None = None,
    stride: int = 1,
    threads: int = 0,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame_index, RGB frame) for frames with start <= t < end, every `stride`-th one.

    The index counts frames from the start of the file at the stream's average rate, so it is
    stable however the range is chosen. `threads=0` lets FFmpeg pick its decoder thread count.
    """
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise MediaError(f"unreadable container: {exc}") from None
    with container:
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        if threads:
            vs.codec_context.thread_count = threads
        clock = FrameClock(vs)
        fps = clock.fps
        if start:
            clock.seek(container, max(0.0, start - 1.0))
        try:
            for frame in container.decode(vs):
                index = clock.index(frame)
                if index is None:
                    continue
                if start is not None and index < int(round(start * fps)):
                    continue
                if end is not None and index >= int(round(end * fps)):
                    break
                if index % stride:
                    continue
                yield index, upright(frame.to_ndarray(format="rgb24"), frame_rotation(frame))
        except av.FFmpegError as exc:
            raise MediaError(f"decode error: {exc}") from None


def read_frames(path: str | os.PathLike, start: float | None = None, end: float | None = None,
                stride: int = 1) -> np.ndarray:
    """All frames in [start, end) as one (T, H, W, 3) uint8 array."""
    frames = [f for _, f in iter_frames(path, start, end, stride)]
    if not frames:
        raise MediaError("no decodable frames")
    return np.stack(frames)


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray] | np.ndarray,
    fps: float,
    audio: np.ndarray | None = None,
    audio_rate: int = 16000,
    crf: int = 18,
    codec: str = "libx264",
    audio_codec: str = "aac",
    rotation: int = 0,
) -> Path:
    """Encode RGB frames (and optional mono float audio in [-1, 1]) to an mp4, atomically.

    Frame sizes are rounded down to even numbers, as yuv420p requires.
    `rotation` writes a display matrix (used by tests that need rotated inputs).
    """
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            vs = None
            as_ = None
            if audio is not None:
                as_ = container.add_stream(audio_codec, rate=audio_rate, layout="mono")
            for rgb in frames:
                rgb = np.asarray(rgb, dtype=np.uint8)
                if vs is None:
                    h, w = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
                    vs = container.add_stream(codec, rate=rate)
                    vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
                    vs.options = {"crf": str(crf), "preset": "veryfast"} if codec == "libx264" else {}
                    if rotation:
                        vs.set_display_rotation(rotation)
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:h, :w]), format="rgb24")
                for packet in vs.encode(frame):
                    container.mux(packet)
            if vs is None:
                raise MediaError("no frames to write")
            for packet in vs.encode():
                container.mux(packet)
            if as_ is not None:
                _encode_audio(container, as_, audio, audio_rate)
    return path


def _encode_audio(container, stream, audio: np.ndarray, rate: int) -> None:
    samples = np.asarray(audio, dtype=np.float32).reshape(-1)
    frame_size = stream.codec_context.frame_size or 1024
    for i in range(0, len(samples), frame_size):
        chunk = np.clip(samples[i:i + frame_size], -1.0, 1.0)   # per chunk: no second copy of the track
        frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = i
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
