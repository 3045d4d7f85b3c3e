"""Per-clip audio features from the frozen wav2vec2, computed once and stored beside the dataset.

Layout: <dataset>/cache/audio/<key>/<clip_id>.safetensors with one tensor `features`
(T, 2m + 1, D) for the clip's T frames at data.fps. <key> hashes the audio encoder's weights, the
projection-independent audio settings and the fps, so a different encoder or rate never reads
stale features. Files are written atomically; a clip already cached is skipped.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from emo.media.audio import SPEECH_RATE, load_audio


def encoder_key(model, fps: float) -> str:
    """Short hash of the frozen audio encoder's weights plus the feature settings."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.audio_encoder.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    cfg = getattr(model, "config", None)
    audio_cfg = getattr(cfg, "audio", None)
    settings = {"fps": float(fps), "audio": repr(audio_cfg)}
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()[:16]


def cache_dir(dataset: str | os.PathLike, key: str) -> Path:
    return Path(dataset) / "cache" / "audio" / key


@torch.no_grad()
def ensure_audio_cache(model, dataset_obj, fps: float) -> Path:
    """Compute the missing per-clip features for a `ClipDataset`; returns the cache folder."""
    out = cache_dir(dataset_obj.root, encoder_key(model, fps))
    out.mkdir(parents=True, exist_ok=True)
    for clip in dataset_obj.clips:
        path = out / f"{clip.clip_id}.safetensors"
        if path.is_file():
            continue
        wave = load_audio(clip.path, rate=SPEECH_RATE)
        need = int(np.ceil(clip.n_frames * SPEECH_RATE / fps))
        if len(wave) < need:   # AAC may end a few ms early; pad with silence to cover every frame
            wave = np.pad(wave, (0, need - len(wave)))
        feats = model.audio_features(wave, n_frames=clip.n_frames, fps=fps)
        feats = torch.as_tensor(feats).float().cpu().contiguous()
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp")
        save_file({"features": feats}, str(tmp), metadata={"clip_id": clip.clip_id, "fps": str(fps)})
        os.replace(tmp, path)
    return out


def load_clip_features(folder: str | os.PathLike, clip_id: str) -> torch.Tensor:
    path = Path(folder) / f"{clip_id}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"audio features for clip {clip_id!r} missing at {path}; "
                                f"they are computed by emo.training.audio_cache.ensure_audio_cache")
    return load_file(str(path))["features"]
