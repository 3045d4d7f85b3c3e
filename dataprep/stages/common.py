"""The records that flow through the stages, and the reject helper every stage uses.

A `VideoRecord` is one source video; its `clips` are the candidate segments. A stage is a plain
function `step(record, cfg) -> record` that fills fields in or marks the video or a clip as
rejected; it never drops anything silently.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Turn:
    """One speaker turn in seconds of the source audio; ``speaker`` is a label local to the file
    (written by either diarization backend, read by the speech stage)."""
    start: float
    end: float
    speaker: str

    @property
    def duration(self) -> float:
        return self.end - self.start


class StageReject(Exception):
    """Raised inside a stage helper to reject the current video or clip with a reason."""

    def __init__(self, stage: str, reason: str, detail: str = ""):
        super().__init__(f"{stage}: {reason} {detail}".strip())
        self.stage, self.reason, self.detail = stage, reason, detail


@dataclass
class Clip:
    clip_id: str
    start_frame: int                  # inclusive, source frame index
    end_frame: int                    # exclusive
    fps: float
    reject: dict | None = None        # REJECTS_SCHEMA row once rejected
    track: object | None = None       # faces.FaceTrack
    values: dict = field(default_factory=dict)   # manifest columns filled by the stages
    audio_delay: int = 0              # frames the exported audio is delayed (sync correction: -offset)

    @property
    def start_s(self) -> float:
        return self.start_frame / self.fps

    @property
    def end_s(self) -> float:
        return self.end_frame / self.fps

    @property
    def n_frames(self) -> int:
        return self.end_frame - self.start_frame


@dataclass
class VideoRecord:
    source_video: str                 # relative to the raw folder
    path: str                         # absolute path, for reading
    out_dir: str                      # the dataset folder
    info: object | None = None        # emo.media.VideoInfo
    audio: np.ndarray | None = None   # whole-video audio, 16 kHz mono
    audio_rate: int = 16000
    turns: list | None = None         # diarization turns of the whole audio (None: not run)
    scan: object | None = None        # the decode pass: cuts and face observations
    shots: list = field(default_factory=list)     # (start_frame, end_frame)
    clips: list = field(default_factory=list)
    rejects: list = field(default_factory=list)   # whole-video and shot rejects (clip rejects live on clips)
    rejected: bool = False
    notes: dict = field(default_factory=dict)     # per-video facts for stats.json

    def reject_video(self, stage: str, reason: str, detail: str = "") -> "VideoRecord":
        self.rejects.append(reject_row(self.source_video, stage, reason, detail))
        self.rejected = True
        return self

    def live_clips(self) -> list[Clip]:
        return [c for c in self.clips if c.reject is None]


def reject_row(source_video: str, stage: str, reason: str, detail: str = "",
               start: float = math.nan, end: float = math.nan, clip_id: str = "") -> dict:
    return {"source_video": source_video, "stage": stage, "reason": reason, "detail": str(detail),
            "source_start": float(start), "source_end": float(end), "clip_id": clip_id}


def reject_clip(record: VideoRecord, clip: Clip, stage: str, reason: str, detail: str = "") -> None:
    clip.reject = reject_row(record.source_video, stage, reason, detail, clip.start_s, clip.end_s,
                             clip.clip_id)
