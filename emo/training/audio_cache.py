"""Per-clip audio features from the frozen wav2vec2, computed once and stored beside the dataset.

Layout: <dataset>/cache/audio/<key>/<clip_id>.npy, one float16 array (T, D) per clip: the clip's
T frames at data.fps, D = wav2vec2 layers x hidden size (9216 for wav2vec2-base), each row the
frame's own feature, NOT stacked with its neighbours. The 2m + 1 neighbours a frame attends to
are stacked when a sample is read (`load_window`), from the rows that sample needs only (a
memory-mapped read of one contiguous row range), so a 12-frame window of a 12-s clip reads 16 rows
(m = 2), not the whole file.

Why this layout: neighbour-stacked float32 (T, 5, D) costs 184 KB per frame for wav2vec2-base,
some 4 TB for 250 hours of video, and reading a whole file per sample to use a dozen rows made the
cache slower than the step it fed. float16 keeps wav2vec2's hidden states to ~1e-3 relative
(they are layer-normed, |x| of order 1-10; float16 has 11 significant bits).

<key> hashes the audio encoder's weights and every setting that changes the stored rows: the
frame rate, the `audio:` section of the config (except `context` and `projection_hidden`, which act
after the cache: stacking happens at load time, the projection is trained), the encoder's own
windowing settings and this file's format version. A different encoder, rate or setting never
reads stale features. Files are written atomically (emo.fileio.atomic_write); a clip already
cached is skipped. With several processes each computes its share (`rank`, `world`) and the
training loop only waits at a barrier for the others to finish.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from emo.fileio import atomic_write
from emo.media.audio import SPEECH_RATE, load_audio

FORMAT = "unstacked-float16-npy-v2"
# Audio settings that act after the cache (so changing them must not invalidate it).
_LOAD_TIME_SETTINGS = {"context", "projection_hidden"}


def cache_settings(model, fps: float) -> dict:
    """Every setting that changes the stored features (the key hashes these and the weights)."""
    audio = dataclasses.asdict(model.cfg.audio)
    enc = model.audio_encoder
    return {"format": FORMAT, "fps": float(fps), "speech_rate": SPEECH_RATE,
            "audio": {k: v for k, v in sorted(audio.items()) if k not in _LOAD_TIME_SETTINGS},
            "encoder": {"sample_rate": enc.sample_rate, "chunk_seconds": enc.chunk_seconds,
                        "margin_seconds": enc.margin_seconds, "feature_dim": enc.feature_dim}}


def encoder_key(model, fps: float) -> str:
    """Short hash of the frozen audio encoder's weights plus the feature settings."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.audio_encoder.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps(cache_settings(model, fps), sort_keys=True).encode())
    return h.hexdigest()[:16]


def cache_dir(dataset: str | os.PathLike, key: str) -> Path:
    return Path(dataset) / "cache" / "audio" / key


def feature_path(folder: str | os.PathLike, clip_id: str) -> Path:
    return Path(folder) / f"{clip_id}.npy"


@torch.no_grad()
def clip_features(model, path: str | os.PathLike, n_frames: int, fps: float) -> np.ndarray:
    """(n_frames, D) float16: each frame's own wav2vec2 feature (the centre of the stacked one)."""
    wave = load_audio(path, rate=SPEECH_RATE)
    need = int(np.ceil(n_frames * SPEECH_RATE / fps))
    if len(wave) < need:   # AAC may end a few ms early; pad with silence to cover every frame
        wave = np.pad(wave, (0, need - len(wave)))
    stacked = torch.as_tensor(model.audio_features(wave, n_frames=n_frames, fps=fps))   # (T, 2m+1, D)
    m = (stacked.shape[1] - 1) // 2
    return stacked[:, m].float().cpu().numpy().astype(np.float16)


def ensure_audio_cache(model, dataset_obj, fps: float, rank: int = 0, world: int = 1) -> Path:
    """Compute the missing per-clip features for a `ClipDataset`; returns the cache folder.

    Process `rank` of `world` computes the clips at positions rank, rank + world, ... of the
    clip-id order, so the processes share the work without coordinating; the caller waits for the
    others (a barrier) before reading."""
    out = cache_dir(dataset_obj.root, encoder_key(model, fps))
    out.mkdir(parents=True, exist_ok=True)
    clips = sorted(dataset_obj.clips, key=lambda c: c.clip_id)
    for clip in clips[rank::world]:
        path = feature_path(out, clip.clip_id)
        if path.is_file():
            continue
        feats = clip_features(model, clip.path, clip.n_frames, fps)
        atomic_write(path, lambda tmp, a=feats: np.save(tmp, a, allow_pickle=False))
    return out


def _open(folder: str | os.PathLike, clip_id: str) -> np.ndarray:
    path = feature_path(folder, clip_id)
    if not path.is_file():
        raise FileNotFoundError(f"audio features for clip {clip_id!r} missing at {path}; "
                                f"they are computed by emo.training.audio_cache.ensure_audio_cache")
    return np.load(path, mmap_mode="r", allow_pickle=False)


def load_window(folder: str | os.PathLike, clip_id: str, frames: np.ndarray, context: int) -> torch.Tensor:
    """(len(frames), 2m + 1, D) float32 for frame indices `frames` (m = `context`): each frame
    with its m neighbours on each side, edges of the clip replicated (as `stack_neighbours` does
    over the whole clip). Only the rows [min - m, max + m] are read from disk."""
    rows = _open(folder, clip_id)
    t = rows.shape[0]
    frames = np.minimum(np.asarray(frames, np.int64), t - 1)
    idx = np.clip(frames[:, None] + np.arange(-context, context + 1)[None], 0, t - 1)   # (F, 2m+1)
    lo, hi = int(idx.min()), int(idx.max()) + 1
    block = np.asarray(rows[lo:hi], dtype=np.float32)                                     # the read
    # numpy's gather: torch's advanced indexing costs ~100x more here (a few ms per sample on CPU)
    return torch.from_numpy(block[idx - lo])


def load_clip_features(folder: str | os.PathLike, clip_id: str) -> torch.Tensor:
    """The whole clip, (T, D) float32 (not stacked): for inspection and tests."""
    return torch.from_numpy(np.asarray(_open(folder, clip_id), dtype=np.float32))
