"""The audio cache (emo/training/audio_cache.py): unstacked float16 rows, only the rows a sample
needs read, every setting that changes the rows in the key, each process its share."""
import dataclasses

import numpy as np
import pytest
import torch

from emo.config import load_config
from emo.models.emo_model import EMOModel
from emo.models.speed_encoder import stack_neighbours
from emo.training import audio_cache as ac
from emo.training.config import parse_data
from emo.training.dataset import ClipDataset
from emo.training.synthetic import make_synthetic_dataset


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    data = make_synthetic_dataset(tmp_path_factory.mktemp("cache"), frame_counts=[40, 13, 7], size=32)
    model = EMOModel.from_config(load_config("tiny"), seed=0)
    dcfg = parse_data(dict(sample_size=32, n_motion=4, n_frames=12, fps=25.0))
    ds = ClipDataset(data, dcfg, stage=2, seed=0)
    folder = ac.ensure_audio_cache(model, ds, fps=25.0)
    return data, model, dcfg, ds, folder


def test_stored_once_in_float16_within_tolerance(setup):
    data, model, _, ds, folder = setup
    clip = next(c for c in ds.clips if c.n_frames == 40)
    stored = np.load(ac.feature_path(folder, clip.clip_id))
    assert stored.dtype == np.float16 and stored.shape == (40, model.audio_encoder.feature_dim)
    # what the model computes today (float32, stacked): the centre row is the frame's own feature
    from emo.media.audio import SPEECH_RATE, load_audio
    wave = load_audio(clip.path, rate=SPEECH_RATE)
    wave = np.pad(wave, (0, max(0, int(np.ceil(40 * SPEECH_RATE / 25.0)) - len(wave))))
    full = model.audio_features(wave, n_frames=40, fps=25.0)                   # (40, 5, D) float32
    centre = full[:, 2]
    err = (torch.from_numpy(stored.astype(np.float32)) - centre).abs().max()
    assert err <= 1e-3 * centre.abs().max() + 1e-6                            # float16: 11 bits


def test_window_equals_the_old_stacking(setup):
    _, model, _, ds, folder = setup
    for clip in ds.clips:                           # long, f <= T < n + f, and T < f (held frames)
        full = ac.load_clip_features(folder, clip.clip_id)
        old = stack_neighbours(full[None], 2, dim=1)[0]                        # (T, 5, D) as before
        for start in (0, clip.n_frames // 3, max(0, clip.n_frames - 12)):
            target = np.minimum(start + np.arange(12), clip.n_frames - 1)
            got = ac.load_window(folder, clip.clip_id, target, context=2)
            assert got.shape == (12, 5, model.audio_encoder.feature_dim)
            assert torch.equal(got, old[torch.from_numpy(target)])
        # another context is a load-time choice: the same file serves it
        target = np.arange(min(5, clip.n_frames))
        assert torch.equal(ac.load_window(folder, clip.clip_id, target, context=1),
                           stack_neighbours(full[None], 1, dim=1)[0][torch.from_numpy(target)])


class _Recorder:
    """Wraps the memory-mapped array and records which rows are indexed."""

    def __init__(self, arr, log):
        self.arr, self.log = arr, log
        self.shape = arr.shape

    def __getitem__(self, key):
        rows = range(self.arr.shape[0])[key]
        self.log.append(len(rows))
        return self.arr[key]


def test_reads_only_the_rows_a_sample_needs(setup, monkeypatch):
    _, _, dcfg, ds, folder = setup
    cached = ClipDataset(ds.root, dcfg, stage=2, seed=0, audio_cache=folder, audio_context=2)
    real_open, log = ac._open, []
    monkeypatch.setattr(ac, "_open", lambda *a: _Recorder(real_open(*a), log))
    for g in range(12):
        pick = cached.choose(g)
        clip = cached.clips[pick["clip"]]
        log.clear()
        cached._audio(clip, pick["target"])
        t = clip.n_frames
        needed = {int(np.clip(f + d, 0, t - 1)) for f in pick["target"] for d in range(-2, 3)}
        assert log == [len(needed)], (clip.n_frames, pick["start"], log, len(needed))
        assert len(needed) <= 12 + 4


def test_key_changes_with_each_setting_that_changes_the_rows(setup):
    _, model, _, _, _ = setup
    base = ac.encoder_key(model, 25.0)
    assert ac.encoder_key(model, 25.0) == base
    assert ac.encoder_key(model, 30.0) != base
    audio = model.cfg.audio
    for f in dataclasses.fields(audio):
        value = getattr(audio, f.name)
        setattr(audio, f.name, value + 1)
        try:
            changed = ac.encoder_key(model, 25.0) != base
        finally:
            setattr(audio, f.name, value)
        # context (stacking) and projection_hidden (a trained layer) act after the cache
        assert changed == (f.name not in ("context", "projection_hidden")), f.name
    enc = model.audio_encoder
    for name in ("chunk_seconds", "margin_seconds", "sample_rate"):
        value = getattr(enc, name)
        setattr(enc, name, value * 2)
        try:
            assert ac.encoder_key(model, 25.0) != base, name
        finally:
            setattr(enc, name, value)
    other = EMOModel.from_config(load_config("tiny"), seed=1)       # other weights
    assert ac.encoder_key(other, 25.0) != base


def test_each_process_builds_its_share(setup, tmp_path):
    data, model, dcfg, _, _ = setup
    import shutil
    copy = tmp_path / "data"
    shutil.copytree(data, copy, ignore=shutil.ignore_patterns("cache"))
    ds = ClipDataset(copy, dcfg, stage=2, seed=0)
    ids = sorted(c.clip_id for c in ds.clips)
    folder = ac.ensure_audio_cache(model, ds, 25.0, rank=1, world=2)
    assert sorted(p.stem for p in folder.glob("*.npy")) == ids[1::2]
    assert ac.ensure_audio_cache(model, ds, 25.0, rank=0, world=2) == folder
    assert sorted(p.stem for p in folder.glob("*.npy")) == ids
    assert not list(folder.glob(".*"))            # atomic writes left no temporary file
