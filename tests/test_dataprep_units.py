"""dataprep pieces that need no media: config, shots and clips, splits, interpolation, crops, filter."""
import math

import numpy as np
import pytest

from dataprep.config import CONFIG_DIR, DataprepConfig, config_from_dict, config_hash, load_config
from dataprep.stages.cut import clip_id_for, shots_from_cuts, split_shot
from dataprep.stages.export import labels_in_crop, smooth_squares
from dataprep.stages.faces import FaceTrack, interp_rows
from dataprep.stages.filter import failed_rules
from dataprep.stages.manifest import assign_splits, load_groups
from dataprep.config import SplitConfig


def test_configs_load_and_unknown_keys_are_errors(tmp_path):
    for name in ("default.yaml", "sample.yaml"):
        cfg = load_config(CONFIG_DIR / name)
        assert isinstance(cfg, DataprepConfig)
    assert load_config(CONFIG_DIR / "sample.yaml").faces.crop_size == 256
    assert load_config().faces.crop_size == 512
    with pytest.raises(ValueError, match=r"faces: unknown key\(s\) strid"):
        config_from_dict({"faces": {"strid": 2}})
    with pytest.raises(ValueError, match="mapping"):
        config_from_dict({"cut": 3})
    a, b = config_from_dict({}), config_from_dict({"faces": {"stride": 5}})
    assert config_hash(a) == config_hash(config_from_dict({})) != config_hash(b)


def test_shots_and_clip_lengths():
    assert shots_from_cuts([0, 50, 50, 120, 999], 200) == [(0, 50), (50, 120), (120, 200)]
    cfg = config_from_dict({}).cut        # 8-s clips, 3..12 s
    fps = 25.0
    assert split_shot(0, 250, fps, cfg) == [(0, 250)]         # 10 s: whole
    for n in (301, 500, 1000, 2513):
        clips = split_shot(100, 100 + n, fps, cfg)
        assert clips[0][0] == 100 and clips[-1][1] == 100 + n
        assert all(b == c for (_, b), (c, _) in zip(clips[:-1], clips[1:]))   # contiguous
        lengths = [(b - a) / fps for a, b in clips]
        assert all(cfg.min_clip_s <= s <= cfg.max_clip_s for s in lengths), lengths


def test_clip_ids_are_ascii_stable_and_distinct():
    a = clip_id_for("dir/vidéo 测试.mp4", 120)
    assert a.isascii() and a == clip_id_for("dir/vidéo 测试.mp4", 120)
    assert a != clip_id_for("other/vidéo 测试.mp4", 120) != clip_id_for("dir/vidéo 测试.mp4", 121)


def test_splits_by_group_deterministic_and_covering():
    cfg = SplitConfig(0.8, 0.1, 0.1)
    for n in (2, 3, 5, 20):
        groups = [f"g{i}" for i in range(n)]
        s = assign_splits(groups, cfg)
        assert s == assign_splits(list(reversed(groups)), cfg)          # order-free
        assert "test" in s.values() and "train" in s.values()
        if n >= 3:
            assert "val" in s.values()
    big = assign_splits([f"id{i}" for i in range(400)], cfg)
    assert [sum(v == k for v in big.values()) for k in ("train", "val", "test")] == [320, 40, 40]
    assert assign_splits(["only"], cfg) == {"only": "train"}
    five = assign_splits([f"v{i}" for i in range(5)], SplitConfig(0.6, 0.2, 0.2))
    assert sorted(five.values()) == ["test", "train", "train", "train", "val"]


def test_groups_csv(tmp_path):
    assert load_groups(tmp_path) == {}
    (tmp_path / "groups.csv").write_text("source_video,group\na.mp4,id1\nb/c.mp4,id1\n")
    assert load_groups(tmp_path) == {"a.mp4": "id1", "b/c.mp4": "id1"}
    (tmp_path / "groups.csv").write_text("video,who\na.mp4,x\n")
    with pytest.raises(ValueError, match="source_video,group"):
        load_groups(tmp_path)


def test_interp_rows_linear_and_held_at_ends():
    known = np.array([10.0, 14.0, 20.0])
    vals = np.array([[0.0, 1.0], [4.0, 1.0], [4.0, -5.0]])
    out = interp_rows(known, vals, np.arange(8, 23, dtype=float))
    assert np.allclose(out[:3, 0], 0)                  # before the first: held
    assert np.allclose(out[4, 0], 2.0)                 # frame 12: halfway
    assert np.allclose(out[-1], [4.0, -5.0])           # after the last: held
    assert np.allclose(out[9, 1], -2.0)                # frame 17: halfway from 1 to -5


def test_smoothed_crop_jitters_less_and_labels_are_in_crop():
    rng = np.random.default_rng(0)
    t = 100
    centre = np.stack([200 + np.linspace(0, 30, t), np.full(t, 150.0)], 1) + rng.normal(0, 3, (t, 2))
    boxes = np.concatenate([centre - 40, centre + 40], 1).astype(np.float32)
    squares = smooth_squares(boxes, fps=25, scale=1.8, smooth_s=0.5)
    raw_jitter = np.abs(np.diff(centre[:, 0], 2)).mean()
    assert np.abs(np.diff(squares[:, 0], 2)).mean() < raw_jitter / 3
    lm = np.zeros((t, 478, 3), np.float32)
    lm[..., 0] = centre[:, :1] + rng.uniform(-40, 40, (t, 478))
    lm[..., 1] = centre[:, 1:] + rng.uniform(-40, 40, (t, 478))
    track = FaceTrack(lm, np.zeros((t, 52), np.float32), np.zeros((t, 3), np.float32), boxes,
                      np.zeros(t, np.float32), 100.0)
    labels = labels_in_crop(track, squares)
    assert labels["landmarks"][..., :2].min() > 0.1 and labels["landmarks"][..., :2].max() < 0.9
    fb = labels["face_box"]
    assert (labels["boxes"][:, 0] >= fb[0] - 1e-6).all() and (labels["boxes"][:, 3] <= fb[3] + 1e-6).all()


def test_filter_rules_name_each_failure_and_skip_nan():
    cfg = config_from_dict({})
    good = dict(face_frac=0.4, sharpness=100.0, yaw_abs_max=10.0, speech_ratio=0.8, sync_confidence=0.3)
    assert failed_rules(good, 5.0, cfg) == []
    bad = dict(good, face_frac=0.05, sharpness=1.0, yaw_abs_max=70.0, speech_ratio=0.1)
    reasons = [r for r, _ in failed_rules(bad, 2.0, cfg)]
    assert reasons == ["face too small", "blurry", "yaw too large", "too short", "too little speech"]
    assert failed_rules(dict(good, speech_ratio=math.nan, sync_confidence=math.nan), 5.0, cfg) == []
