"""The maths of the metrics on inputs whose answers are known in closed form."""
import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from eval.metrics.frechet import (frechet_distance, frechet_distance_fast, frechet_distance_of_features,
                                  gaussian_stats, kid)
from eval.metrics.fid import fid_from_features, fid_from_images, inception_features
from eval.metrics.fsim import ARCFACE_TEMPLATE, similarity_transform
from eval.metrics.blink import count_blinks
from eval.metrics.head_pose import pose_range
from eval.metrics.lmd import landmark_distance
from eval.metrics.pixel import psnr_frames, ssim_frames
from emo.media.syncnet import resample_indices, sync_scores
from eval.networks.inception import FIDInceptionV3, resize_bilinear_tf1


def test_frechet_distance_of_1d_gaussians_is_closed_form():
    # N(m1, s1^2) vs N(m2, s2^2): (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0, abs=1e-9)


def test_frechet_distance_of_commuting_covariances():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))          # same eigenvectors -> commuting matrices
    a, b = rng.uniform(0.5, 3, 5), rng.uniform(0.5, 3, 5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(want, rel=1e-8)
    assert frechet_distance(mu1, q @ np.diag(a) @ q.T, mu1, q @ np.diag(a) @ q.T) == pytest.approx(0, abs=1e-7)


def test_frechet_distance_survives_singular_covariances():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(10, 30))                          # n < d: rank-deficient covariance
    y = rng.normal(size=(10, 30)) + 1.0
    d = frechet_distance_of_features(x, y)
    assert np.isfinite(d) and d > 20                        # mean shift alone contributes 30


def test_torchmetrics_fid_equals_scipy_on_the_same_features():
    rng = np.random.default_rng(2)
    gen, real = rng.normal(size=(300, 64)) * 2 + 0.3, rng.normal(size=(250, 64))
    tm, sp = fid_from_features(gen, real), frechet_distance_of_features(gen, real)
    assert tm == pytest.approx(sp, rel=1e-6)
    mu, cov = gaussian_stats(real)
    assert np.allclose(cov, np.cov(real.T))


class _FirstFeatures(torch.nn.Module):
    """The Inception module with its output cut to 24 features: same plumbing, a small covariance."""
    num_features = 24

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model(images)[:, :self.num_features]


def test_fid_through_torchmetrics_with_the_inception_module_matches_scipy():
    # A random-initialised network: this checks the plumbing and the maths, not a reported number.
    torch.manual_seed(0)
    inception = FIDInceptionV3()
    for module in inception.modules():     # default init gives ~1e-7 features: use one that keeps signal
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    model = _FirstFeatures(inception)
    rng = np.random.default_rng(3)
    gen = rng.integers(0, 256, (5, 40, 40, 3), dtype=np.uint8)
    real = np.clip(gen.astype(int) + rng.integers(-60, 60, gen.shape), 0, 255).astype(np.uint8)
    via_torchmetrics = fid_from_images(gen, real, model, batch=5)
    feats_gen, feats_real = inception_features(gen, model, 5), inception_features(real, model, 5)
    assert feats_gen.shape == (5, 24) and feats_gen.std(0).max() > 1e-3
    via_scipy = frechet_distance_of_features(feats_gen, feats_real)
    assert via_scipy > 1e-4
    assert via_torchmetrics == pytest.approx(via_scipy, rel=1e-4)


@pytest.mark.parametrize("n_gen,n_real,dim", [(40, 30, 64), (300, 200, 16)])
def test_fast_frechet_distance_equals_torchmetrics(n_gen, n_real, dim):
    rng = np.random.default_rng(n_gen)
    gen = rng.normal(size=(n_gen, dim)) @ rng.normal(size=(dim, dim)) * 0.3 + 0.2
    real = rng.normal(size=(n_real, dim))
    assert frechet_distance_fast(gen, real) == pytest.approx(fid_from_features(gen, real), rel=1e-6)


