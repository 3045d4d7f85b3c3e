"""Stage 3: one face track per clip from MediaPipe observations, its labels and its statistics.

The scan analyses every `stride`-th frame; the track interpolates landmarks, blendshapes, pose
and boxes linearly in between (faces move little in 1/12 s, and the landmarker costs ~10 ms a
frame on CPU, several times the decode). Decisions per clip: "no face", "face too small",
"multiple faces", "face lost" (a long gap or a jump to another face).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from emo.media import read_frames
from emo.media.pose import euler_to_rotation, rotation_speed

from ..config import DataprepConfig, FacesConfig
from .common import Clip, StageReject, VideoRecord, reject_clip

SHARPNESS_SIDE = 128   # faces are resized to this before the Laplacian, so sizes compare


@dataclass
class FrameFaces:
    """The main (largest) face of one analysed frame, in source pixels, plus the others' boxes."""
    landmarks: np.ndarray    # (478, 3)
    blendshapes: np.ndarray  # (52,)
    pose: np.ndarray         # (3,) yaw, pitch, roll
    box: np.ndarray          # (4,)
    sharpness: float
    other_boxes: list        # boxes of the other faces


def face_sharpness(rgb: np.ndarray, box: np.ndarray) -> float:
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = [int(round(v)) for v in box]
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return 0.0
    gray = cv2.cvtColor(np.ascontiguousarray(rgb[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    gray = cv2.resize(gray, (SHARPNESS_SIDE, SHARPNESS_SIDE), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def observe(faces: list, rgb: np.ndarray, scale: float) -> FrameFaces | None:
    """FaceAnalyser output on a frame downscaled by `scale` -> FrameFaces in source pixels."""
    if not faces:
        return None
    main = faces[0]
    lm = main.landmarks / scale
    return FrameFaces(landmarks=lm.astype(np.float32), blendshapes=main.blendshapes,
                      pose=main.pose, box=main.box / scale,
                      sharpness=face_sharpness(rgb, main.box),
                      other_boxes=[f.box / scale for f in faces[1:]])


def _height(box) -> float:
    return float(box[3] - box[1])


def interp_rows(known_t: np.ndarray, values: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Linear interpolation of rows `values` (K, ...) known at sorted frames `known_t` (K,) onto
    frames `t`; frames outside the known range hold the nearest known row."""
    flat = values.reshape(len(values), -1).astype(np.float64)
    if len(known_t) == 1:
        return np.repeat(flat, len(t), 0).reshape((len(t),) + values.shape[1:])
    j = np.clip(np.searchsorted(known_t, t, side="right") - 1, 0, len(known_t) - 2)
    t0, t1 = known_t[j], known_t[j + 1]
    w = np.clip((t - t0) / np.maximum(t1 - t0, 1), 0.0, 1.0)[:, None]
    out = flat[j] * (1 - w) + flat[j + 1] * w
    return out.reshape((len(t),) + values.shape[1:])


@dataclass
class FaceTrack:
    """Per-frame face of one clip, in source pixels (interpolated between analysed frames)."""
    landmarks: np.ndarray     # (T, 478, 3)
    blendshapes: np.ndarray   # (T, 52)
    pose: np.ndarray          # (T, 3)
    boxes: np.ndarray         # (T, 4)
    speed: np.ndarray         # (T,) degrees per frame
    sharpness: float          # median over analysed frames


def _longest_run(flags: np.ndarray) -> int:
    best = run = 0
    for f in flags:
        run = run + 1 if f else 0
        best = max(best, run)
    return best


def small_face_search(path: str, frames: list[int], fps: float, cfg: FacesConfig) -> float | None:
    """Height (px) of the largest face BlazeFace finds on overlapping tiles of a few frames.

    The landmarker misses faces a few tens of pixels tall; tiles enlarge them enough for the
    short-range detector, which tells "face too small" from "no face"."""
    from emo.media.face import FaceDetector

    tile = cfg.small_face_tile
    best = None
    with FaceDetector(min_confidence=0.5) as det:
        for index in frames:
            try:
                rgb = read_frames(path, index / fps, (index + 1) / fps)[0]
            except Exception:  # noqa: BLE001 - a frame we cannot read is simply not searched
                continue
            h, w = rgb.shape[:2]
            for y in range(0, max(1, h - tile // 2), tile // 2):
                for x in range(0, max(1, w - tile // 2), tile // 2):
                    for box, _ in det.detect(np.ascontiguousarray(rgb[y:y + tile, x:x + tile])):
                        best = max(best or 0.0, _height(box))
    return best


def build_track(observed: dict[int, FrameFaces | None], clip: Clip, path: str,
                cfg: FacesConfig) -> FaceTrack:
    """Decide whether the clip has exactly one usable face; raise StageReject when not."""
    fps = clip.fps
    analysed = np.array(sorted(i for i in observed if clip.start_frame <= i < clip.end_frame))
    if len(analysed) == 0:
        raise StageReject("faces", "no face", "no analysed frames")
    present = np.array([observed[i] is not None for i in analysed])
    presence = present.mean()
    if presence < cfg.min_presence:
        missing = analysed[~present]
        picks = missing[np.linspace(0, len(missing) - 1, min(cfg.small_face_samples, len(missing))).astype(int)]
        small = small_face_search(path, [int(i) for i in picks], fps, cfg)
        if small is not None and small < cfg.min_face_px:
            raise StageReject("faces", "face too small", f"{small:.0f} px face found on tiles only")
        raise StageReject("faces", "no face", f"face in {presence:.0%} of analysed frames")
    faces = [observed[i] for i in analysed[present]]
    heights = np.array([_height(f.box) for f in faces])
    if np.median(heights) < cfg.min_face_px:
        raise StageReject("faces", "face too small", f"median face height {np.median(heights):.0f} px")
    multi = np.mean([any(_height(b) >= cfg.second_face_ratio * _height(f.box) for b in f.other_boxes)
                     for f in faces])
    if multi > cfg.max_multi_frac:
        raise StageReject("faces", "multiple faces", f"second face in {multi:.0%} of analysed frames")
    step_s = (analysed[1] - analysed[0]) / fps if len(analysed) > 1 else 1 / fps
    gap = _longest_run(~present) * step_s
    if gap > cfg.max_gap_s:
        raise StageReject("faces", "face lost", f"no face for {gap:.2f} s")
    centres = np.array([[(f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2] for f in faces])
    jumps = np.linalg.norm(np.diff(centres, axis=0), axis=1) / heights[1:] if len(faces) > 1 else np.zeros(0)
    if len(jumps) and jumps.max() > cfg.max_jump:
        raise StageReject("faces", "face lost", f"face jumped {jumps.max():.2f} face heights")

    known = analysed[present].astype(np.float64)
    t = np.arange(clip.start_frame, clip.end_frame, dtype=np.float64)
    pose = interp_rows(known, np.stack([f.pose for f in faces]), t).astype(np.float32)
    rotations = np.stack([euler_to_rotation(*p) for p in pose])
    return FaceTrack(
        landmarks=interp_rows(known, np.stack([f.landmarks for f in faces]), t).astype(np.float32),
        blendshapes=interp_rows(known, np.stack([f.blendshapes for f in faces]), t).astype(np.float32),
        pose=pose,
        boxes=interp_rows(known, np.stack([f.box for f in faces]), t).astype(np.float32),
        speed=rotation_speed(rotations),
        sharpness=float(np.median([f.sharpness for f in faces])),
    )


def track_stats(track: FaceTrack, frame_height: int) -> dict:
    heights = track.boxes[:, 3] - track.boxes[:, 1]
    yaw = track.pose[:, 0]
    return {
        "face_size": float(np.median(heights)),
        "face_frac": float(np.median(heights) / frame_height),
        "yaw_range": float(yaw.max() - yaw.min()),
        "yaw_abs_max": float(np.abs(yaw).max()),
        "mean_speed": float(np.mean(track.speed)),
        "sharpness": track.sharpness,
    }


def faces(record: VideoRecord, cfg: DataprepConfig) -> VideoRecord:
    for clip in record.live_clips():
        try:
            clip.track = build_track(record.scan.faces, clip, record.path, cfg.faces)
        except StageReject as rej:
            reject_clip(record, clip, rej.stage, rej.reason, rej.detail)
            continue
        clip.values.update(track_stats(clip.track, record.info.height))
    return record
