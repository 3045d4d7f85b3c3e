"""SSIM and PSNR of generated frames against ground-truth frames, averaged over the frames of a clip.

SSIM is Wang et al. 2004 with the standard settings (scikit-image `structural_similarity(...,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1)`:
11 x 11 Gaussian window (truncate 3.5), K1 = 0.01, K2 = 0.03, reflect padding, the border of
half a window left out of the mean, channels averaged), vectorised over frames here; PSNR is
10 log10(255^2 / MSE) per frame over all pixels and channels (`peak_signal_noise_ratio`,
data_range=255), averaged over frames. Tests check both against scikit-image frame by frame.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from .base import ClipSample, Metric

SIGMA, TRUNCATE, K1, K2, PEAK = 1.5, 3.5, 0.01, 0.03, 255.0


def ssim_frames(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(T, H, W, C) uint8 pairs -> (T,) SSIM per frame."""
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"need two (T, H, W, C) arrays of one shape, got {a.shape} and {b.shape}")
    x, y = a.astype(np.float64), b.astype(np.float64)
    sig = (0, SIGMA, SIGMA, 0)                   # blur over H and W only

    def blur(z):
        return gaussian_filter(z, sigma=sig, truncate=TRUNCATE, mode="reflect")

    ux, uy = blur(x), blur(y)
    vx, vy, vxy = blur(x * x) - ux * ux, blur(y * y) - uy * uy, blur(x * y) - ux * uy
    c1, c2 = (K1 * PEAK) ** 2, (K2 * PEAK) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    pad = (2 * int(TRUNCATE * SIGMA + 0.5) + 1 - 1) // 2      # skimage crops (win_size - 1) // 2
    return s[:, pad:-pad, pad:-pad, :].mean(axis=(1, 2, 3))


def psnr_frames(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(PEAK ** 2 / mse)


class SSIM(Metric):
    name = "ssim"
    direction = "higher"
    description = "SSIM (Gaussian 11x11, sigma 1.5) of generated vs ground-truth frames, mean over frames"

    def score_clip(self, sample: ClipSample) -> float:
        return float(ssim_frames(sample.generated, sample.ground_truth).mean())


class PSNR(Metric):
    name = "psnr"
    direction = "higher"
    description = "PSNR (dB, peak 255) of generated vs ground-truth frames, mean over frames (identical frames: inf, left out)"

    def score_clip(self, sample: ClipSample) -> float:
        values = psnr_frames(sample.generated, sample.ground_truth)
        finite = values[np.isfinite(values)]
        # Identical frames have infinite PSNR; they cannot be averaged, so the clip's value is the
        # mean of the finite ones, or inf when every frame is identical (the ground-truth baseline).
        return float(finite.mean()) if finite.size else float("inf")
