"""Alignment rule, baselines, bootstrap and the results-JSON validator, without media files."""
import copy
import math

import numpy as np
import pytest

from eval.alignment import AlignmentError, align_pair, aligned_length, cut_audio, resample_indices
from eval.baselines import default_baselines, shift_audio
from eval.results import ResultsError, validate_results
from eval.scoring import BootstrapConfig, MetricRunner, bootstrap_mean, bootstrap_set


def _indexed(n, h=8, w=8):
    """Frames whose pixel value is their own index, so resampling can be read back."""
    return np.stack([np.full((h, w, 3), i, np.uint8) for i in range(n)])


def test_fps_resampled_by_nearest_timestamp_and_cut_to_shorter():
    gen = _indexed(60)          # 2.0 s at 30 fps
    gt = _indexed(75)           # 3.0 s at 25 fps
    g, t, rec = align_pair("c", gen, 30.0, gt, 25.0)
    assert len(g) == len(t) == 50 == rec.frames_used      # 2.0 s in ground-truth frames
    # ground-truth frame i at i/25 s -> generated frame round(i*30/25)
    assert [int(x) for x in g[:6, 0, 0, 0]] == [0, 1, 2, 4, 5, 6]
    assert rec.resampled and rec.gt_frames_dropped == 25 and not rec.resized
    assert rec.to_dict()["changed"]


def test_size_and_aspect_rule_and_no_change_when_equal():
    gt = _indexed(10, 32, 32)
    wide = np.zeros((10, 40, 80, 3), np.uint8)
    wide[:, :, 20:60] = 200      # the centre square that the crop must keep
    g, _, rec = align_pair("c", wide, 25.0, gt, 25.0)
    assert g.shape == gt.shape and rec.cropped and rec.resized
    assert g.min() == 200         # only the centre survived the crop
    g2, t2, rec2 = align_pair("c", gt.copy(), 25.0, gt, 25.0)
    assert np.array_equal(g2, gt) and not rec2.to_dict()["changed"]


def test_alignment_errors_are_clear():
    with pytest.raises(AlignmentError, match="no frames"):
        align_pair("c", np.zeros((0, 8, 8, 3), np.uint8), 25, _indexed(5), 25)
    with pytest.raises(AlignmentError, match="fps"):
        align_pair("c", _indexed(5), 0, _indexed(5), 25)


def test_length_tolerance_and_audio_cut():
    assert aligned_length(100, 25.0, 120, 30.0) == 100          # exactly the same duration
    assert aligned_length(100, 25.0, 119, 30.0) == 99
    assert list(resample_indices(3, 25, 50, 4)) == [0, 2, 3]    # clipped to the last frame
    a = cut_audio(np.ones(1000, np.float32), 16000, 25, 2)
    assert len(a) == 1280 and a[:1000].all() and not a[1000:].any()


def test_audio_shift_delays_by_whole_frames():
    rate, fps = 16000, 25
    audio = np.arange(1, 6401, dtype=np.float32)
    late = shift_audio(audio, rate, fps, 5)
    assert len(late) == len(audio) and not late[:3200].any() and late[3200] == audio[0]
    early = shift_audio(audio, rate, fps, -5)
    assert early[0] == audio[3200]
    names = [b.name for b in default_baselines(5)]
    assert names == ["ground_truth", "reference_repeated", "audio_shifted_+5"]
    with pytest.raises(ValueError):
        default_baselines(0)


def test_bootstrap_interval_contains_estimate_and_shrinks_with_clips():
    rng = np.random.default_rng(1)
    cfg = BootstrapConfig(n_bootstrap=1000, seed=0)
    widths = []
    for n in (8, 32, 128):
        v = rng.normal(3.0, 1.0, n)
        mean, lo, hi, k = bootstrap_mean(v, cfg, "m")
        assert lo <= mean <= hi and k == n
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] < 0.6 * widths[0]
    # seeded: the same call gives the same interval; NaN clips are left out and counted
    assert bootstrap_mean([1.0, 2.0, 3.0], cfg, "m") == bootstrap_mean([1.0, 2.0, 3.0], cfg, "m")
    assert bootstrap_mean([1.0, np.nan, 3.0], cfg, "m")[3] == 2


