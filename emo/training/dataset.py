"""Training samples drawn from a dataset folder (Contract 1, `emo/manifest.py`).

Stage 1 sample: one target frame and a different reference frame of the same clip.
Stages 2/3 sample: n motion frames + f target frames, contiguous, plus a reference frame, the
face-region mask, per-frame rotation speed and the audio of the target frames.

Window rule (T = the clip's frame count at `data.fps`, n = n_motion, f = n_frames):
- T >= n + f: the target window starts uniformly in [n, T - f]; all n motion frames are real.
- f <= T < n + f: the window starts at 0 and has no motion frames (zeros, marked invalid), exactly
  as the first clip at inference.
- T < f: as above, and the last frame is held to fill the window; the held frames are marked in
  `frame_valid` and left out of the loss.
- Motion drop: with probability `drop_motion_prob` (train config) a window that has real motion
  frames gets none (zeros, marked invalid), so the first clip of every generated video, which has
  no motion frames, is trained although dataprep's 3-12 s clips are all longer than n + f. The
  coin comes from its own stream (seed, g, 2): the other choices do not depend on it.
The reference frame is uniform over the clip's frames outside [start - n, start + f); when the clip
has none, over all frames.
- Joint colour augmentation: with probability `joint_colour_augment_prob` (train config) ONE random
  colour transform (`emo.training.colour.ColourTransform`: channels permuted, per-channel gain and
  offset) is applied to the sample's reference, target and motion frames alike (before invalid
  motion frames are zeroed). With a few training identities, a frame's colours are otherwise
  known from the noisy latent alone and the reference carries nothing the loss rewards (issue 12).
  Coin and transform come from their own stream (seed, g, 3), drawn for every sample.

Data order is a pure function of (seed, global sample index g): epoch = g // N shuffles the clips
with seed + epoch, and every random choice for sample g uses its own generator seeded with
(seed, g). A run resumed at sample position g therefore sees exactly what an uninterrupted run
would, whatever the worker count.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from emo.face_mask import box_scale, clip_box_scale
from emo.manifest import load_labels, read_manifest
from emo.media.audio import SPEECH_RATE, load_audio
from emo.media.video import iter_frames

from .colour import ColourTransform
from .config import DataConfig


@dataclass(frozen=True)
class ClipInfo:
    clip_id: str
    path: Path
    src_fps: float
    src_frames: int
    n_frames: int                 # at data.fps
    speed: np.ndarray             # (n_frames,) deg per frame at data.fps
    face_box: np.ndarray          # (4,) x0 y0 x1 y1 in [0, 1]
    box_scale: tuple[float, float] | None = None   # union / single-frame box size (emo.face_mask)

    def src_index(self, k: np.ndarray, fps: float) -> np.ndarray:
        """Source frame index nearest in time to frame k at `fps`."""
        idx = np.round(np.asarray(k, np.float64) * self.src_fps / fps).astype(np.int64)
        return np.clip(idx, 0, self.src_frames - 1)


def _clip_info(dataset: Path, row, fps: float) -> ClipInfo:
    labels = load_labels(dataset, row)
    src_frames = int(row["n_frames"])
    src_fps = float(row["fps"])
    n = max(1, int(math.floor(src_frames * fps / src_fps + 1e-6)))
    info = ClipInfo(row["clip_id"], dataset / row["clip_path"], src_fps, src_frames, n,
                    np.zeros(n, np.float32), np.asarray(row["face_box"], np.float32))
    # Speed is in degrees per source frame; resampling to data.fps scales it by src_fps / fps.
    speed = np.nan_to_num(labels["rotation_speed"].astype(np.float32), nan=0.0)
    if len(speed):
        speed = speed[np.clip(info.src_index(np.arange(n), fps), 0, len(speed) - 1)] * (src_fps / fps)
    else:
        speed = np.zeros(n, np.float32)
    return ClipInfo(info.clip_id, info.path, src_fps, src_frames, n, speed.astype(np.float32), info.face_box,
                    clip_box_scale(labels["boxes"], info.face_box))


def read_frames_at(path: Path, indices: np.ndarray, fps: float, threads: int = 0) -> np.ndarray:
    """(len(indices), H, W, 3) uint8 RGB frames at source frame `indices` (any order, repeats
    allowed), in ONE PyAV pass from the keyframe before the first to the last. The reader is a
    measured choice (benchmarks/video_read_bench.py: faster than decord and than one pass per
    group of frames for the trainer's access pattern)."""
    need = set(int(i) for i in indices)
    lo, hi = min(need), max(need)
    got: dict[int, np.ndarray] = {}
    for idx, rgb in iter_frames(path, start=lo / fps, end=(hi + 1) / fps, threads=threads):
        if idx in need:
            got[idx] = rgb
        if len(got) == len(need):
            break
    if len(got) < len(need):
        # Containers can report a frame or two more than decode; hold the last decoded one.
        decoded = sorted(got)
        if not decoded:
            raise RuntimeError(f"{path}: no frames decoded in [{lo}, {hi}]")
        for i in need - set(got):
            got[i] = got[max([d for d in decoded if d <= i] or decoded[:1])]
    return np.stack([got[int(i)] for i in indices])


def face_mask(box: np.ndarray, size: int) -> torch.Tensor:
    """(1, size, size) float mask, 1 inside the union face box; the whole image if the box is unknown."""
    mask = torch.zeros(1, size, size)
    if not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
        return mask.fill_(1.0)
    x0, y0 = (int(math.floor(float(np.clip(v, 0, 1)) * size)) for v in box[:2])
    x1, y1 = (int(math.ceil(float(np.clip(v, 0, 1)) * size)) for v in box[2:])
    mask[:, y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)] = 1.0
    return mask


