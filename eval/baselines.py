"""Reference systems scored in every run, so each number has a ceiling and a floor beside it.

- `ground_truth`: the held-out clip itself (the ceiling: FID/FVD near 0, SSIM 1, F-SIM as the
  clip's own).
- `reference_repeated`: the reference frame (the clip's first frame) shown for every frame, with
  the clip's audio (no motion at all: perfect identity, no lip sync, no blinks, no head motion).
- `audio_shifted`: the ground-truth frames with the audio delayed by `shift_frames` frames (audio
  LATE, the sign convention of emo.media.lipsync: a sync metric must report an offset of
  +shift_frames and lower confidence; image metrics must not move).

A baseline maps one held-out clip to (frames, audio): the pair a generated video would supply.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emo.media.audio import shift_audio  # + = audio later: the toolkit's one convention

DEFAULT_SHIFT_FRAMES = 5


@dataclass(frozen=True)
class Baseline:
    name: str
    description: str
    shift_frames: int = 0

    def make(self, ground_truth: np.ndarray, reference: np.ndarray, audio: np.ndarray,
             audio_rate: int, fps: float) -> tuple[np.ndarray, np.ndarray]:
        """(frames (T,H,W,3) uint8, audio float32) this baseline offers for one clip."""
        if self.name == "ground_truth":
            return ground_truth, audio
        if self.name == "reference_repeated":
            return np.repeat(reference[None], len(ground_truth), axis=0), audio
        if self.name.startswith("audio_shifted"):
            return ground_truth, shift_audio(audio, audio_rate, fps, self.shift_frames)
        raise ValueError(f"unknown baseline {self.name!r}")


def default_baselines(shift_frames: int = DEFAULT_SHIFT_FRAMES) -> list[Baseline]:
    """The three baselines of every run; the shifted one is named with its shift, e.g. audio_shifted_+5."""
    if shift_frames == 0:
        raise ValueError("the audio-shift baseline needs a non-zero shift (frames)")
    return [
        Baseline("ground_truth", "the held-out clip itself (ceiling)"),
        Baseline("reference_repeated", "the reference frame repeated, clip audio (no motion)"),
        Baseline(f"audio_shifted_{shift_frames:+d}",
                 f"ground-truth frames, audio delayed by {shift_frames} frames (sync metrics must see it)",
                 shift_frames=shift_frames),
    ]
