"""A tiny synthetic dataset folder (Contract 1) for tests and benchmarks: a bright disc "face"
whose mouth opens with the loudness of a tone burst track, and whose head sways left-right.

It exercises the real reading path (mp4 decode, AAC audio, labels .npz, manifest.parquet) without
depending on dataprep or on real media.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from emo.manifest import LABEL_KEYS, MANIFEST_SCHEMA, save_labels, write_manifest
from emo.media.video import write_video

RATE = 16000


def _clip(n_frames: int, size: int, fps: float, rng: np.random.Generator, background=(40, 90)):
    t = np.arange(n_frames) / fps
    # Loudness: tone bursts switching on and off about 3 times a second.
    gate = (np.sin(2 * np.pi * rng.uniform(2.0, 4.0) * t + rng.uniform(0, 6)) > 0).astype(np.float32)
    samples = np.arange(int(np.ceil(n_frames / fps * RATE))) / RATE
    frame_of = np.minimum((samples * fps).astype(int), n_frames - 1)
    audio = 0.3 * gate[frame_of] * np.sin(2 * np.pi * 220.0 * samples)
    yaw = 15.0 * np.sin(2 * np.pi * 0.5 * t + rng.uniform(0, 6))
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(*background, 3)
    skin = rng.uniform(150, 230, 3)
    frames, boxes = [], []
    for i in range(n_frames):
        cx, cy, r = 0.5 + yaw[i] / 150.0, 0.5, 0.3
        img = np.empty((size, size, 3), np.float32)
        img[:] = base
        face = (xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2
        img[face] = skin
        mouth_h = 0.02 + 0.08 * gate[i]
        mouth = (np.abs(xx - cx) < 0.1) & (np.abs(yy - (cy + 0.12)) < mouth_h)
        img[mouth] = (30, 10, 10)
        frames.append(img.clip(0, 255).astype(np.uint8))
        boxes.append([cx - r, cy - r, cx + r, cy + r])
    boxes = np.clip(np.asarray(boxes, np.float32), 0, 1)
    pose = np.stack([yaw, np.zeros_like(yaw), np.zeros_like(yaw)], 1).astype(np.float32)
    speed = np.abs(np.diff(yaw, prepend=yaw[0])).astype(np.float32)
    labels = {
        "landmarks": np.zeros((n_frames,) + LABEL_KEYS["landmarks"][1:], np.float32),
        "blendshapes": np.zeros((n_frames, 52), np.float32),
        "pose": pose, "rotation_speed": speed, "boxes": boxes,
        "face_box": np.array([boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()], np.float32),
    }
    return np.stack(frames), audio.astype(np.float32), labels


def make_synthetic_dataset(out: str | os.PathLike, n_clips: int = 2, n_frames: int = 24, size: int = 64,
                           fps: float = 25.0, seed: int = 0, frame_counts: list[int] | None = None,
                           background: tuple[float, float] = (40, 90)) -> Path:
    """Write clips/, labels and manifest.parquet (all clips in the train split) under `out`.
    `background`: the range each clip's background colour channels are drawn from."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    rows = []
    counts = frame_counts or [n_frames] * n_clips
    for i, count in enumerate(counts):
        clip_id = f"synth{i:03d}"
        frames, audio, labels = _clip(count, size, fps, rng, background)
        write_video(out / "clips" / f"{clip_id}.mp4", frames, fps, audio=audio, audio_rate=RATE, crf=12)
        save_labels(out / "clips" / f"{clip_id}.npz", labels)
        rows.append({
            "clip_id": clip_id, "clip_path": f"clips/{clip_id}.mp4", "labels_path": f"clips/{clip_id}.npz",
            "source_video": f"synth{i:03d}.mp4", "source_start": 0.0, "source_end": count / fps,
            "fps": float(fps), "n_frames": int(count), "size": int(size), "split": "train",
            "group": f"g{i}", "speaker": "S0", "speech_ratio": 0.5, "sync_offset": 0,
            "sync_confidence": 1.0, "sync_corrected": False, "face_size": 0.6 * size,
            "face_frac": 0.6, "yaw_range": float(np.ptp(labels["pose"][:, 0])),
            "yaw_abs_max": float(np.abs(labels["pose"][:, 0]).max()),
            "mean_speed": float(labels["rotation_speed"].mean()), "sharpness": 100.0,
            "face_box": labels["face_box"].tolist(),
        })
    write_manifest(pd.DataFrame(rows, columns=MANIFEST_SCHEMA.names), out)
    return out
