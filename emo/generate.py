"""Generate videos from a checkpoint: one (generate_video) or many with one model load (generate_batch)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .media.audio import SPEECH_RATE, load_audio
from .media.video import write_video
from .pipeline import EMOPipeline

log = logging.getLogger(__name__)


def _pipeline(checkpoint, device=None) -> EMOPipeline:
    return checkpoint if isinstance(checkpoint, EMOPipeline) else EMOPipeline.from_checkpoint(checkpoint, device)


def generate_video(checkpoint, image, audio, out, fps: float = 25.0, steps: int = 40, guidance: float = 3.5,
                   speed=None, seed: int = 0, crop: bool = True, device=None) -> Path:
    """Write `out` (mp4, the audio muxed in), as many frames as the audio lasts at `fps`.
    `checkpoint` is a checkpoint folder or an EMOPipeline already loaded."""
    pipe = _pipeline(checkpoint, device)
    wav = load_audio(audio, SPEECH_RATE) if not isinstance(audio, np.ndarray) else audio.astype(np.float32)
    frames = pipe(image, wav, fps=fps, num_steps=steps, guidance=guidance, speed=speed, seed=seed, crop=crop)
    return Path(write_video(out, frames, fps, audio=wav, audio_rate=SPEECH_RATE) or out)


def generate_batch(checkpoint, items, out_dir, **settings) -> dict[str, Path]:
    """items: (name, image, audio) tuples or dicts {"id", "image", "audio", optional "fps", "out"}.
    Writes <out_dir>/<name>.mp4 (or item["out"]); the model is loaded once. A failing item is
    logged and skipped, the others still run; returns {name: path} of the videos written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe = _pipeline(checkpoint, settings.pop("device", None))
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
            written[name] = generate_video(pipe, image, audio, out, **{**settings, **extra})
        except Exception as exc:  # one bad input must not lose the rest of the batch
            failed[name] = f"{type(exc).__name__}: {exc}"
            log.error("generation failed for %s: %s", name, failed[name])
    if failed and not written:
        raise RuntimeError(f"every item failed: {failed}")
    return written
