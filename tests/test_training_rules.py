"""Training the cases inference meets (issue 13, section 1): condition and motion-frame drop rates
counted over many seeded draws, the speed-bucket code, the face mask's training/inference box
ratio, stage 1 skipping the temporal modules."""
import math
import types

import numpy as np
import pytest
import torch

from emo.config import SpeedConfig, load_config
from emo.face_mask import box_scale, clip_box_scale, expand_box, inference_face_box
from emo.models.emo_model import SD15_SCHEDULER, EMOModel
from emo.models.speed_encoder import SpeedEncoder
from emo.training.config import parse_data
from emo.training.dataset import ClipDataset
from emo.training.step import StageLoss
from emo.training.synthetic import make_synthetic_dataset

N_DRAWS = 20000


def _within(count: int, n: int, p: float, sigmas: float = 4.5) -> bool:
    """count of n Bernoulli(p) draws within `sigmas` standard deviations of n p (a false alarm
    about once in 150 000 runs; a seeded run either always passes or always fails)."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


def _loss(stage=2, ref=0.05, audio=0.05, both=0.05):
    model = types.SimpleNamespace(noise_scheduler_config=dict(SD15_SCHEDULER))
    return StageLoss(model, stage, 4, drop_reference_prob=ref, drop_audio_prob=audio, drop_both_prob=both)


def _count_drops(loss_fn, n=N_DRAWS, seed=0):
    g = torch.Generator().manual_seed(seed)
    counts = {(False, False): 0, (True, False): 0, (False, True): 0, (True, True): 0}
    for _ in range(n):
        counts[loss_fn.drops(g)] += 1
    return counts


@pytest.mark.parametrize("ref,audio,both", [(0.05, 0.05, 0.05), (0.1, 0.2, 0.15)])
def test_condition_drop_rates(ref, audio, both):
    c = _count_drops(_loss(ref=ref, audio=audio, both=both))
    # The joint coin first; the single coins apply to the other steps.
    p_both = both + (1 - both) * ref * audio
    p_ref_only = (1 - both) * ref * (1 - audio)
    p_audio_only = (1 - both) * (1 - ref) * audio
    assert _within(c[(True, True)], N_DRAWS, p_both), c
    assert _within(c[(True, False)], N_DRAWS, p_ref_only), c
    assert _within(c[(False, True)], N_DRAWS, p_audio_only), c
    # the old rule (independent coins only) gives both in ref * audio = 0.25 % of steps: far outside
    assert not _within(c[(True, True)], N_DRAWS, ref * audio)


def test_no_drops_in_stage1_and_stream_independent_of_probabilities():
    assert _count_drops(_loss(stage=1), n=500)[(False, False)] == 500
    # three coins every step whatever the probabilities: the noise drawn after them is the same
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    _loss(ref=0.0, audio=0.0, both=0.0).drops(g1)
    _loss(ref=1.0, audio=0.5, both=0.3).drops(g2)
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))


def test_truncated_snr_weighting_weights_the_clean_latent_error_by_max_snr_1():
    # The rule as stated (Salimans & Ho 2022): epsilon MSE x weight == max(SNR, 1) x the MSE of the
    # clean latent x0 that the predicted noise implies; plain epsilon MSE == SNR x that MSE.
    plain, weighted = _loss(stage=1), _loss(stage=1)
    weighted.loss_weighting = "truncated_snr"
    ab_all = weighted.scheduler.alphas_cumprod
    t = torch.tensor([1, 250, 500, 600, 800, 999])
    g = torch.Generator().manual_seed(0)
    x0, eps, eps_hat = torch.randn(3, len(t), 4, 8, 8, generator=g)
    ab = ab_all[t].float()[:, None, None, None]
    z = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    x0_hat = (z - (1 - ab).sqrt() * eps_hat) / ab.sqrt()
    eps_mse, x0_mse = ((eps_hat - eps) ** 2).mean((1, 2, 3)), ((x0_hat - x0) ** 2).mean((1, 2, 3))
    snr = ab.flatten() / (1 - ab.flatten())
    assert torch.allclose(eps_mse * weighted.timestep_weight(t), torch.maximum(snr, torch.ones(())) * x0_mse, rtol=1e-3)
    assert torch.allclose(eps_mse * plain.timestep_weight(t), snr * x0_mse, rtol=1e-3)
    w = weighted.timestep_weight(t)
    assert torch.all(w[:2] == 1) and w[-1] > 100          # unchanged where SNR >= 1; t = 999: x 1/SNR
    with pytest.raises(ValueError, match="loss_weighting"):
        StageLoss(types.SimpleNamespace(noise_scheduler_config=dict(SD15_SCHEDULER)), 1, 4, loss_weighting="p2")


@pytest.fixture(scope="module")
def long_clips(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("rules"), frame_counts=[40, 30], size=32)


def _data():
    return parse_data(dict(sample_size=32, n_motion=4, n_frames=12, fps=25.0, audio_cache=False))


def test_motion_frames_dropped_at_the_configured_rate(long_clips):
    p, n = 0.05, 8000
    ds = ClipDataset(long_clips, _data(), stage=2, seed=1, drop_motion_prob=p)
    keep = ClipDataset(long_clips, _data(), stage=2, seed=1, drop_motion_prob=0.0)
    dropped = 0
    for g in range(n):
        pick, base = ds.choose(g), keep.choose(g)
        valid = pick["motion_valid"]
        assert valid.all() or not valid.any()            # the whole window's motion frames, or none
        dropped += not valid.any()
        assert base["motion_valid"].all()                # long clips: never dropped at p = 0
        # the coin has its own stream: the window and reference do not depend on it
        assert pick["start"] == base["start"] and pick["reference"] == base["reference"]
    assert _within(dropped, n, p), dropped
    assert not _within(dropped, n, 0.0) and not _within(dropped, n, 0.2)
    # a dropped window's motion frames reach the model as zeros, marked invalid
    g = next(g for g in range(200) if not ds.choose(g)["motion_valid"].any())
    item = ds[g]
    assert not item["motion_valid"].any() and item["frames"][:4].abs().max() == 0
    assert item["frames"][4:].abs().max() > 0


def test_joint_colour_augment_one_transform_for_reference_target_and_motion(long_clips):
    # Issue 12: the reference must be the only source of a frame's colours, so the transform is
    # the same for every frame of a sample, drawn from the sample's own stream (seed, g, 3).
    p = 0.5
    ds = ClipDataset(long_clips, _data(), stage=2, seed=1, joint_colour_augment_prob=p, drop_motion_prob=0.05)
    plain = ClipDataset(long_clips, _data(), stage=2, seed=1, drop_motion_prob=0.05)
    again = ClipDataset(long_clips, _data(), stage=2, seed=1, joint_colour_augment_prob=p, drop_motion_prob=0.05)
    always = ClipDataset(long_clips, _data(), stage=2, seed=1, joint_colour_augment_prob=1.0, drop_motion_prob=0.05)
    n, augmented = 4000, 0
    for g in range(n):
        pick, base = ds.choose(g), plain.choose(g)
        # the coin has its own stream: the frames chosen do not depend on it
        assert all(np.array_equal(pick[k], base[k]) for k in base if k != "colour")
        assert base["colour"] is None and pick["colour"] == again.choose(g)["colour"]   # a pure function of (seed, g)
        if pick["colour"] is not None:
            augmented += 1
            assert pick["colour"] == always.choose(g)["colour"]     # the transform does not depend on p
    assert _within(augmented, n, p), augmented
    transforms = {always.choose(g)["colour"] for g in range(20)}
    assert len(transforms) == 20                                  # a fresh transform per sample
    # decoded: the sample's frames are exactly the plain sample's frames under ONE transform
    g_drop = next(g for g in range(400) if not always.choose(g)["motion_valid"].any())
    for g in (0, 1, g_drop):
        item, base, t = always[g], plain[g], always.choose(g)["colour"]
        assert torch.allclose(item["reference"], t(base["reference"]), atol=1e-6)
        valid = item["motion_valid"]
        assert torch.allclose(item["frames"][4:], t(base["frames"][4:]), atol=1e-6)
        assert torch.allclose(item["frames"][:4][valid], t(base["frames"][:4][valid]), atol=1e-6)
        assert not item["frames"][:4][~valid].any()      # no motion frames: still zeros
        assert (item["reference"] - base["reference"]).abs().mean() > 0.05  # it did change the colours


# ---- speed buckets --------------------------------------------------------------------------------
EXCITED = 0.9        # a bucket is excited at speed w when |s_i(w)| < 0.9: its tanh ramp is not saturated


def _speed_settings():
    yield "SpeedConfig default", SpeedConfig().centres, SpeedConfig().radii
    for name in ("tiny", "sd15"):
        s = load_config(name).speed
        yield name, s.centres, s.radii
    enc = SpeedEncoder()
    yield "SpeedEncoder default", enc.config.centres, enc.config.radii


@pytest.mark.parametrize("name,centres,radii", list(_speed_settings()))
def test_every_speed_excites_two_buckets_and_near_speeds_differ(name, centres, radii):
    enc = SpeedEncoder(centres=tuple(centres), radii=tuple(radii))
    w = torch.linspace(min(centres), max(centres), 2001)
    codes = enc.buckets(w[None])[0]                                   # (2001, d), the paper's formula
    excited = (codes.abs() < EXCITED).sum(1)
    assert int(excited.min()) >= 2, f"{name}: speed {float(w[excited.argmin()]):.3f} excites {int(excited.min())}"
    a, b = enc.buckets(torch.tensor([[0.10, 0.15]]))[0]
    assert float((a - b).abs().max()) > 0.1, f"{name}: 0.10 and 0.15 deg/frame give nearly the same code"


def test_old_radii_fail_the_bucket_rule():
    # The radii before this change (1/2 gap): most speeds excite no bucket at all.
    enc = SpeedEncoder(centres=(0.0, 0.25, 0.5, 0.75, 1.0), radii=(0.125,) * 5)
    codes = enc.buckets(torch.linspace(0, 1, 101)[None])[0]
    assert int((codes.abs() < EXCITED).sum(1).min()) < 2


# ---- face mask --------------------------------------------------------------------------------
def test_clip_box_scale_and_expansion():
    boxes = np.array([[0.2, 0.3, 0.6, 0.7], [0.3, 0.3, 0.7, 0.7], [0.4, 0.3, 0.8, 0.7], [np.nan] * 4])
    union = np.array([0.2, 0.3, 0.8, 0.7])
    assert clip_box_scale(boxes, union) == pytest.approx((1.5, 1.0))    # head moved sideways
    assert clip_box_scale(np.full((3, 4), np.nan), union) is None
    s = box_scale([(1.5, 1.0), (1.1, 1.2), None, (1.3, 1.1)])
    assert (s["x"], s["y"], s["clips"]) == (pytest.approx(1.3), pytest.approx(1.1), 3)
    assert expand_box(np.array([0.4, 0.4, 0.6, 0.6]), (1.5, 2.0)) == pytest.approx([0.35, 0.3, 0.65, 0.7])
    assert expand_box(np.array([0.0, 0.1, 0.5, 0.5]), (2.0, 1.0)) == pytest.approx([0.0, 0.1, 0.75, 0.5])


def test_inference_box_follows_the_checkpoint_with_override():
    box = np.array([0.3, 0.3, 0.7, 0.7], np.float32)
    model = types.SimpleNamespace(face_mask_scale={"x": 1.5, "y": 1.25})
    assert inference_face_box(box, model) == pytest.approx([0.2, 0.25, 0.8, 0.75])
    assert inference_face_box(box, model, scale=1.0) == pytest.approx(box)            # override
    assert inference_face_box(box, model, scale=(2.0, 1.0)) == pytest.approx([0.1, 0.3, 0.9, 0.7])
    assert inference_face_box(box, types.SimpleNamespace(face_mask_scale=None)) == pytest.approx(box)
    with pytest.raises(ValueError):
        inference_face_box(box, model, scale=0.0)


def test_dataset_measures_the_union_to_single_box_ratio(long_clips):
    # The synthetic head sways left-right (disc radius 0.3, centre +-0.1): union wider, same height.
    s = ClipDataset(long_clips, _data(), stage=2).face_mask_scale()
    assert s["clips"] == 2 and 1.1 < s["x"] < 1.5 and s["y"] == pytest.approx(1.0, abs=0.02)


# ---- stage 1 skips the temporal modules -------------------------------------------------------
def test_stage1_does_not_run_the_temporal_modules(monkeypatch):
    model = EMOModel.from_config(load_config("tiny"))
    base = type(model.backbone.temporal_modules()[0]).__mro__[1]
    calls = []
    original = base.forward
    monkeypatch.setattr(base, "forward", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    noisy = torch.randn(1, 1, 4, 8, 8)
    ref = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        model.set_stage(1)
        out1 = model.predict_noise(noisy, torch.tensor([10]), model.reference_bank(ref))
        assert calls == []
        model.set_stage(2)
        model.predict_noise(torch.randn(1, 12, 4, 8, 8), torch.tensor([10]), model.reference_bank(ref))
    assert len(calls) == len(model.backbone.temporal_modules())
    assert out1.shape == noisy.shape
