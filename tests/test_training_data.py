"""emo.training.dataset / audio_cache: window rule, deterministic order, resampling, caching."""
import os

import numpy as np
import pytest
import torch

from emo.config import load_config
from emo.models.emo_model import EMOModel
from emo.training.audio_cache import ensure_audio_cache, load_clip_features
from emo.training.config import parse_data, parse_train
from emo.typed_config import ConfigError
from emo.training.dataset import ClipDataset, GlobalBatchSampler, face_mask, sample_order
from emo.training.synthetic import make_synthetic_dataset

N, F = 4, 12


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    # 30 frames (long), 13 (f <= T < n + f) and 7 (T < f)
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth"), frame_counts=[30, 13, 7], size=32)


def _data(**kw):
    base = dict(sample_size=32, n_motion=N, n_frames=F, fps=25.0, audio_cache=False)
    return parse_data({**base, **kw})


def test_window_rule_for_long_short_and_very_short_clips(synth):
    ds = ClipDataset(synth, _data(), stage=2, seed=3)
    seen = set()
    for g in range(60):
        pick = ds.choose(g)
        T = ds.clips[pick["clip"]].n_frames
        seen.add(T)
        start, ref = pick["start"], pick["reference"]
        assert len(pick["target"]) == F and len(pick["motion"]) == N
        if T >= N + F:
            assert N <= start <= T - F and pick["motion_valid"].all() and pick["frame_valid"].all()
            assert list(pick["motion"]) == list(range(start - N, start))
            assert not (start - N <= ref < start + F), "reference must lie outside the window"
        else:
            assert start == 0 and not pick["motion_valid"].any()
            assert pick["frame_valid"].sum() == min(T, F)
            assert pick["target"].max() == min(T, F) - 1
    assert seen == {30, 13, 7}


def test_stage1_reference_differs_from_target(synth):
    ds = ClipDataset(synth, _data(), stage=1, seed=0)
    for g in range(30):
        pick = ds.choose(g)
        assert pick["reference"] != pick["target"][0]


def test_order_is_deterministic_and_each_epoch_is_a_permutation(synth):
    a = [sample_order(3, 7, g) for g in range(12)]
    b = [sample_order(3, 7, g) for g in range(12)]
    c = [sample_order(3, 8, g) for g in range(12)]
    assert a == b and a != c
    for epoch in range(4):
        assert sorted(a[3 * epoch:3 * epoch + 3]) == [0, 1, 2]


def test_sampler_position_and_sharding():
    single = iter(GlobalBatchSampler(batch_size=2, position=6))
    rank0 = iter(GlobalBatchSampler(batch_size=1, position=6, rank=0, world=2))
    rank1 = iter(GlobalBatchSampler(batch_size=1, position=6, rank=1, world=2))
    for _ in range(3):
        assert next(single) == next(rank0) + next(rank1)


def test_items_shapes_values_and_masks(synth):
    ds = ClipDataset(synth, _data(), stage=2, seed=0)
    g = next(g for g in range(20) if ds.clips[ds.choose(g)["clip"]].n_frames == 30)
    item = ds[g]
    assert item["frames"].shape == (N + F, 3, 32, 32) and item["reference"].shape == (3, 32, 32)
    assert item["frames"].min() >= -1 and item["frames"].max() <= 1 and item["frames"].std() > 0.1
    box = ds.clips[ds.choose(g)["clip"]].face_box
    area = (box[2] - box[0]) * (box[3] - box[1])
    assert abs(item["face_mask"].mean().item() - area) < 0.1
    # 16 kHz audio of the target window plus m = 2 frames either side
    assert item["waveform"].shape == (round((F + 4) * 16000 / 25),)
    assert item["waveform"].abs().max() > 0.05
    assert ds[g]["frames"].equal(item["frames"])            # same g -> same sample


def test_resampling_scales_frames_and_speed(tmp_path):
    d = make_synthetic_dataset(tmp_path / "fast", frame_counts=[40], size=32, fps=50.0)
    at50 = ClipDataset(d, _data(fps=50.0), stage=2).clips[0]
    at25 = ClipDataset(d, _data(fps=25.0), stage=2).clips[0]
    assert at50.n_frames == 40 and at25.n_frames == 20
    np.testing.assert_allclose(at25.speed[1:], 2 * at50.speed[2:40:2], rtol=1e-5)


def test_face_mask_unknown_box_is_whole_image():
    assert face_mask(np.array([np.nan] * 4, np.float32), 8).mean() == 1.0
    m = face_mask(np.array([0.25, 0.5, 0.75, 1.0], np.float32), 8)
    assert m.sum() == 4 * 4 and m[0, 4:, 2:6].all()


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest.*dataprep run"):
        ClipDataset(tmp_path / "nothing", _data(), stage=1)


def test_config_typos_are_errors():
    with pytest.raises(ConfigError, match="cfg.yaml: train: unknown key.*learning_rate"):
        parse_train({"learning_rate": 1e-4}, source="cfg.yaml")
    with pytest.raises(ConfigError, match="cfg.yaml: data: sample_size must be a multiple of 8"):
        parse_data({"sample_size": 30}, source="cfg.yaml")
    with pytest.raises(ConfigError, match="train.lr: expected float"):
        parse_train({"lr": "1e-4"})
    with pytest.raises(ConfigError, match="drop_motion_prob must be in"):
        parse_train({"drop_motion_prob": 1.5})
    with pytest.raises(ConfigError, match="joint_colour_augment_prob must be in"):
        parse_train({"joint_colour_augment_prob": -0.1})
    with pytest.raises(ConfigError, match="loss_weighting"):
        parse_train({"loss_weighting": "min_snr"})
    with pytest.raises(ConfigError, match="train.ema: unknown key.*decya"):
        parse_train({"ema": {"decya": 0.9}})
    plan = parse_train({"stages": {1: {"steps": 5}, 2: {"steps": 0}, 3: {"steps": 2}}}).schedule()
    assert plan == [(1, 0, 5), (3, 5, 7)]


def test_audio_cache_written_once_and_sliced_by_window(synth):
    cfg = load_config("tiny")
    model = EMOModel.from_config(cfg, seed=0)
    ds = ClipDataset(synth, _data(), stage=2, seed=0)
    folder = ensure_audio_cache(model, ds, fps=25.0)
    files = sorted(folder.glob("*.npy"))
    assert len(files) == 3
    stamp = [os.stat(f).st_mtime_ns for f in files]
    assert ensure_audio_cache(model, ds, fps=25.0) == folder
    assert [os.stat(f).st_mtime_ns for f in files] == stamp
    cached = ClipDataset(synth, _data(), stage=2, seed=0, audio_cache=folder)
    g = next(g for g in range(20) if cached.clips[cached.choose(g)["clip"]].n_frames == 30)
    pick = cached.choose(g)
    feats = load_clip_features(folder, cached.clips[pick["clip"]].clip_id)
    assert feats.shape == (30, model.audio_encoder.feature_dim)      # stored once, not stacked
    from emo.models.speed_encoder import stack_neighbours
    assert cached[g]["audio"].equal(stack_neighbours(feats[None], 2)[0][torch.from_numpy(pick["target"])])
    # another encoder (different weights) -> another cache folder
    other = EMOModel.from_config(cfg, seed=1)
    assert ensure_audio_cache(other, ds, fps=25.0) != folder
