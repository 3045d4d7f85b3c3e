"""Test helpers for the evaluation harness and report: a tiny synthetic dataset folder and toy
metrics whose right answers are known by construction.

Synthetic clips: a bright square moves over a gradient, and its brightness follows a per-frame
loudness curve that also drives a 440 Hz tone in the audio. So frames and audio are "in sync" by
construction, and a toy sync metric (best lag between frame brightness and audio loudness) must
read +k on audio delayed by k frames.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from emo.manifest import LABEL_KEYS, save_labels, write_manifest
from emo.media import write_video
from eval.metrics.base import Metric

FPS = 25.0
RATE = 16000


def loudness_curve(n: int, rng: np.random.Generator) -> np.ndarray:
    """Syllable-like on/off pattern, 2-6 frames per segment, values in [0, 1]."""
    out, level = np.zeros(n), 0.0
    i = 0
    while i < n:
        length = int(rng.integers(2, 7))
        level = 0.0 if level > 0 else float(rng.uniform(0.5, 1.0))
        out[i:i + length] = level
        i += length
    return out


def synth_clip(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    loud = loudness_curve(n, rng)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 100 / size, yy * 100 / size, np.full_like(xx, 60 + 20 * (seed % 5))], -1)
    frames = np.empty((n, size, size, 3), np.uint8)
    s = size // 4
    for t in range(n):
        img = base.copy()
        x0 = int((size - s) * (0.5 + 0.4 * np.sin(t / 5 + seed)))
        img[s:2 * s, x0:x0 + s] = 120 + 135 * loud[t]
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    hop = int(RATE / FPS)
    tone = np.sin(2 * np.pi * 440 * np.arange(n * hop) / RATE).astype(np.float32)
    audio = (0.5 * np.repeat(loud, hop) * tone).astype(np.float32)
    return frames, audio


def make_dataset(root: Path, n_test: int = 4, n_frames: int = 30, size: int = 64) -> Path:
    """A dataset folder (Contract 1) with n_test test clips and one train clip."""
    rows = []
    for i in range(n_test + 1):
        clip_id = f"clip{i:02d}"
        frames, audio = synth_clip(n_frames + i, size, seed=i)
        write_video(root / "clips" / f"{clip_id}.mp4", frames, FPS, audio=audio, audio_rate=RATE, crf=12)
        t = len(frames)
        labels = {k: np.zeros(tuple(t if d == "T" else d for d in shape), np.float32) for k, shape in LABEL_KEYS.items()}
        save_labels(root / "clips" / f"{clip_id}.npz", labels)
        rows.append(dict(clip_id=clip_id, clip_path=f"clips/{clip_id}.mp4", labels_path=f"clips/{clip_id}.npz",
                         source_video=f"src{i}.mp4", source_start=0.0, source_end=t / FPS, fps=FPS, n_frames=t,
                         size=size, split="train" if i == n_test else "test", group=f"g{i}", speaker="A",
                         speech_ratio=0.5, sync_offset=0, sync_confidence=5.0, sync_corrected=False,
                         face_size=32.0, face_frac=0.5, yaw_range=5.0, yaw_abs_max=3.0, mean_speed=0.2,
                         sharpness=100.0, face_box=np.array([0.2, 0.2, 0.8, 0.8], np.float32)))
    write_manifest(pd.DataFrame(rows), root)
    return root


# --- toy metrics ------------------------------------------------------------------------------

class PixelL1(Metric):
    name, direction, level = "pixel_l1", "lower", "clip"
    description = "toy: mean absolute pixel difference to the ground truth"

    def status(self):
        return "ok"

    def score_clip(self, sample):
        return float(np.abs(sample.generated.astype(np.float32) - sample.ground_truth).mean())


class ToySync(Metric):
    """Best lag between the square's brightness and the audio loudness (+ = audio late)."""
    name, direction, level = "toy_sync", "lower", "clip"
    directions = {"toy_offset": "lower", "toy_conf": "higher"}

    def status(self):
        return "ok"

    def score_clip(self, sample):
        s = sample.generated.shape[1] // 4
        bright = sample.generated[:, s:2 * s, :, :].max(axis=(1, 2, 3)).astype(np.float64)
        hop = int(round(sample.audio_rate / sample.fps))
        audio = np.resize(sample.audio, sample.n_frames * hop) if len(sample.audio) < sample.n_frames * hop else sample.audio
        env = np.sqrt((audio[:sample.n_frames * hop].reshape(sample.n_frames, hop).astype(np.float64) ** 2).mean(1))
        best, best_c, cs = 0, -np.inf, []
        for k in range(-8, 9):
            a = env[max(k, 0):len(env) + min(k, 0)]
            b = bright[max(-k, 0):len(bright) - max(k, 0)]
            c = np.corrcoef(a, b)[0, 1] if a.std() > 0 and b.std() > 0 else 0.0
            cs.append(c)
            if c > best_c:
                best, best_c = k, c
        return {"toy_offset": float(best), "toy_conf": float(best_c - np.median(cs))}


