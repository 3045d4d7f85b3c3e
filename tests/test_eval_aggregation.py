"""Aggregation that cannot flatter a system (issue 9, section 1): shared clips, partial metrics,
face-detection rate, missing faces as missing, the PSNR ceiling, degenerate aggregates, baselines
by attributes, intervals for set-level metrics (checked against a known answer), and paired
comparisons between systems. MediaPipe is replaced by a deterministic stand-in
(eval_harness_helpers.fake_face_track) so the face rules are tested with known answers."""
import json

import numpy as np
import pytest

import eval.metrics.base as base
from eval_harness_helpers import MeanColourFD, PixelL1, fake_face_track, make_dataset, write_generated
from emo.media import read_frames, write_video
from eval.baselines import Baseline, default_baselines, identity_halves
from eval.harness import ScoreConfig, SystemSpec, directory_system, load_heldout, score
from eval.metrics import BlinkRate, EFIDBlendshapes, FaceDetectionRate, LMD, PSNR
from eval.metrics.blink import count_blinks
from eval.metrics.frechet import FrechetOfFeatures
from eval.metrics.pixel import PSNR_CEILING_DB
from eval.results import read_results
from eval.scoring import (BootstrapConfig, bootstrap_set, metric_rng, paired_clip_difference,
                          paired_set_difference, percentile_interval)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ds"), n_test=4, n_frames=24, size=48)


@pytest.fixture()
def fake_mediapipe(monkeypatch):
    monkeypatch.setattr(base, "analyse_frames", lambda frames, fps, model_dir=None: fake_face_track(frames, fps))
    monkeypatch.setattr(base, "mediapipe_problem", lambda: "")


def _faceless_half(folder, dataset, clips):
    """A system equal to the ground truth on two clips and black (no face) on the other two."""
    for i, c in enumerate(clips):
        gt = read_frames(c.video)
        frames = gt if i % 2 == 0 else np.zeros_like(gt)
        write_video(folder / f"{c.clip_id}.mp4", frames, 25.0, crf=12)
    return folder


def test_a_system_that_loses_faces_on_half_its_clips(dataset, tmp_path, fake_mediapipe):
    clips = load_heldout(dataset)
    good = write_generated(tmp_path / "good", dataset, [c.clip_id for c in clips], fps=25.0, scale=1.0,
                           extra_s=0.0, noise=3.0)
    bad = _faceless_half(tmp_path / "bad", dataset, clips)
    systems = [directory_system(good, clips, "good"), directory_system(bad, clips, "faceless")]
    written = score(dataset, systems, tmp_path / "r", metrics=[FaceDetectionRate(), LMD(), BlinkRate(), EFIDBlendshapes()],
                    cfg=ScoreConfig(write_baseline_videos=False, bootstrap=BootstrapConfig(n_bootstrap=100)),
                    clips=clips)
    docs = {p.stem: read_results(p) for p in written}
    good_m, bad_m = docs["good"]["metrics"], docs["faceless"]["metrics"]
    # the face-detection rate shows it ...
    assert good_m["face_detection_rate"]["value"] == pytest.approx(1.0)
    assert bad_m["face_detection_rate"]["value"] == pytest.approx(0.5, abs=0.02)
    assert not bad_m["face_detection_rate"]["partial"]
    # ... and the face metrics are computed on the clips that kept a face, marked partial
    for key in ("lmd", "blink_rate_error"):
        assert bad_m[key]["status"] == "ok" and bad_m[key]["n"] == 2 and bad_m[key]["n_shared"] == 4
        assert bad_m[key]["partial"] is True and good_m[key]["partial"] is False
    # where it kept the face it is the ground truth (re-encoded): its LMD there beats "good"'s
    assert bad_m["lmd"]["value"] < good_m["lmd"]["value"]
    assert docs["faceless"]["per_clip"]["clip01"]["lmd"] is None
    # a set-level face metric: the faceless clips give no generated features -> missing, partial
    assert bad_m["e_fid_blendshapes"]["n"] == 2 and bad_m["e_fid_blendshapes"]["partial"] is True
    assert good_m["e_fid_blendshapes"]["partial"] is False
    # ... so the report must not star it (test_eval_report checks the rendered page)
    from eval.report.data import build_report_data
    data = build_report_data(written)
    assert not data.cells[("faceless", "lmd")].best and "partial" in data.cells[("faceless", "lmd")].text
    # comparisons are in the JSON, both directions
    c = docs["good"]["comparisons"]["faceless"]["face_detection_rate"]
    assert c["difference"] == pytest.approx(0.5, abs=0.02) and c["n"] == 4


