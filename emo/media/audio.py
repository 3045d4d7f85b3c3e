"""Audio reading and writing through PyAV: any container in, mono float32 at a chosen rate out."""
from __future__ import annotations

import os
import wave
from pathlib import Path

import av
import numpy as np

from .video import MediaError

SPEECH_RATE = 16000  # wav2vec2, silero-vad and resemblyzer all work at 16 kHz


def load_audio(path: str | os.PathLike, rate: int = SPEECH_RATE, start: float | None = None,
               end: float | None = None) -> np.ndarray:
    """Decode the first audio stream to mono float32 in [-1, 1] at `rate` Hz, cut to [start, end)."""
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise MediaError(f"unreadable container: {exc}") from None
    with container:
        if not container.streams.audio:
            raise MediaError("no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks = []
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.FFmpegError as exc:
            if not chunks:
                raise MediaError(f"audio decode error: {exc}") from None
    audio = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    i0 = int(round((start or 0.0) * rate))
    i1 = len(audio) if end is None else int(round(end * rate))
    return audio[i0:i1]


def save_wav(path: str | os.PathLike, audio: np.ndarray, rate: int = SPEECH_RATE) -> Path:
    """Write mono 16-bit PCM, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pcm = (np.clip(np.asarray(audio, np.float32), -1, 1) * 32767).astype("<i2")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    os.replace(tmp, path)
    return path


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
