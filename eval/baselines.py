"""Reference systems scored in every run, so each number has a ceiling and a floor beside it.

- `ground_truth`: the held-out clip itself (the ceiling: FID/FVD near 0, SSIM 1, F-SIM as the
  clip's own).
- `reference_repeated`: the reference frame (the clip's first frame) shown for every frame, with
  the clip's audio (no motion at all: perfect identity, no lip sync, no blinks, no head motion).
- `audio_shifted`: the ground-truth frames with the audio delayed by `shift_frames` frames (audio
  LATE, the sign convention of emo.media.lipsync: a sync metric must report an offset of
  +shift_frames and lower confidence; image metrics must not move).
- `ground_truth_halves` (calibration, set-level metrics only): the held-out clips split in two
  halves by identity (the manifest's `group`, so no person is on both sides), one half scored as
  "generated" against the other as "real". A Frechet distance is biased upward at small set
  sizes; this is its floor at this set size, so a reader sees what FID/FVD/E-FID near it mean.

A baseline maps one held-out clip to (frames, audio): the pair a generated video would supply. What
it takes from the ground truth is an attribute (`frames`, `audio_shift_frames`), so the harness asks
`reuses_gt_frames` instead of checking names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from emo.media.audio import shift_audio  # + = audio later: the toolkit's one convention

DEFAULT_SHIFT_FRAMES = 5


@dataclass(frozen=True)
class Baseline:
    name: str
    description: str
    shift_frames: int = 0                  # audio delay in frames (+ = late); 0 = the clip's audio
    frames: Literal["ground_truth", "reference_repeated"] = "ground_truth"
    set_level_only: bool = False           # calibration: scored on set-level metrics only

    @property
    def reuses_gt_frames(self) -> bool:
        """Its frames ARE the ground truth's (so frame analyses of the ground truth can be shared)."""
        return self.frames == "ground_truth"

    @property
    def reuses(self) -> dict:
        """What it takes from the ground truth, for the results JSON."""
        return {"frames": self.frames, "audio": "clip audio" if not self.shift_frames else
                f"clip audio shifted {self.shift_frames:+d} frames", "set_level_only": self.set_level_only}

    def make(self, ground_truth: np.ndarray, reference: np.ndarray, audio: np.ndarray,
             audio_rate: int, fps: float) -> tuple[np.ndarray, np.ndarray]:
        """(frames (T,H,W,3) uint8, audio float32) this baseline offers for one clip."""
        if self.frames == "reference_repeated":
            return np.repeat(reference[None], len(ground_truth), axis=0), audio
        if self.shift_frames:
            return ground_truth, shift_audio(audio, audio_rate, fps, self.shift_frames)
        return ground_truth, audio


def default_baselines(shift_frames: int = DEFAULT_SHIFT_FRAMES) -> list[Baseline]:
    """The per-clip baselines of every run; the shifted one is named with its shift, e.g. audio_shifted_+5.
    (The set-level calibration, ground truth vs ground truth by identity halves, is CALIBRATION.)"""
    if shift_frames == 0:
        raise ValueError("the audio-shift baseline needs a non-zero shift (frames)")
    return [
        Baseline("ground_truth", "the held-out clip itself (ceiling)"),
        Baseline("reference_repeated", "the reference frame repeated, clip audio (no motion)",
                 frames="reference_repeated"),
        Baseline(f"audio_shifted_{shift_frames:+d}",
                 f"ground-truth frames, audio delayed by {shift_frames} frames (sync metrics must see it)",
                 shift_frames=shift_frames),
    ]


CALIBRATION = Baseline("ground_truth_halves",
                       "ground truth vs ground truth: the held-out clips split in two halves by identity "
                       "(set-level metrics only: their floor at this set size)",
                       set_level_only=True)


def identity_halves(clip_groups: dict[str, str]) -> tuple[list[str], list[str]]:
    """Split clip ids into two halves by identity group: no group on both sides, clip counts as even
    as whole groups allow (largest groups first, each to the smaller half; ties by name)."""
    groups: dict[str, list[str]] = {}
    for cid, g in clip_groups.items():
        groups.setdefault(str(g), []).append(cid)
    a, b = [], []
    for g in sorted(groups, key=lambda k: (-len(groups[k]), k)):
        (a if len(a) <= len(b) else b).extend(sorted(groups[g]))
    return a, b
