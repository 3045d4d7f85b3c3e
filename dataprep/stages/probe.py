"""Stage 1: is the file a usable video with sound? Keeps the VideoInfo and the whole audio."""
from __future__ import annotations

from emo.media import MediaError, load_audio, probe_video
from emo.media.audio import SPEECH_RATE

from ..config import DataprepConfig
from .common import VideoRecord

# Words of MediaError messages -> the stable reasons of docs/INTERFACES.md.
_KNOWN = ("missing file", "empty file", "unreadable container", "no video stream",
          "no audio stream", "too few frames", "decode error")


def _reason(message: str) -> str:
    for reason in _KNOWN:
        if message.startswith(reason):
            return reason
    if "decode" in message:
        return "decode error"
    return "unreadable container"


def probe(record: VideoRecord, cfg: DataprepConfig) -> VideoRecord:
    try:
        info = probe_video(record.path)
    except MediaError as exc:
        return record.reject_video("probe", _reason(str(exc)), str(exc))
    record.info = info
    if not info.has_audio:
        return record.reject_video("probe", "no audio stream", "")
    if info.n_frames < cfg.probe.min_frames:
        return record.reject_video("probe", "too few frames",
                                   f"{info.n_frames} frames < {cfg.probe.min_frames}")
    try:
        record.audio = load_audio(record.path, SPEECH_RATE)
    except MediaError as exc:
        return record.reject_video("probe", "decode error", f"audio: {exc}")
    record.audio_rate = SPEECH_RATE
    if len(record.audio) == 0:
        return record.reject_video("probe", "decode error", "audio stream has no samples")
    return record