def sample_order(n_items: int, seed: int, g: int) -> int:
    """Index of the clip that global sample g reads (a fresh shuffle every epoch)."""
    epoch, i = divmod(int(g), n_items)
    return int(np.random.default_rng([seed, epoch]).permutation(n_items)[i])


class ClipDataset(Dataset):
    """Index with a global sample index g (see `GlobalBatchSampler`), not a clip index."""

    def __init__(self, dataset: str | os.PathLike, data: DataConfig, stage: int, seed: int = 0,
                 audio_cache: str | os.PathLike | None = None, audio_context: int = 2,
                 drop_motion_prob: float = 0.0, joint_colour_augment_prob: float = 0.0):
        if stage not in (1, 2, 3):
            raise ValueError(f"stage must be 1, 2 or 3, got {stage}")
        self.root = Path(dataset)
        self.data, self.stage, self.seed = data, stage, seed
        self.audio_cache = Path(audio_cache) if audio_cache else None
        self.audio_context = audio_context   # m: the audio window of a frame is 2m + 1 frames
        self.drop_motion_prob = float(drop_motion_prob)
        self.joint_colour_augment_prob = float(joint_colour_augment_prob)
        rows = read_manifest(self.root, split=data.split)
        if rows.empty:
            raise FileNotFoundError(f"{self.root / 'manifest.parquet'}: no clips in split {data.split!r}")
        self.clips = [_clip_info(self.root, row, data.fps) for _, row in rows.iterrows()]
        self.n_motion = 0 if stage == 1 else data.n_motion
        self.n_target = 1 if stage == 1 else data.n_frames

    def __len__(self) -> int:
        return len(self.clips)

    def face_mask_scale(self) -> dict | None:
        """How much larger the training mask (union box) is than one frame's box (emo.face_mask)."""
        return box_scale([c.box_scale for c in self.clips])

    # ---- choosing frames -------------------------------------------------------------------
    def choose(self, g: int) -> dict:
        """Which clip and frames sample g uses (no decoding): the testable part of the rule."""
        return {**self._frames_chosen(g), "colour": self._colour(g)}

    def _colour(self, g: int) -> ColourTransform | None:
        """The joint colour transform of sample g, or None. Both draws happen for every sample,
        so the transform of sample g does not depend on the probability."""
        rng = np.random.default_rng([self.seed, int(g), 3])
        coin = rng.random()
        transform = ColourTransform.draw(rng)
        return transform if coin < self.joint_colour_augment_prob else None

    def _frames_chosen(self, g: int) -> dict:
        ci = sample_order(len(self.clips), self.seed, g)
        clip = self.clips[ci]
        rng = np.random.default_rng([self.seed, int(g), 1])
        T, n, f = clip.n_frames, self.n_motion, self.n_target
        if self.stage == 1:
            t = int(rng.integers(T))
            others = np.setdiff1d(np.arange(T), [t]) if T > 1 else np.array([t])
            return dict(clip=ci, start=t, motion=np.zeros(0, np.int64), target=np.array([t]),
                        motion_valid=np.zeros(0, bool), frame_valid=np.ones(1, bool),
                        reference=int(rng.choice(others)))
        if T >= n + f:
            start = int(rng.integers(n, T - f + 1))
            drop = np.random.default_rng([self.seed, int(g), 2]).random() < self.drop_motion_prob
            motion_valid = np.full(n, not drop)
        else:
            start, motion_valid = 0, np.zeros(n, bool)
        target = start + np.arange(f)
        frame_valid = target < T
        target = np.minimum(target, T - 1)
        outside = np.setdiff1d(np.arange(T), np.arange(start - n, start + f))
        reference = int(rng.choice(outside if len(outside) else np.arange(T)))
        return dict(clip=ci, start=start, motion=np.maximum(start - n + np.arange(n), 0),
                    target=target, motion_valid=motion_valid, frame_valid=frame_valid, reference=reference)

    # ---- decoding ----------------------------------------------------------------------------
    def _frames(self, clip: ClipInfo, wanted: np.ndarray) -> torch.Tensor:
        """(len(wanted), 3, S, S) in [-1, 1] for frame indices at data.fps."""
        stack = read_frames_at(clip.path, clip.src_index(wanted, self.data.fps), clip.src_fps)
        x = torch.from_numpy(stack).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        S = self.data.sample_size
        if x.shape[-2:] != (S, S):
            x = F.interpolate(x, size=(S, S), mode="bilinear", antialias=True, align_corners=False)
        return x.clamp_(-1.0, 1.0)

    def _audio(self, clip: ClipInfo, target: np.ndarray) -> dict:
        if self.audio_cache is not None:
            from .audio_cache import load_window
            return {"audio": load_window(self.audio_cache, clip.clip_id, target, self.audio_context)}
        # No cache: the waveform of the window, one fixed length per sample so batches stack.
        fps, m = self.data.fps, self.audio_context
        wave = load_audio(clip.path, rate=SPEECH_RATE)
        hop = SPEECH_RATE / fps
        i0 = int(round((int(target[0]) - m) * hop))
        length = int(round((len(target) + 2 * m) * hop))
        out = np.zeros(length, np.float32)
        lo, hi = max(0, i0), min(len(wave), i0 + length)
        if hi > lo:
            out[lo - i0:hi - i0] = wave[lo:hi]
        return {"waveform": torch.from_numpy(out)}

    def __getitem__(self, g: int) -> dict:
        pick = self.choose(g)
        clip = self.clips[pick["clip"]]
        # One decode over the span from the first frame needed to the last (benchmarks/video_read:
        # with x264's 10-s keyframe interval, a second seek for the reference decodes from the
        # same keyframe again).
        both = self._frames(clip, np.concatenate([pick["motion"], pick["target"], [pick["reference"]]]))
        if pick["colour"] is not None:
            both = pick["colour"](both)
        frames, reference = both[:-1], both[-1]
        if self.n_motion:
            frames[:self.n_motion][~torch.from_numpy(pick["motion_valid"])] = 0.0
        item = {
            "frames": frames,                                  # (n + f, 3, S, S), motion first
            "reference": reference,                            # (3, S, S)
            "face_mask": face_mask(clip.face_box, self.data.sample_size),
            "motion_valid": torch.from_numpy(pick["motion_valid"]),
            "frame_valid": torch.from_numpy(pick["frame_valid"]),
            "speed": torch.from_numpy(clip.speed[pick["target"]]),
            "index": torch.tensor(int(g)),
        }
        if self.stage > 1:
            item.update(self._audio(clip, pick["target"]))
        return item


class GlobalBatchSampler(torch.utils.data.Sampler):
    """Endless batches of global sample indices starting at `position`; process `rank` of `world`
    takes its slice of each global batch, so the order does not depend on the process count."""

    def __init__(self, batch_size: int, position: int = 0, rank: int = 0, world: int = 1):
        self.batch_size, self.position, self.rank, self.world = batch_size, int(position), rank, world

    def __iter__(self):
        g = self.position
        while True:
            first = g + self.rank * self.batch_size
            yield list(range(first, first + self.batch_size))
            g += self.batch_size * self.world

    def samples_per_step(self) -> int:
        return self.batch_size * self.world