def test_set_level_bootstrap_resamples_clips():
    class MeanGap:
        name = "gap"

        def aggregate(self, gen, real):
            return float(np.concatenate(gen).mean() - np.concatenate(real).mean())

    rng = np.random.default_rng(0)
    cfg = BootstrapConfig(n_bootstrap=300, seed=0)
    widths = []
    for n in (6, 60):
        gen = [rng.normal(1.0, 1.0, (5, 1)) + rng.normal(0, 0.5) for _ in range(n)]
        real = [rng.normal(0.0, 1.0, (5, 1)) for _ in range(n)]
        value, lo, hi, k = bootstrap_set(MeanGap(), gen, real, cfg)
        assert lo <= value <= hi and k == n
        widths.append(hi - lo)
    assert widths[1] < widths[0]


def _doc():
    return {"schema": "emo-eval-results/2",
            "system": {"name": "a", "kind": "directory", "path": "/x", "config": None, "step": None},
            "settings": {}, "dataset": {"path": "/d", "manifest_sha256": "0" * 64, "split": "test", "n_clips": 1},
            "alignment": {"rule": "r", "summary": {}, "clips": {}},
            "metrics": {"m": {"value": 1.0, "ci_low": 0.5, "ci_high": 1.5, "direction": "lower", "status": "ok", "n": 1}},
            "per_clip": {"c": {"m": 1.0}}, "env": {"packages": {}, "weights": {}}}


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["metrics"]["m"].update(value=math.nan), "finite"),
    (lambda d: d["metrics"]["m"].update(status="broken"), "status"),
    (lambda d: d["metrics"]["m"].update(direction="up"), "direction"),
    (lambda d: d["system"].update(kind="other"), "kind"),
    (lambda d: d.pop("env"), "missing"),
    (lambda d: d["dataset"].update(n_clips=3), "n_clips"),
    (lambda d: d["metrics"]["m"].update(status="unavailable: x"), "unavailable but carries"),
])
def test_results_validator_rejects(mutate, message):
    validate_results(_doc())
    bad = copy.deepcopy(_doc())
    mutate(bad)
    with pytest.raises(ResultsError, match=message):
        validate_results(bad)


def test_runner_records_failures_per_clip_and_never_calls_unavailable():
    from eval_harness_helpers import FailsOnOneClip, MissingWeights
    from eval.metrics.base import ClipSample

    runner = MetricRunner([FailsOnOneClip(), MissingWeights()], BootstrapConfig(n_bootstrap=50))
    ids = ["clip00", "clip01", "clip02"]
    f = np.zeros((2, 4, 4, 3), np.uint8)
    results = {cid: runner.score_sample(ClipSample(cid, 25.0, f, f, f[0], np.zeros(1280, np.float32))) for cid in ids}
    metrics, per_clip = runner.results(results, ids, ids)
    assert metrics["flaky"]["n"] == 2 and "clip01" in metrics["flaky"]["errors"]
    assert per_clip["clip01"]["flaky"] is None
    assert metrics["needs_weights"]["status"].startswith("unavailable: ") and metrics["needs_weights"]["value"] is None


def test_set_bootstrap_uses_the_metrics_fast_routine_for_resamples():
    calls = {"aggregate": 0, "fast": 0}

    class Counted:
        name = "counted"

        def aggregate(self, gen, real):
            calls["aggregate"] += 1
            return float(len(gen))

        def bootstrap_aggregate(self, gen, real):
            calls["fast"] += 1
            return float(len(gen))

    value, lo, hi, n = bootstrap_set(Counted(), [np.zeros((2, 1))] * 4, [np.zeros((2, 1))] * 4,
                                     BootstrapConfig(n_bootstrap=25))
    assert calls == {"aggregate": 1, "fast": 25} and value == lo == hi == 4.0
    bootstrap_set(Counted(), [np.zeros((2, 1))] * 4, [np.zeros((2, 1))] * 4,
                  BootstrapConfig(n_bootstrap=25, n_bootstrap_set=5))
    assert calls == {"aggregate": 2, "fast": 30}