def test_every_system_is_compared_on_the_same_clips(dataset, tmp_path):
    clips = load_heldout(dataset)
    gen = write_generated(tmp_path / "g", dataset, [c.clip_id for c in clips], fps=25.0, scale=1.0, extra_s=0.0)
    full = directory_system(gen, clips, "full")
    missing_one = SystemSpec(name="missing_one", kind="checkpoint", path=str(gen),
                             videos={c.clip_id: gen / f"{c.clip_id}.mp4" for c in clips[1:]})
    written = score(dataset, [full, missing_one], tmp_path / "r", metrics=[PixelL1()],
                    cfg=ScoreConfig(write_baseline_videos=False, bootstrap=BootstrapConfig(n_bootstrap=50)),
                    clips=clips)
    docs = {p.stem: read_results(p) for p in written}
    shared = [c.clip_id for c in clips[1:]]
    for name in ("full", "missing_one", "baseline_ground_truth"):
        assert docs[name]["dataset"]["shared_clips"] == shared
        assert docs[name]["metrics"]["pixel_l1"]["n"] == 3
    full_mean = np.mean([docs["full"]["per_clip"][c]["pixel_l1"] for c in shared])
    assert docs["full"]["metrics"]["pixel_l1"]["value"] == pytest.approx(full_mean)
    assert docs["missing_one"]["system"]["n_scored"] == 3 and docs["full"]["system"]["n_scored"] == 4


def test_blink_counts_no_face_as_missing_not_as_open():
    closed, gap = 0.9, np.nan
    assert count_blinks([0, 0, closed, closed, 0, 0]) == 1
    # closed, face lost, closed again: one blink seen, not two (a gap is not "eyes open")
    assert count_blinks([0, 0, closed, gap, gap, closed, 0]) == 1
    # a blink whose onset falls in a gap is not counted: its open -> closed change was not seen
    assert count_blinks([gap, closed, closed, 0]) == 0


def test_psnr_is_capped_not_dropped():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    b = a.copy()
    b[1] = np.clip(a[1].astype(int) + 8, 0, 255).astype(np.uint8)
    from eval.metrics.base import ClipSample
    from eval.metrics.pixel import psnr_frames
    sample = ClipSample("c", 25.0, b, a, a[0], np.zeros(10, np.float32))
    second = float(psnr_frames(b[1:], a[1:])[0])
    assert PSNR().score_clip(sample) == pytest.approx((PSNR_CEILING_DB + second) / 2)
    same = ClipSample("c", 25.0, a, a, a[0], np.zeros(10, np.float32))
    assert PSNR().score_clip(same) == PSNR_CEILING_DB


def test_a_degenerate_aggregate_is_unavailable_not_a_crash(dataset, tmp_path):
    class Degenerate(MeanColourFD):
        name = "degenerate_fd"

        def aggregate(self, gen, real):
            raise ValueError("imaginary component 0.3 in sqrtm: covariances are not positive semi-definite")

    clips = load_heldout(dataset)[:2]
    written = score(dataset, [], tmp_path / "r", metrics=[Degenerate(), PixelL1()],
                    cfg=ScoreConfig(write_baseline_videos=False, bootstrap=BootstrapConfig(n_bootstrap=20)),
                    clips=clips)
    doc = read_results(next(p for p in written if p.stem == "baseline_ground_truth"))
    assert doc["metrics"]["degenerate_fd"]["status"].startswith("unavailable: degenerate aggregate")
    assert "imaginary component" in doc["metrics"]["degenerate_fd"]["status"]
    assert doc["metrics"]["pixel_l1"]["status"] == "ok"


def test_baselines_are_defined_by_attributes_not_names():
    renamed = Baseline("my_copy", "the clip", frames="ground_truth")
    assert renamed.reuses_gt_frames and renamed.reuses["frames"] == "ground_truth"
    still = Baseline("my_still", "still", frames="reference_repeated")
    gt = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    frames, _ = still.make(gt, gt[0], np.zeros(100, np.float32), 16000, 25.0)
    assert not still.reuses_gt_frames and (frames == gt[0]).all()
    shifted = default_baselines(3)[2]
    assert shifted.reuses_gt_frames and shifted.reuses["audio"] == "clip audio shifted +3 frames"


