"""The one rule that makes a generated video comparable with its ground-truth clip.

Generated videos come from many systems (EMO checkpoints, Hallo, EchoMimic...) and need not match
the held-out clip in frame rate, length or size. Instead of failing, every pair goes through the
same rule, and what it changed is recorded per clip in the results JSON:

1. Time: the ground-truth clock wins. For ground-truth frame i (time i / gt_fps) the generated
   frame nearest in time is taken: index round(i * gen_fps / gt_fps). A generated video at a
   different fps is thereby resampled (frames repeated or dropped), never interpolated.
2. Length: both are cut to the shorter duration, counted in ground-truth frames:
   n = min(gt_frames, floor(gen_frames * gt_fps / gen_fps)); the audio is cut to the same n frames.
3. Size: if the aspect ratios differ, the generated frames are centre-cropped to the ground
   truth's aspect ratio; then they are resized to the ground truth's size with area interpolation
   (OpenCV INTER_AREA, which averages when shrinking and is bilinear-like when enlarging).

The ground truth itself is never resampled or resized, so ground-truth features are the same
whichever system is being scored.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

ALIGNMENT_RULE = (
    "generated frames resampled to the ground-truth fps by nearest timestamp "
    "(frame round(i * gen_fps / gt_fps) for ground-truth frame i); both cut to the shorter "
    "duration in ground-truth frames (audio cut alike); generated frames centre-cropped to the "
    "ground-truth aspect ratio when it differs, then resized to the ground-truth size with area "
    "interpolation (cv2.INTER_AREA); ground truth never altered"
)

# Two durations that differ by less than this many ground-truth frames count as equal: container
# timestamps round, and a 1/1000 s disagreement must not drop a frame.
_LENGTH_TOLERANCE = 1e-3


class AlignmentError(ValueError):
    """A pair that no rule can make comparable (an empty video, a non-positive fps)."""


@dataclass
class AlignmentRecord:
    """What the rule did to one clip (stored in the results JSON under alignment.clips)."""
    clip_id: str
    gt_fps: float
    gen_fps: float
    gt_frames: int
    gen_frames: int
    gt_size: tuple[int, int]          # (H, W)
    gen_size: tuple[int, int]         # (H, W)
    frames_used: int                  # ground-truth frames scored after the rule
    resampled: bool                   # generated fps differed from the ground truth's
    cropped: bool                     # aspect ratio differed: generated frames centre-cropped
    resized: bool                     # generated frames resized to the ground-truth size
    gt_frames_dropped: int            # ground-truth frames past the generated video's end
    gen_seconds_dropped: float        # generated seconds past the ground truth's end

    @property
    def changed(self) -> bool:
        return bool(self.resampled or self.cropped or self.resized or self.gt_frames_dropped
                    or self.gen_seconds_dropped > 0.5 / self.gt_fps)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["gt_size"], d["gen_size"] = list(self.gt_size), list(self.gen_size)
        d["changed"] = self.changed
        return d


def aligned_length(gt_frames: int, gt_fps: float, gen_frames: int, gen_fps: float) -> int:
    """Rule 2: the number of ground-truth frames both videos cover."""
    gen_in_gt_frames = math.floor(gen_frames * gt_fps / gen_fps + _LENGTH_TOLERANCE)
    return int(min(gt_frames, gen_in_gt_frames))


def nearest_generated(gt_indices, gt_fps: float, gen_fps: float, gen_frames: int) -> np.ndarray:
    """Rule 1 for given ground-truth frame indices: the index of the generated frame nearest in time."""
    gt_indices = np.asarray(gt_indices, np.int64)
    idx = np.floor(gt_indices * (gen_fps / gt_fps) + 0.5).astype(np.int64)  # round half up
    return np.clip(idx, 0, gen_frames - 1)


def resample_indices(n: int, gt_fps: float, gen_fps: float, gen_frames: int) -> np.ndarray:
    """Rule 1: for each of the first n ground-truth frames, the nearest generated frame."""
    return nearest_generated(np.arange(n), gt_fps, gen_fps, gen_frames)


def centre_crop_to_aspect(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Rule 3a: the largest centred crop of (T, h, w, 3) frames with aspect ratio width/height."""
    h, w = frames.shape[1:3]
    target = width / height
    if abs(w / h - target) < 1e-3:
        return frames
    if w / h > target:                       # too wide: cut the sides
        new_w = max(1, int(round(h * target)))
        x0 = (w - new_w) // 2
        return frames[:, :, x0:x0 + new_w]
    new_h = max(1, int(round(w / target)))   # too tall: cut top and bottom
    y0 = (h - new_h) // 2
    return frames[:, y0:y0 + new_h]


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Rule 3b: area-interpolated resize of (T, h, w, 3) uint8 frames to (T, height, width, 3)."""
    if frames.shape[1:3] == (height, width):
        return frames
    out = np.empty((len(frames), height, width, 3), np.uint8)
    for i, frame in enumerate(frames):
        out[i] = cv2.resize(np.ascontiguousarray(frame), (width, height), interpolation=cv2.INTER_AREA)
    return out


def align_pair(clip_id: str, generated: np.ndarray, gen_fps: float, ground_truth: np.ndarray,
               gt_fps: float) -> tuple[np.ndarray, np.ndarray, AlignmentRecord]:
    """Apply the rule: (aligned generated, cut ground truth, record). Both outputs are (n, H, W, 3)."""
    if generated.ndim != 4 or len(generated) == 0:
        raise AlignmentError(f"{clip_id}: generated video has no frames (shape {generated.shape})")
    if ground_truth.ndim != 4 or len(ground_truth) == 0:
        raise AlignmentError(f"{clip_id}: ground-truth video has no frames (shape {ground_truth.shape})")
    if not (gen_fps > 0 and gt_fps > 0):
        raise AlignmentError(f"{clip_id}: fps must be positive (generated {gen_fps}, ground truth {gt_fps})")
    gt_h, gt_w = ground_truth.shape[1:3]
    gen_h, gen_w = generated.shape[1:3]
    n = aligned_length(len(ground_truth), gt_fps, len(generated), gen_fps)
    if n <= 0:
        raise AlignmentError(f"{clip_id}: generated video ({len(generated)} frames at {gen_fps} fps) is "
                             f"shorter than one ground-truth frame")
    resampled = abs(gen_fps - gt_fps) > 1e-3
    idx = resample_indices(n, gt_fps, gen_fps, len(generated))
    gen = generated[idx]
    cropped_frames = centre_crop_to_aspect(gen, gt_h, gt_w)
    cropped = cropped_frames.shape[1:3] != gen.shape[1:3]
    gen = resize_frames(cropped_frames, gt_h, gt_w)
    record = AlignmentRecord(
        clip_id=clip_id, gt_fps=float(gt_fps), gen_fps=float(gen_fps),
        gt_frames=int(len(ground_truth)), gen_frames=int(len(generated)),
        gt_size=(int(gt_h), int(gt_w)), gen_size=(int(gen_h), int(gen_w)), frames_used=int(n),
        resampled=bool(resampled), cropped=bool(cropped), resized=(gen_h, gen_w) != (gt_h, gt_w),
        gt_frames_dropped=int(len(ground_truth) - n),
        gen_seconds_dropped=round(max(0.0, len(generated) / gen_fps - n / gt_fps), 4),
    )
    return np.ascontiguousarray(gen), ground_truth[:n], record


def cut_audio(audio: np.ndarray, rate: int, fps: float, n_frames: int) -> np.ndarray:
    """The audio that goes with the first n_frames frames (zero-padded if the track is short)."""
    n_samples = int(round(n_frames * rate / fps))
    out = np.zeros(n_samples, np.float32)
    take = min(n_samples, len(audio))
    out[:take] = audio[:take]
    return out


def summarise(records: list[AlignmentRecord]) -> dict:
    """Counts for the results JSON: how many clips each part of the rule touched."""
    return {
        "n_clips": len(records),
        "n_changed": sum(r.changed for r in records),
        "n_resampled": sum(r.resampled for r in records),
        "n_cropped": sum(r.cropped for r in records),
        "n_resized": sum(r.resized for r in records),
        "n_truncated_gt": sum(r.gt_frames_dropped > 0 for r in records),
        "n_truncated_generated": sum(r.gen_seconds_dropped > 0.5 / r.gt_fps for r in records),
        "gt_frames_dropped": sum(r.gt_frames_dropped for r in records),
        "frames_used": sum(r.frames_used for r in records),
    }
