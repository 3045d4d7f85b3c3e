"""Frechet distance between Gaussians fitted to two feature sets (FID, FVD, E-FID), and KID.

d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), computed in float64 with scipy's sqrtm.
Numerical care, as in the FID reference code: if the product is (near-)singular, sqrtm is
retried on (S1 + eps I)(S2 + eps I); a small imaginary part from round-off is dropped, a large
one is an error (it means the covariances are not valid).
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (rows = samples), as torchmetrics and pytorch-fid compute them."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need a (n >= 2, d) feature array, got {x.shape}")
    return x.mean(0), np.cov(x, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError(f"shapes differ: {mu1.shape} vs {mu2.shape}, {s1.shape} vs {s2.shape}")
    diff = mu1 - mu2
    product = s1 @ s2
    with warnings.catch_warnings():
        # A singular product is expected with few samples; the error check below handles it.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(product)
    # sqrtm of a (near-)singular product can be inaccurate or non-finite: retry regularised.
    if not np.isfinite(covmean).all() or _sqrtm_error(covmean, product) > 1e-3:
        offset = np.eye(s1.shape[0]) * eps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", linalg.LinAlgWarning)
            covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag)):.3g} in sqrtm: "
                             "covariances are not positive semi-definite")
        covmean = covmean.real
    # A distance is never negative; rounding can leave about -1e-9 for identical sets.
    return max(0.0, float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean)))


def _sqrtm_error(root: np.ndarray, a: np.ndarray) -> float:
    norm = np.linalg.norm(a)
    return float(np.linalg.norm(root @ root - a) / norm) if norm > 0 else 0.0


def frechet_distance_of_features(gen: np.ndarray, real: np.ndarray) -> float:
    return frechet_distance(*gaussian_stats(gen), *gaussian_stats(real))


def frechet_distance_fast(gen: np.ndarray, real: np.ndarray) -> float:
    """The same Frechet distance from feature rows, without a general sqrtm (for bootstraps).

    Tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of S1 S2. With centred
    rows A (n1 x d) and B (n2 x d), S1 S2 = A'A B'B / c, whose non-zero eigenvalues are those of
    (A B')(A B')' / c: the trace is the nuclear norm of A B' / sqrt(c), c = (n1 - 1)(n2 - 1).
    When d is the smaller side, the symmetric form S1^(1/2) S2 S1^(1/2) (eigvalsh) is used.
    """
    x, y = np.asarray(gen, np.float64), np.asarray(real, np.float64)
    if len(x) < 2 or len(y) < 2:
        return float("nan")
    a, b = x - x.mean(0), y - y.mean(0)
    n1, n2, d = len(x), len(y), x.shape[1]
    diff = x.mean(0) - y.mean(0)
    tr1, tr2 = (a * a).sum() / (n1 - 1), (b * b).sum() / (n2 - 1)
    if min(n1, n2) <= d:
        cross = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    else:
        s1, s2 = a.T @ a / (n1 - 1), b.T @ b / (n2 - 1)
        w, v = np.linalg.eigh(s1)
        root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ s2 @ root), 0, None)).sum()
    # A distance is never negative; rounding can leave about -1e-9 for identical sets.
    return max(0.0, float(diff @ diff + tr1 + tr2 - 2.0 * cross))


def stack_features(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenate per-clip (n_i, d) arrays, skipping empty ones (clips with no usable frames)."""
    parts = [np.asarray(p, np.float64) for p in parts if np.asarray(p).size]
    if not parts:
        return np.zeros((0, 0))
    return np.concatenate(parts, 0)


def kid(gen: np.ndarray, real: np.ndarray, subset_size: int = 1000, n_subsets: int = 100,
        seed: int = 0) -> float:
    """Kernel Inception Distance: unbiased MMD^2 with the cubic polynomial kernel
    k(x, y) = (x.y / d + 1)^3, averaged over random subsets (Binkowski et al. 2018)."""
    x, y = np.asarray(gen, np.float64), np.asarray(real, np.float64)
    m = min(subset_size, len(x), len(y))
    if m < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    d = x.shape[1]
    vals = []
    for _ in range(n_subsets):
        a = x[rng.choice(len(x), m, replace=False)]
        b = y[rng.choice(len(y), m, replace=False)]
        kxx, kyy, kxy = (a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3
        vals.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                    - 2 * kxy.mean())
    return float(np.mean(vals))


class FrechetOfFeatures:
    """Mixin for set-level metrics that are a Frechet distance between per-clip feature rows."""

    def aggregate(self, gen, real) -> float:
        g, r = stack_features(gen), stack_features(real)
        if len(g) < 2 or len(r) < 2:
            return float("nan")
        return frechet_distance_of_features(g, r)

    def bootstrap_aggregate(self, gen, real) -> float:
        """Same number as `aggregate` (tested) without scipy's general sqrtm: for bootstrap resamples."""
        return frechet_distance_fast(stack_features(gen), stack_features(real))
