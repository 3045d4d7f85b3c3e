"""Every metric whose weights are missing says so (naming the file and the command) and refuses to
give a number; the ClipSample contract rejects misaligned input."""
import numpy as np
import pytest

from eval import weights as registry
from eval.metrics import METRIC_CLASSES, ClipSample, MetricUnavailable, all_metrics


def _sample(t=4, size=32):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8)
    return ClipSample(clip_id="c0", fps=25.0, generated=frames, ground_truth=frames.copy(),
                      reference=frames[0], audio=np.zeros(16000 * t // 25, np.float32), audio_rate=16000)


def test_metric_names_are_unique_and_directions_valid():
    metrics = all_metrics()
    names = [m.name for m in metrics]
    assert len(names) == len(set(names)) == len(METRIC_CLASSES)
    for m in metrics:
        assert m.direction in ("higher", "lower") and m.level in ("clip", "set")
        assert all(d in ("higher", "lower") for d in getattr(m, "directions", {}).values())
        assert all(w in registry.REGISTRY for w in m.weights)


def test_metrics_with_missing_weights_are_unavailable_not_numbers(tmp_path):
    sample = _sample()
    checked = 0
    for m in all_metrics(weights_dir=tmp_path):
        if not m.weights:
            continue
        status = m.status()
        assert status.startswith("unavailable: "), (m.name, status)
        first_file = registry.REGISTRY[m.weights[0]].files[0]
        assert first_file in status, (m.name, status)
        assert "python -m eval weights" in status or "by hand" in status
        with pytest.raises(MetricUnavailable):
            m.features(sample) if m.level == "set" else m.score_clip(sample)
        checked += 1
    assert checked >= 8      # fid, kid, fvd, sync_c, sync_d, e_fid_3dmm, f_sim, lpips
    efid = next(m for m in all_metrics(weights_dir=tmp_path) if m.name == "e_fid_3dmm").status()
    assert "epoch_20.pth" in efid and "drive.google.com" in efid    # the manual download, named


def test_weight_free_pixel_metrics_give_numbers():
    sample = _sample()
    by_name = {m.name: m for m in all_metrics()}
    assert by_name["ssim"].status() == "ok" and by_name["ssim"].score_clip(sample) == pytest.approx(1.0)
    assert by_name["psnr"].score_clip(sample) == 100.0          # identical frames: the ceiling
    noisy = ClipSample(clip_id="c1", fps=25.0, generated=255 - sample.generated, ground_truth=sample.ground_truth,
                       reference=sample.reference, audio=sample.audio)
    assert by_name["psnr"].score_clip(noisy) < 10 and by_name["ssim"].score_clip(noisy) < 0.5


def test_clip_sample_rejects_misaligned_or_wrong_dtype_frames():
    s = _sample()
    with pytest.raises(ValueError, match="alignment"):
        ClipSample("x", 25.0, s.generated[:3], s.ground_truth, s.reference, s.audio)
    with pytest.raises(ValueError, match="uint8"):
        ClipSample("x", 25.0, s.generated.astype(np.float32), s.ground_truth, s.reference, s.audio)
