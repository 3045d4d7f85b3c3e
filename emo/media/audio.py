"""Audio reading and writing through PyAV: any container in, mono float32 at a chosen rate out.

Clock: sample 0 of `load_audio` is the presentation time of the video's first frame (the time
`emo.media.video.iter_frames` calls 0), so audio and frames are read on the players' clock.
Sign convention of audio-video offsets across the toolkit: ``offset > 0`` = the AUDIO IS LATE by
that many video frames; `shift_audio(audio, rate, fps, k)` makes audio k frames later (k < 0:
earlier), so a measured offset k is undone by `shift_audio(..., -k)`.
"""
from __future__ import annotations

import os
import wave
from pathlib import Path

import av
import numpy as np

from ..fileio import atomic_path
from .video import MediaError

SPEECH_RATE = 16000  # wav2vec2, silero-vad and resemblyzer all work at 16 kHz
GAP_TOLERANCE_S = 0.005  # timestamp jumps shorter than this are jitter, not missing audio


def _clock_origin(container, audio_stream) -> float | None:
    """Seconds on the container clock that the decoded audio is aligned to: the video stream's
    start time when there is a video stream (players start the picture there), else None."""
    if container.streams.video:
        vs = container.streams.video[0]
        if vs.start_time is not None and vs.time_base is not None:
            return float(vs.start_time * vs.time_base)
        return 0.0
    return None


def load_audio(path: str | os.PathLike, rate: int = SPEECH_RATE, start: float | None = None,
               end: float | None = None) -> np.ndarray:
    """Decode the first audio stream to mono float32 in [-1, 1] at `rate` Hz, cut to [start, end).

    Samples are placed by their presentation timestamps: audio that starts after the video (a
    stream start time, an edit list's empty edit, a leading gap) is preceded by silence, audio
    that starts before it is cut, and gaps inside the stream are filled with silence, so that
    sample i plays at i / rate seconds after the video's first frame. An audio-only file starts
    at its first sample."""
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise MediaError(f"unreadable container: {exc}") from None
    with container:
        if not container.streams.audio:
            raise MediaError("no audio stream")
        stream = container.streams.audio[0]
        origin = _clock_origin(container, stream)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        # Samples gather in one growing buffer (bytearray grows in place and becomes the array
        # without a copy): a list of chunks concatenated at the end held a long track twice.
        samples, gaps = bytearray(), []    # gaps: (seconds after the first frame, length in seconds)
        first_t = cursor = None
        try:
            for frame in container.decode(stream):
                t = frame.time
                if t is not None:
                    if first_t is None:
                        first_t = cursor = t
                    elif t - cursor > GAP_TOLERANCE_S:
                        gaps.append((cursor - first_t, t - cursor))
                        cursor = t
                if cursor is not None and frame.sample_rate:
                    cursor += frame.samples / frame.sample_rate
                for out in resampler.resample(frame):
                    samples += out.to_ndarray().astype(np.float32, copy=False).tobytes()
            for out in resampler.resample(None):
                samples += out.to_ndarray().astype(np.float32, copy=False).tobytes()
        except av.FFmpegError as exc:
            if not samples:
                raise MediaError(f"audio decode error: {exc}") from None
    audio = np.frombuffer(samples, dtype=np.float32) if samples else np.zeros(0, np.float32)
    for at, length in reversed(gaps):
        i = min(len(audio), int(round(at * rate)))
        audio = np.concatenate([audio[:i], np.zeros(int(round(length * rate)), np.float32), audio[i:]])
    if origin is not None and first_t is not None:
        lead = int(round((first_t - origin) * rate))
        audio = np.concatenate([np.zeros(lead, np.float32), audio]) if lead > 0 else audio[-lead:]
    i0 = int(round((start or 0.0) * rate))
    i1 = len(audio) if end is None else int(round(end * rate))
    return audio[i0:i1]


def shift_audio(audio: np.ndarray, rate: int, fps: float, frames: int) -> np.ndarray:
    """The audio made `frames` video frames LATER (frames < 0: earlier), same length.

    Delaying pads silence at the start and drops the tail; advancing drops the start and pads
    silence at the end. With the toolkit's convention (offset > 0 = audio late), audio measured
    `k` frames late is put back in sync by ``shift_audio(audio, rate, fps, -k)``."""
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 1:
        raise ValueError(f"shift_audio expects mono (n,), got {audio.shape}")
    n = int(round(abs(frames) * rate / fps))
    if n == 0:
        return audio.copy()
    out = np.zeros_like(audio)
    if n >= len(audio):
        return out
    if frames > 0:
        out[n:] = audio[:-n]
    else:
        out[:-n] = audio[n:]
    return out


def save_wav(path: str | os.PathLike, audio: np.ndarray, rate: int = SPEECH_RATE) -> Path:
    """Write mono 16-bit PCM, atomically."""
    pcm = (np.clip(np.asarray(audio, np.float32), -1, 1) * 32767).astype("<i2")
    with atomic_path(path) as tmp, wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return Path(path)


def frame_envelope(audio: np.ndarray, rate: int, fps: float, n_frames: int | None = None) -> np.ndarray:
    """Log RMS energy of the audio in windows centred on each video frame (one value per frame)."""
    hop = rate / fps
    n = n_frames if n_frames is not None else int(len(audio) / hop)
    win = int(round(hop))
    out = np.full(n, -10.0, np.float32)
    for i in range(n):
        c = int(round((i + 0.5) * hop))
        seg = audio[max(0, c - win):c + win]
        if len(seg):
            out[i] = np.log(np.sqrt(np.mean(seg.astype(np.float64) ** 2)) + 1e-5)
    return out
