"""Generate videos from a checkpoint: one (generate_video) or many with one model load (generate_batch).

The generation settings are one typed record (`GenerationSettings`, checked by emo.typed_config):
an unknown or mistyped setting is an error before any model is loaded, whoever passes it (the
CLI, `python -m eval score --gen KEY=VALUE`, or Python).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .media.audio import SPEECH_RATE, load_audio
from .media.video import write_video
from .pipeline import DTYPES, EMOPipeline
from .typed_config import from_mapping

log = logging.getLogger(__name__)


@dataclass
class GenerationSettings:
    """The settings generate_video and generate_batch take (and `eval score --gen` passes on)."""
    fps: float = 25.0
    steps: int = 40                       # DDIM steps
    guidance: float = 3.5                 # classifier-free guidance scale (1: no unconditional pass)
    speed: float | list[float] | None = None   # head rotation deg/frame (None: the checkpoint's config)
    seed: int = 0
    crop: bool = True                     # detect the face and crop as in training
    device: str | None = None             # default: cuda when available, else cpu
    dtype: str | None = None              # bf16 | fp16 | fp32; default: bf16 on CUDA, fp32 on the CPU
    weights: Literal["ema", "raw"] | None = None   # trained weights; default: EMA when the checkpoint has them

    def __post_init__(self):
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")


def generation_settings(settings: dict | GenerationSettings | None = None, **more) -> GenerationSettings:
    """A checked GenerationSettings; unknown names and bad types raise emo.typed_config.ConfigError."""
    if isinstance(settings, GenerationSettings):
        settings = dataclasses.asdict(settings)
    return from_mapping(GenerationSettings, {**(settings or {}), **more}, where="generation settings")


def _pipeline(checkpoint, settings: GenerationSettings) -> EMOPipeline:
    if isinstance(checkpoint, EMOPipeline):      # already loaded: its device and dtype stand
        return checkpoint
    return EMOPipeline.from_checkpoint(checkpoint, settings.device, settings.dtype, weights=settings.weights)


def generate_video(checkpoint, image, audio, out, **settings) -> Path:
    """Write `out` (mp4, the audio muxed in), as many frames as the audio lasts at `fps`.
    `checkpoint` is a checkpoint folder or an EMOPipeline already loaded; settings: GenerationSettings.
    Frames go to the encoder clip by clip, so memory does not grow with the audio's length."""
    s = generation_settings(settings)
    pipe = _pipeline(checkpoint, s)
    wav = load_audio(audio, SPEECH_RATE) if not isinstance(audio, np.ndarray) else np.asarray(audio, np.float32)
    clips = pipe.iter_clips(image, wav, fps=s.fps, num_steps=s.steps, guidance=s.guidance, speed=s.speed,
                            seed=s.seed, crop=s.crop)
    return Path(write_video(out, (frame for clip in clips for frame in clip), s.fps, audio=wav,
                            audio_rate=SPEECH_RATE) or out)


def generate_batch(checkpoint, items, out_dir, **settings) -> dict[str, Path]:
    """items: (name, image, audio) tuples or dicts {"id", "image", "audio", optional "fps", "out"}.
    settings: GenerationSettings fields (fps, steps, guidance, speed, seed, crop, device, dtype, weights),
    checked before anything runs. Writes <out_dir>/<name>.mp4 (or item["out"]); the model is loaded
    once. A failing item is logged and skipped, the others still run; returns {name: path} of the
    videos written."""
    checked = generation_settings(settings)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe = _pipeline(checkpoint, checked)
    written, failed = {}, {}
    for item in items:
        if isinstance(item, dict):
            name, image, audio = item["id"], item["image"], item["audio"]
            extra = {"fps": float(item["fps"])} if item.get("fps") else {}
            out = Path(item.get("out") or out_dir / f"{name}.mp4")
        else:
            name, image, audio = item
            extra, out = {}, out_dir / f"{name}.mp4"
        try:
            written[name] = generate_video(pipe, image, audio, out, **{**dataclasses.asdict(checked), **extra})
        except Exception as exc:  # one bad input must not lose the rest of the batch
            failed[name] = f"{type(exc).__name__}: {exc}"
            log.error("generation failed for %s: %s", name, failed[name])
    if failed and not written:
        raise RuntimeError(f"every item failed: {failed}")
    return written