def test_identity_halves_keep_each_identity_on_one_side():
    groups = {"a1": "A", "a2": "A", "b1": "B", "c1": "C", "c2": "C", "c3": "C", "d1": "D"}
    h1, h2 = identity_halves(groups)
    assert sorted(h1 + h2) == sorted(groups)
    assert not {groups[c] for c in h1} & {groups[c] for c in h2}
    assert abs(len(h1) - len(h2)) <= 1


def test_calibration_baseline_scores_ground_truth_halves(dataset, tmp_path):
    clips = load_heldout(dataset)
    written = score(dataset, [], tmp_path / "r", metrics=[MeanColourFD(), PixelL1()],
                    cfg=ScoreConfig(write_baseline_videos=False, bootstrap=BootstrapConfig(n_bootstrap=20)),
                    clips=clips)
    doc = read_results(next(p for p in written if p.stem == "baseline_ground_truth_halves"))
    split = doc["system"]["split"]
    assert sorted(split["half_a"] + split["half_b"]) == [c.clip_id for c in clips]
    # the toy set metric (squared distance of mean colours) of half A's frames vs half B's
    mean = {c.clip_id: read_frames(c.video).mean(axis=(1, 2)) for c in clips}
    a = np.concatenate([mean[c] for c in split["half_a"]]).mean(0)
    b = np.concatenate([mean[c] for c in split["half_b"]]).mean(0)
    assert doc["metrics"]["mean_colour_fd"]["value"] == pytest.approx(float(((a - b) ** 2).sum()), rel=1e-3)
    assert doc["metrics"]["pixel_l1"]["status"].startswith("unavailable: set-level calibration only")


class _Frechet(FrechetOfFeatures):
    name, direction = "fd", "lower"


def _gaussian_sets(rng, n, k, d, shift):
    mu = np.zeros(d)
    mu[0] = shift
    return [rng.normal(mu, 1, (k, d)) for _ in range(n)], [rng.normal(0, 1, (k, d)) for _ in range(n)]


@pytest.mark.slow
def test_set_interval_covers_the_metric_at_this_set_size():
    """Known answer: Gaussian features, Frechet distance 1 between the populations. At n = 30 clips
    of 3 frames in 12 dimensions the estimate is biased up (its mean, found here by Monte Carlo over
    600 independent sets, is ~2.1). The bias-corrected interval must cover that mean at about its
    nominal rate and always contain the estimate; the plain percentile interval of resamples with
    replacement (the old one) is shifted up by the resampling bias and covers it far less often."""
    n, k, d, ci = 30, 3, 12, 0.9
    rng = np.random.default_rng(0)
    m = _Frechet()
    expected = np.mean([m.aggregate(*_gaussian_sets(rng, n, k, d, 1.0)) for _ in range(600)])
    assert expected > 1.5                                   # the bias the interval must live with
    trials, ours, plain, contains = 40, 0, 0, 0
    for t in range(trials):
        gen, real = _gaussian_sets(rng, n, k, d, 1.0)
        cfg = BootstrapConfig(n_bootstrap=150, ci=ci, seed=t)
        value, lo, hi, _ = bootstrap_set(m, gen, real, cfg)
        ours += lo <= expected <= hi
        contains += lo <= value <= hi
        r = metric_rng(t, "fd")
        stats = []
        for _ in range(150):
            idx = r.integers(0, n, n)
            stats.append(m.bootstrap_aggregate([gen[i] for i in idx], [real[i] for i in idx]))
        plo, phi = percentile_interval(np.array(stats), ci)
        plain += plo <= expected <= phi
    assert contains == trials
    assert ours / trials >= 0.8
    assert plain / trials <= 0.6