def test_tf1_bilinear_resize_uses_no_half_pixel_offset():
    x = torch.tensor([[[[0.0, 4.0], [8.0, 12.0]]]])
    y = resize_bilinear_tf1(x, 4)
    # source = dest * 0.5: columns sample 0, 0.5, 1, 1.5 (clamped to the last pixel)
    assert torch.allclose(y[0, 0, 0], torch.tensor([0.0, 2.0, 4.0, 4.0]))
    assert torch.allclose(y[0, 0, :, 0], torch.tensor([0.0, 4.0, 8.0, 8.0]))


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(200, 16)), rng.normal(size=(200, 16))
    assert abs(kid(a, b, subset_size=100, n_subsets=10)) < 0.05
    assert kid(a, b + 1.0, subset_size=100, n_subsets=10) > 0.5


def test_ssim_and_psnr_match_scikit_image_frame_by_frame():
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (3, 40, 48, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    ours_ssim, ours_psnr = ssim_frames(a, b), psnr_frames(a, b)
    for i in range(3):
        ref = structural_similarity(a[i], b[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=255, channel_axis=-1)
        assert ours_ssim[i] == pytest.approx(ref, abs=1e-7)
        assert ours_psnr[i] == pytest.approx(peak_signal_noise_ratio(a[i], b[i], data_range=255), abs=1e-9)
    assert ssim_frames(a, a) == pytest.approx(np.ones(3))
    # identical frames take the exact shortcut; the others are still computed (mixed case)
    mixed = a.copy()
    mixed[1] = b[1]
    got = ssim_frames(mixed, a)
    assert got[0] == 1.0 and got[2] == 1.0
    assert got[1] == pytest.approx(structural_similarity(b[1], a[1], gaussian_weights=True, sigma=1.5,
                                                         use_sample_covariance=False, data_range=255,
                                                         channel_axis=-1), abs=1e-9)


@pytest.mark.parametrize("late", [-4, 0, 3])
def test_sync_protocol_finds_a_known_shift_in_constructed_embeddings(late):
    n, d = 60, 32
    rng = np.random.default_rng(6)
    video = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(n, d))).float(), dim=1)
    audio = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(n, d))).float(), dim=1)
    # Audio late by `late` frames: what the mouth does at frame t is heard at t + late.
    for t in range(n):
        if 0 <= t + late < n:
            audio[t + late] = video[t]
    s = sync_scores(video, audio, vshift=15)
    assert s.offset == late
    # Known answer: at the right shift every matched pair is at distance 0 and the |late| frames
    # whose partner falls outside the clip meet the zero padding, at distance |unit vector| = 1.
    assert s.min_dist == pytest.approx(abs(late) / n, abs=1e-4)
    assert s.mean_dists[15 + late] == pytest.approx(abs(late) / n, abs=1e-4)     # index of shift +late
    assert s.confidence > 1.0                              # unrelated unit vectors are ~sqrt(2) apart
    assert len(s.mean_dists) == 31


def test_resample_to_25_fps_picks_nearest_frames():
    assert resample_indices(30, 30.0).tolist() == [round(k * 30 / 25) for k in range(25)]
    assert resample_indices(10, 25.0).tolist() == list(range(10))


def test_similarity_transform_recovers_a_known_similarity():
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = ARCFACE_TEMPLATE
    dst = src @ (scale * rot).T + shift
    m = similarity_transform(src, dst)
    assert np.allclose(m[:, :2], scale * rot, atol=1e-9) and np.allclose(m[:, 2], shift, atol=1e-9)


def test_landmark_figures_on_constructed_tracks():
    rng = np.random.default_rng(7)
    lm = rng.uniform(100, 200, (5, 478, 3))
    moved = lm * 2.0 + 30.0                                  # same face, twice as big, elsewhere
    assert landmark_distance(lm, moved) == pytest.approx(0.0, abs=1e-9)
    assert landmark_distance(lm, lm + rng.normal(0, 5, lm.shape)) > 0.01
    assert count_blinks([0, 0.6, 0.7, 0.4, 0.6, 0.2, 0, 0.9, np.nan, 0.1]) == 2   # hysteresis: 0.4 stays closed
    pose = np.array([[0, 0, 0], [10, -5, 2], [np.nan] * 3, [4, 5, 1]], float)
    assert pose_range(pose).tolist() == [10, 10, 2]
