"""Frame strips and short videos for the report.

Every system is shown at the same ground-truth times: the strip's columns are ground-truth frame
indices, and a system's frame at each is found by the harness's own alignment rule
(eval.alignment), so the strips show exactly the frames that were scored side by side.

Videos are re-encoded small (thumbnail height, a few seconds) with sound: the system video's own
audio track when it has one (the shifted baseline carries its shifted audio), else the clip's.
"""
from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from emo.manifest import read_manifest
from emo.media import MediaError, load_audio, probe_video, read_frames, write_video
from eval.alignment import (aligned_length, centre_crop_to_aspect, nearest_generated, resample_indices,
                            resize_frames)
from eval.report.data import ReportData
from eval.results import resolve_video


@dataclass
class Strip:
    clip_id: str
    times_s: list[float]
    rows: list[tuple[str, bytes | None, str]]      # (system name, JPEG bytes or None, note)


@dataclass
class Clip:
    system: str
    clip_id: str
    mp4: bytes | None
    note: str = ""


def ground_truth_videos(data: ReportData) -> dict[str, Path]:
    """clip_id -> held-out clip video, from the dataset folder the results name (if still there)."""
    path = Path(data.dataset.get("path", ""))
    try:
        df = read_manifest(path, split=data.dataset.get("split"), check_files=False)
    except Exception:  # moved or deleted dataset: the report still builds, without ground-truth media
        return {}
    return {r.clip_id: path / r.clip_path for r in df.itertuples() if (path / r.clip_path).is_file()}


def shown_clips(data: ReportData, k: int) -> list[str]:
    """The first k clips every system was scored on, in the first system's order."""
    if not data.systems or k <= 0:
        return []
    common = set.intersection(*(set(s.doc["per_clip"]) for s in data.systems))
    return [c for c in data.systems[0].doc["per_clip"] if c in common][:k]


def _shown_systems(data: ReportData, with_sound: bool):
    """Systems whose media add something: the ground_truth baseline is the clip itself, and the
    audio-shifted baseline has the clip's frames (so it is shown only where sound is played)."""
    out = []
    for s in data.systems:
        if s.is_baseline and s.name.startswith("ground_truth"):
            continue
        if s.is_baseline and s.name.startswith("audio_shifted") and not with_sound:
            continue
        out.append(s)
    return out


def _thumbs(frames: np.ndarray, gt_hw: tuple[int, int], height: int) -> np.ndarray:
    width = max(2, int(round(height * gt_hw[1] / gt_hw[0])) // 2 * 2)
    return resize_frames(centre_crop_to_aspect(frames, *gt_hw), height, width)


def _jpeg(rgb: np.ndarray, quality: int = 80) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _frames_at(video: Path, gt_fps: float, gt_indices: np.ndarray) -> np.ndarray:
    """The system's frames at the given ground-truth frame indices (alignment rule 1)."""
    info = probe_video(video)
    frames = read_frames(video)
    return frames[nearest_generated(gt_indices, gt_fps, info.fps, len(frames))]


def frame_strips(data: ReportData, k: int = 3, n_times: int = 6, height: int = 96) -> list[Strip]:
    gt_videos = ground_truth_videos(data)
    strips = []
    for clip_id in shown_clips(data, k):
        records = [s.doc["alignment"]["clips"].get(clip_id) for s in data.systems]
        records = [r for r in records if r]
        if not records:
            continue
        gt_fps = records[0]["gt_fps"]
        gt_hw = tuple(records[0]["gt_size"])
        n = min(r["frames_used"] for r in records)
        idx = np.unique(np.linspace(0, n - 1, n_times).round().astype(int))
        rows = []
        sources = [("ground truth (held-out clip)", gt_videos.get(clip_id))]
        sources += [(s.name, resolve_video(s.doc, s.json_path, clip_id)) for s in _shown_systems(data, False)]
        for label, video in sources:
            if video is None:
                rows.append((label, None, "video not found"))
                continue
            try:
                frames = _frames_at(video, gt_fps, idx)
            except (MediaError, OSError) as exc:
                rows.append((label, None, f"unreadable: {exc}"))
                continue
            rows.append((label, _jpeg(np.concatenate(list(_thumbs(frames, gt_hw, height)), axis=1)), ""))
        strips.append(Strip(clip_id, [round(float(i) / gt_fps, 2) for i in idx], rows))
    return strips


def small_video(video: Path, gt_fps: float, gt_hw: tuple[int, int], fallback_audio: Path | None,
                height: int = 128, max_seconds: float = 4.0) -> bytes:
    """A short re-encoded mp4 (ground-truth clock and aspect, thumbnail size) with sound."""
    info = probe_video(video)
    frames = read_frames(video, end=max_seconds + 1.0 / info.fps)
    n = aligned_length(int(round(max_seconds * gt_fps)), gt_fps, len(frames), info.fps)
    frames = _thumbs(frames[resample_indices(n, gt_fps, info.fps, len(frames))], gt_hw, height)
    audio_src = video if info.has_audio else fallback_audio
    audio = None
    if audio_src is not None:
        try:
            audio = load_audio(audio_src, rate=16000, end=n / gt_fps)
        except MediaError:
            audio = None
    fd, tmp = tempfile.mkstemp(suffix=".mp4")
    os.close(fd)
    try:
        write_video(tmp, frames, gt_fps, audio=audio, audio_rate=16000, crf=30)
        return Path(tmp).read_bytes()
    finally:
        Path(tmp).unlink(missing_ok=True)


def system_videos(data: ReportData, k: int = 1, height: int = 128, max_seconds: float = 4.0) -> list[Clip]:
    """For the first k shown clips: the ground truth and each system, small, with sound."""
    gt_videos = ground_truth_videos(data)
    out = []
    for clip_id in shown_clips(data, k):
        rec = next((s.doc["alignment"]["clips"][clip_id] for s in data.systems
                    if clip_id in s.doc["alignment"]["clips"]), None)
        if rec is None:
            continue
        gt_fps, gt_hw = rec["gt_fps"], tuple(rec["gt_size"])
        gt = gt_videos.get(clip_id)
        sources = [("ground truth (held-out clip)", gt)]
        sources += [(s.name, resolve_video(s.doc, s.json_path, clip_id)) for s in _shown_systems(data, True)]
        for label, video in sources:
            if video is None:
                out.append(Clip(label, clip_id, None, "video not found"))
                continue
            try:
                out.append(Clip(label, clip_id, small_video(video, gt_fps, gt_hw, gt, height, max_seconds)))
            except (MediaError, OSError) as exc:
                out.append(Clip(label, clip_id, None, f"unreadable: {exc}"))
    return out