def test_paired_comparison_tells_apart_real_differences_only():
    rng = np.random.default_rng(0)
    cfg = BootstrapConfig(n_bootstrap=500, seed=0)
    difficulty = rng.normal(0, 3.0, 40)                      # clips differ a lot; systems by 0.5
    a = difficulty + rng.normal(0, 0.2, 40)
    b = a + 0.5 + rng.normal(0, 0.2, 40)
    d = paired_clip_difference(a, b, "lower", cfg, "m")
    assert d.verdict == "better" and d.ci_high < 0 and d.difference == pytest.approx(-0.5, abs=0.15)
    assert paired_clip_difference(b, a, "lower", cfg, "m").verdict == "worse"
    assert paired_clip_difference(a, b, "higher", cfg, "m").verdict == "worse"
    same = paired_clip_difference(a, a.copy(), "lower", cfg, "m")
    assert same.verdict == "not separable" and same.difference == 0.0
    # identical in distribution but not the same numbers: not separable either
    c = difficulty + rng.normal(0, 0.2, 40)
    assert paired_clip_difference(a, c, "lower", cfg, "m").verdict == "not separable"
    # set level: one system shifted by 1, the other by 0 -> told apart; two draws of one -> not
    gen_far, real = _gaussian_sets(rng, 40, 4, 3, 1.0)
    gen_near, _ = _gaussian_sets(rng, 40, 4, 3, 0.0)
    gen_near2, _ = _gaussian_sets(rng, 40, 4, 3, 0.0)
    cfg = BootstrapConfig(n_bootstrap=200, seed=0)
    assert paired_set_difference(_Frechet(), gen_near, gen_far, real, cfg).verdict == "better"
    assert paired_set_difference(_Frechet(), gen_near, gen_near2, real, cfg).verdict == "not separable"


def _counted_metric(calls: list):
    """PixelL1 under another name, recording the clip of every score_clip call in `calls`."""
    class Counted(PixelL1):
        name = "counted"

        def score_clip(self, sample):
            calls.append(sample.clip_id)
            return super().score_clip(sample)

    return Counted


def test_adding_a_system_scores_only_that_system(dataset, tmp_path, monkeypatch):
    calls = []
    Counted = _counted_metric(calls)
    clips = load_heldout(dataset)
    ids = [c.clip_id for c in clips]
    a = directory_system(write_generated(tmp_path / "a", dataset, ids, noise=5.0, seed=1), clips, "A")
    b = directory_system(write_generated(tmp_path / "b", dataset, ids, noise=20.0, seed=2), clips, "B")
    cfg = ScoreConfig(write_baseline_videos=False, bootstrap=BootstrapConfig(n_bootstrap=50))
    first = {p.stem: read_results(p) for p in score(dataset, [a], tmp_path / "r", metrics=[Counted()], cfg=cfg, clips=clips)}
    assert len(calls) == 4 * 4                      # A and three baselines, four clips
    calls.clear()
    second = {p.stem: read_results(p) for p in score(dataset, [a, b], tmp_path / "r", metrics=[Counted()], cfg=cfg, clips=clips)}
    assert len(calls) == 4                          # only B's clips
    assert second["A"]["per_clip"] == first["A"]["per_clip"]
    assert second["A"]["comparisons"]["B"]["counted"]["verdict"] == "better"
    # a changed video invalidates its clip's entry only
    calls.clear()
    write_generated(tmp_path / "b2", dataset, ids[:1], noise=30.0, seed=3)
    (tmp_path / "b" / f"{ids[0]}.mp4").write_bytes((tmp_path / "b2" / f"{ids[0]}.mp4").read_bytes())
    score(dataset, [a, b], tmp_path / "r", metrics=[Counted()], cfg=cfg, clips=clips)
    assert calls == [ids[0]]


def test_sharded_scoring_fills_the_store_per_process(dataset, tmp_path, monkeypatch):
    import eval.harness as harness
    calls = []
    Counted = _counted_metric(calls)
    clips = load_heldout(dataset)
    cfg = ScoreConfig(baselines=False, write_baseline_videos=False, bootstrap=BootstrapConfig(n_bootstrap=20))
    a = directory_system(write_generated(tmp_path / "a", dataset, [c.clip_id for c in clips]), clips, "A")
    monkeypatch.setattr(harness, "wait_for_everyone", lambda world: None)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert score(dataset, [a], tmp_path / "r", metrics=[Counted()], cfg=cfg, clips=clips) == []
    assert calls == [clips[1].clip_id, clips[3].clip_id]          # process 1's share only
    calls.clear()
    monkeypatch.setenv("RANK", "0")
    written = score(dataset, [a], tmp_path / "r", metrics=[Counted()], cfg=cfg, clips=clips)
    assert calls == [clips[0].clip_id, clips[2].clip_id]          # its own share; the rest from the store
    assert read_results(written[0])["metrics"]["counted"]["n"] == 4


