"""Smooth head motion and blinks: the per-frame curves a drawn head follows."""
from __future__ import annotations

import numpy as np


def smooth_curve(rng: np.random.Generator, n: int, fps: float, amplitude: float,
                 freqs: tuple[float, float] = (0.08, 0.45), n_waves: int = 3) -> np.ndarray:
    """A sum of a few slow sinusoids, scaled so its peak |value| is `amplitude`."""
    t = np.arange(n) / fps
    out = np.zeros(n)
    for _ in range(n_waves):
        f = rng.uniform(*freqs)
        out += rng.uniform(0.5, 1.0) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    peak = np.abs(out).max()
    return out * (amplitude / peak) if peak > 0 else out


def head_motion(rng: np.random.Generator, n: int, fps: float, yaw: float = 18.0, pitch: float = 5.0,
                roll: float = 6.0, shift: float = 6.0) -> dict[str, np.ndarray]:
    """Yaw, pitch, roll (degrees) and x, y translation (pixels) for n frames."""
    return {
        "yaw": smooth_curve(rng, n, fps, rng.uniform(0.6, 1.0) * yaw),
        "pitch": smooth_curve(rng, n, fps, rng.uniform(0.6, 1.0) * pitch),
        "roll": smooth_curve(rng, n, fps, rng.uniform(0.6, 1.0) * roll),
        "dx": smooth_curve(rng, n, fps, shift, freqs=(0.05, 0.2), n_waves=2),
        "dy": smooth_curve(rng, n, fps, shift * 0.5, freqs=(0.05, 0.2), n_waves=2),
    }


def blinks(rng: np.random.Generator, n: int, fps: float, every: tuple[float, float] = (2.0, 4.5),
           length_s: float = 0.2) -> np.ndarray:
    """Eyelid closure per frame in [0, 1]: 1 = fully closed, a short bump at each blink."""
    out = np.zeros(n)
    half = max(1, int(round(length_s * fps / 2)))
    t = int(rng.uniform(0.5, every[1]) * fps)
    bump = 1 - np.abs(np.arange(-half, half + 1)) / (half + 1)   # peaks at 1 in the middle
    bump = np.clip(bump * 1.3, 0, 1)
    while t + half < n:
        out[t - half:t + half + 1] = np.maximum(out[t - half:t + half + 1], bump)
        t += int(rng.uniform(*every) * fps)
    return out
