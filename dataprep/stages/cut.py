"""Stage 2: shot boundaries (PySceneDetect) and clips of EMO's length (3-12 s) inside shots.

The detector is fed frames by the shared decoding pass (`dataprep.decode`), so cutting costs no
decode of its own: only a colour-space conversion of a 256-pixel-wide frame.
"""
from __future__ import annotations

import hashlib
import re

import numpy as np

from ..config import CutConfig, DataprepConfig
from .common import Clip, VideoRecord, reject_row


class ShotDetector:
    """Frames in, cut frame indices out (a cut at i: frame i starts a new shot)."""

    def __init__(self, cfg: CutConfig, fps: float):
        from scenedetect import AdaptiveDetector, ContentDetector, FrameTimecode

        self._timecode = FrameTimecode
        self.fps = fps
        if cfg.detector == "content":
            self._detector = ContentDetector(threshold=cfg.threshold, min_scene_len=cfg.min_scene_len)
        elif cfg.detector == "adaptive":
            self._detector = AdaptiveDetector(adaptive_threshold=cfg.adaptive_threshold,
                                              min_scene_len=cfg.min_scene_len)
        else:
            raise ValueError(f"cut.detector must be 'content' or 'adaptive', not {cfg.detector!r}")
        self.cuts: list[int] = []
        self._last = None

    def _add(self, timecodes) -> None:
        self.cuts += [int(tc.frame_num) for tc in timecodes]

    def feed(self, index: int, bgr: np.ndarray) -> None:
        self._last = index
        self._add(self._detector.process_frame(self._timecode(index, fps=self.fps), bgr))

    def finish(self) -> list[int]:
        if self._last is not None:
            self._add(self._detector.post_process(self._timecode(self._last, fps=self.fps)))
        return sorted(set(c for c in self.cuts if c > 0))


def shots_from_cuts(cuts: list[int], n_frames: int) -> list[tuple[int, int]]:
    bounds = [0] + [c for c in cuts if 0 < c < n_frames] + [n_frames]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def split_shot(start: int, end: int, fps: float, cfg: CutConfig) -> list[tuple[int, int]]:
    """Split a shot into near-equal clips of about clip_s seconds, none longer than max_clip_s
    nor shorter than min_clip_s (a shot up to max_clip_s stays whole)."""
    n = end - start
    if n <= cfg.max_clip_s * fps:
        return [(start, end)]
    pieces = max(1, int(round(n / (cfg.clip_s * fps))))
    while n / pieces > cfg.max_clip_s * fps:
        pieces += 1
    while pieces > 1 and n / pieces < cfg.min_clip_s * fps:
        pieces -= 1
    edges = [start + int(round(i * n / pieces)) for i in range(pieces + 1)]
    return list(zip(edges[:-1], edges[1:]))


def clip_id_for(source_video: str, start_frame: int) -> str:
    """Stable, ASCII-only and unique: readable stem + hash of the relative path + start frame."""
    stem = re.sub(r"[^A-Za-z0-9]+", "_", source_video.rsplit("/", 1)[-1].rsplit(".", 1)[0]).strip("_")
    digest = hashlib.sha1(source_video.encode("utf-8")).hexdigest()[:8]
    return f"{stem[:40] or 'video'}-{digest}-{start_frame:06d}"


def cut(record: VideoRecord, cfg: DataprepConfig) -> VideoRecord:
    """Turn the scan's cuts into shots, reject short shots and split the rest into clips."""
    fps = record.info.fps
    record.shots = shots_from_cuts(record.scan.cuts, record.scan.n_frames)
    for start, end in record.shots:
        if (end - start) < cfg.cut.min_shot_s * fps:
            record.rejects.append(reject_row(
                record.source_video, "cut", "shot too short",
                f"{(end - start) / fps:.2f} s < {cfg.cut.min_shot_s} s", start / fps, end / fps))
            continue
        for a, b in split_shot(start, end, fps, cfg.cut):
            record.clips.append(Clip(clip_id_for(record.source_video, a), a, b, fps))
    return record
