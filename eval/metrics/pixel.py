"""SSIM and PSNR of generated frames against ground-truth frames, averaged over the frames of a clip.

SSIM is Wang et al. 2004 with the standard settings (scikit-image `structural_similarity(...,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1)`:
11 x 11 Gaussian window (truncate 3.5), K1 = 0.01, K2 = 0.03, reflect padding, the border of
half a window left out of the mean, channels averaged), vectorised over frames here; PSNR is
10 log10(255^2 / MSE) per frame over all pixels and channels (`peak_signal_noise_ratio`,
data_range=255), averaged over frames, each frame capped at PSNR_CEILING_DB. Tests check both
against scikit-image frame by frame.

The PSNR ceiling: identical frames have infinite PSNR. Dropping them (as before) worked against
the better system (its best frames vanished from its mean), so each frame is capped at 100 dB
instead. 100 dB is above any real difference of 8-bit frames of the sizes used here (one grey
level on one pixel of a 512 x 512 frame is 107 dB; of a 64 x 64 frame 89 dB... so a frame
differing by one level in one pixel at 64 x 64 scores 89 dB and an identical one 100 dB).
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from .base import ClipSample, Metric

SIGMA, TRUNCATE, K1, K2, PEAK = 1.5, 3.5, 0.01, 0.03, 255.0
PSNR_CEILING_DB = 100.0


def ssim_frames(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(T, H, W, C) uint8 pairs -> (T,) SSIM per frame."""
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"need two (T, H, W, C) arrays of one shape, got {a.shape} and {b.shape}")
    # SSIM(x, x) = 1 exactly (numerator and denominator are the same product): frames identical to
    # the ground truth (its baseline, the shifted-audio baseline) skip the filtering, which is most
    # of evaluation's CPU time on the demo.
    same = (a == b).reshape(len(a), -1).all(1)
    out = np.ones(len(a))
    if same.all():
        return out
    if same.any():
        out[~same] = ssim_frames(a[~same], b[~same])
        return out
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
    protocol_fields = {"frames": "every aligned frame", "resize": "generated resized to the ground truth's size "
                       "(alignment rule)", "window": "Gaussian 11x11, sigma 1.5, K1 0.01, K2 0.03, channels averaged"}

    def score_clip(self, sample: ClipSample) -> float:
        return float(ssim_frames(sample.generated, sample.ground_truth).mean())


class PSNR(Metric):
    name = "psnr"
    direction = "higher"
    description = f"PSNR (dB, peak 255) of generated vs ground-truth frames, mean over frames, each capped at {PSNR_CEILING_DB:g} dB"
    protocol_fields = {"frames": "every aligned frame", "resize": "generated resized to the ground truth's size "
                       "(alignment rule)", "ceiling": f"{PSNR_CEILING_DB:g} dB per frame (identical frames)"}

    def score_clip(self, sample: ClipSample) -> float:
        return float(np.minimum(psnr_frames(sample.generated, sample.ground_truth), PSNR_CEILING_DB).mean())