def test_every_metric_entry_records_its_protocol(tmp_path):
    from eval.metrics import all_metrics
    for m in all_metrics(tmp_path):
        proto = m.protocol()
        assert isinstance(proto, dict) and proto, m.name
        json.dumps(proto)
    by = {m.name: m.protocol() for m in all_metrics(tmp_path)}
    assert by["fvd"]["route"] == "stylegan_v" and "224" in by["fvd"]["resize"] and "16-frame" in by["fvd"]["frames"]
    assert by["sync_c"]["route"] == "s3fd" and "S3FD" in by["sync_c"]["detector"] and by["sync_c"]["min_track"] == 100
    assert "TF1 bilinear" in by["fid"]["resize"]
    alt = {m.name: m.protocol() for m in all_metrics(tmp_path, settings={"fvd": {"route": "all_segments"},
                                                                          "sync": {"route": "mediapipe"}})}
    assert alt["fvd"]["route"] == "all_segments" and "MediaPipe" in alt["sync_c"]["detector"]


def test_metric_settings_are_typed_and_checked(dataset, tmp_path):
    from click.testing import CliRunner
    from emo.typed_config import ConfigError
    from eval.cli import main as cli
    from eval.metrics import load_settings
    assert load_settings().fvd.route == "stylegan_v" and load_settings().sync.min_track == 100
    with pytest.raises(ConfigError, match=r"metrics.yaml.*fvd.*rout"):
        load_settings(overrides={"fvd": {"rout": "all_segments"}})
    with pytest.raises(ConfigError, match=r"sync.route"):
        load_settings(overrides={"sync": {"route": "dlib"}})
    bad = tmp_path / "m.yaml"
    bad.write_text("fid:\n  frame_stride: two\n")
    with pytest.raises(ConfigError, match=r"m.yaml: fid.frame_stride"):
        load_settings(bad)
    res = CliRunner().invoke(cli, ["score", "--dataset", str(dataset), "--out", str(tmp_path / "r"),
                                   "--metric-setting", "fvd.rout=all_segments"])
    assert res.exit_code != 0 and "rout" in res.output and not (tmp_path / "r").exists()


def test_generation_resumes_per_clip_and_shards_across_processes(dataset, tmp_path, monkeypatch):
    import sys
    import types
    import eval.harness as harness
    from PIL import Image
    rendered = []

    def generate_batch(checkpoint, items, out_dir, **settings):
        for it in items:
            if it["id"] == "clip02" and settings.get("fail_clip02"):
                continue                                   # a clip that fails to render: left out
            rendered.append(it["id"])
            ref = np.asarray(Image.open(it["image"]).convert("RGB"))
            write_video(it["out"], [ref] * 10, 25.0)
    monkeypatch.setitem(sys.modules, "emo.generate", types.SimpleNamespace(generate_batch=generate_batch))
    monkeypatch.setattr(harness, "wait_for_everyone", lambda world: None)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.yaml").write_text("model: tiny\n")
    clips = load_heldout(dataset)
    # process 1 of 2 renders clips 1 and 3 only
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    harness.checkpoint_systems(ckpt, clips, tmp_path / "work", {"fail_clip02": True})
    assert rendered == ["clip01", "clip03"]
    # process 0 renders its share (clip02 fails); the system has the three videos that exist
    monkeypatch.setenv("RANK", "0")
    rendered.clear()
    (spec,) = harness.checkpoint_systems(ckpt, clips, tmp_path / "work", {"fail_clip02": True})
    assert rendered == ["clip00"] and sorted(spec.videos) == ["clip00", "clip01", "clip03"]
    # a rerun (one process) renders only what is missing; other settings render everything again
    monkeypatch.setenv("WORLD_SIZE", "1")
    rendered.clear()
    (spec,) = harness.checkpoint_systems(ckpt, clips, tmp_path / "work", {"fail_clip02": False})
    assert rendered == ["clip00", "clip01", "clip02", "clip03"]          # the stamp changed: all again
    rendered.clear()
    harness.checkpoint_systems(ckpt, clips, tmp_path / "work", {"fail_clip02": False})
    assert rendered == []
    # a run killed mid-way: one video missing, one truncated -> exactly those two are rendered
    out = tmp_path / "work" / "generated" / "ckpt"
    (out / "clip01.mp4").unlink()
    (out / "clip03.mp4").write_bytes((out / "clip03.mp4").read_bytes()[:100])
    harness.checkpoint_systems(ckpt, clips, tmp_path / "work", {"fail_clip02": False})
    assert rendered == ["clip01", "clip03"]