class MeanColourFD(Metric):
    """Set-level toy: squared distance between mean frame colours of generated and real frames."""
    name, direction, level = "mean_colour_fd", "lower", "set"

    def status(self):
        return "ok"

    def features(self, sample):
        return (sample.generated.mean(axis=(1, 2)).astype(np.float64),
                sample.ground_truth.mean(axis=(1, 2)).astype(np.float64))

    def aggregate(self, gen, real):
        return float(((np.concatenate(gen).mean(0) - np.concatenate(real).mean(0)) ** 2).sum())


class MissingWeights(Metric):
    name, direction, level = "needs_weights", "higher", "clip"
    weights = ("syncnet",)

    def status(self):
        return "unavailable: syncnet_v2.model missing in /nowhere: run `python -m eval weights fetch`"

    def score_clip(self, sample):
        raise AssertionError("an unavailable metric must never be asked for a number")


class FailsOnOneClip(Metric):
    name, direction, level = "flaky", "higher", "clip"

    def status(self):
        return "ok"

    def score_clip(self, sample):
        if sample.clip_id == "clip01":
            raise RuntimeError("no face found")
        return 1.0


def toy_metrics() -> list[Metric]:
    return [PixelL1(), ToySync(), MeanColourFD(), MissingWeights(), FailsOnOneClip()]


def write_generated(folder: Path, dataset: Path, clip_ids: list[str], fps: float = 30.0, scale: float = 1.5,
                    extra_s: float = 0.4, noise: float = 12.0, seed: int = 0) -> Path:
    """A 'system' output: each ground-truth clip resampled to another fps, resized, lengthened, noisy."""
    import cv2
    from emo.media import read_frames
    rng = np.random.default_rng(seed)
    for cid in clip_ids:
        gt = read_frames(dataset / "clips" / f"{cid}.mp4")
        n = int((len(gt) / FPS + extra_s) * fps)
        idx = np.clip(np.round(np.arange(n) * FPS / fps).astype(int), 0, len(gt) - 1)
        h = int(gt.shape[1] * scale) // 2 * 2
        frames = [np.clip(cv2.resize(gt[i], (h, h)) + rng.normal(0, noise, (h, h, 3)), 0, 255).astype(np.uint8)
                  for i in idx]
        write_video(folder / f"{cid}.mp4", frames, fps, crf=20)
    return folder


# --- a stand-in for MediaPipe with known answers ----------------------------------------------

def fake_face_track(frames: np.ndarray, fps: float = FPS):
    """A FaceTrack without MediaPipe: a face is "found" in a frame unless the frame is black (mean
    < 10); landmarks are a fixed template moved and opened with the frame's brightness, the blink
    score follows the top rows' brightness. Deterministic, so a system equal to the ground truth
    measures exactly as the ground truth and a changed one measurably differently."""
    from eval.metrics.base import FaceTrack
    t = len(frames)
    rng = np.random.default_rng(0)
    template = rng.uniform(10, 50, (478, 3)).astype(np.float32)
    track = FaceTrack(landmarks=np.full((t, 478, 3), np.nan, np.float32),
                      blendshapes=np.full((t, 52), np.nan, np.float32),
                      pose=np.full((t, 3), np.nan, np.float32),
                      rotations=np.full((t, 3, 3), np.nan, np.float32),
                      boxes=np.full((t, 4), np.nan, np.float32))
    for i, f in enumerate(frames):
        level = float(f.mean())
        if level < 10:
            continue
        lm = template.copy()
        lm[:, :2] += level / 10.0
        from eval.metrics.lmd import LIPS
        lm[list(LIPS), 1] *= 1.0 + float(f[f.shape[0] // 2:].mean()) / 255.0     # mouth opens with the lower half
        track.landmarks[i] = lm
        track.blendshapes[i] = float(f[: max(1, f.shape[0] // 8)].mean()) / 255.0
        track.pose[i] = (level / 20.0, 0.0, 0.0)
        track.rotations[i] = np.eye(3)
        track.boxes[i] = (8, 8, f.shape[1] - 8, f.shape[0] - 8)
    return track
