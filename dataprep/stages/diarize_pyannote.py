"""The pyannote.audio diarization backend (optional extra ``emo-toolkit[pyannote]``).

Loads a pipeline from a local folder / config.yaml (offline) or a hub id with a token read from
an environment variable, and turns its annotation into ``Turn``s labelled spk0, spk1, ...
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from emo.media.audio import SPEECH_RATE

from ..config import DiarizeConfig
from .common import Turn

_PIPELINES: dict[str, object] = {}


def diarize_pyannote(audio: np.ndarray, cfg: DiarizeConfig) -> list[Turn]:
    pipeline = load_pyannote_pipeline(cfg)
    import torch
    output = pipeline({"waveform": torch.from_numpy(audio)[None], "sample_rate": SPEECH_RATE})
    # pyannote.audio 4 returns an object holding the annotation; 3.x returns the annotation.
    annotation = getattr(output, "speaker_diarization", output)
    turns = [Turn(float(seg.start), float(seg.end), str(label))
             for seg, _, label in annotation.itertracks(yield_label=True)]
    names: dict[str, str] = {}
    for t in sorted(turns, key=lambda t: t.start):
        names.setdefault(t.speaker, f"spk{len(names)}")
    return sorted((Turn(t.start, t.end, names[t.speaker]) for t in turns), key=lambda t: t.start)


def load_pyannote_pipeline(cfg: DiarizeConfig):
    """A pyannote.audio pipeline from a local folder / config.yaml or a hub id (token from
    ``cfg.pyannote_token_env``), moved to ``cfg.device``. Cached per (source, device)."""
    if not cfg.pyannote_pipeline:
        raise ValueError("backend 'pyannote' needs cfg.pyannote_pipeline: a local pipeline folder "
                         "or config.yaml, or a hub id such as pyannote/speaker-diarization-3.1")
    key = f"pyannote:{cfg.pyannote_pipeline}:{cfg.device}"
    if key in _PIPELINES:
        return _PIPELINES[key]
    try:
        from pyannote.audio import Pipeline
    except ImportError as exc:
        raise ImportError(
            f"the pyannote diarization backend needs pyannote.audio, which could not be imported "
            f"({exc}). Install the optional extra: pip install 'emo-toolkit[pyannote]' "
            f"(it needs a torchaudio build matching your torch), or use backend='offline'."
        ) from exc
    source = cfg.pyannote_pipeline
    local = Path(source).expanduser()
    if local.exists():
        source = str(local / "config.yaml") if local.is_dir() else str(local)
        token = None
    else:
        token = os.environ.get(cfg.pyannote_token_env)
        if not token:
            raise RuntimeError(
                f"pyannote pipeline {source!r} is not a local path and ${cfg.pyannote_token_env} "
                f"is not set: accept the model's conditions on the hub, create a token and export "
                f"{cfg.pyannote_token_env}=..., or download the pipeline and give its folder.")
    try:  # pyannote.audio >= 4 takes `token`, 3.x `use_auth_token`
        pipeline = Pipeline.from_pretrained(source, token=token)
    except TypeError:
        pipeline = Pipeline.from_pretrained(source, use_auth_token=token)
    if pipeline is None:  # 3.x returns None instead of raising when the hub refuses
        raise RuntimeError(f"pyannote could not load pipeline {source!r} (gated model or bad token?)")
    import torch
    pipeline.to(torch.device(cfg.device))
    _PIPELINES[key] = pipeline
    return pipeline
