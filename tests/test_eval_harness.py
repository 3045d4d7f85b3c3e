"""The harness end to end on a tiny synthetic dataset: directory and checkpoint inputs, alignment
reported, baselines in every run, results JSON validated, the CLI."""
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from eval_harness_helpers import make_dataset, toy_metrics, write_generated
from eval.cli import main as cli
from eval.harness import HarnessError, ScoreConfig, checkpoint_dirs, directory_system, load_heldout, score
from eval.results import read_results, resolve_video
from eval.scoring import BootstrapConfig

CFG = ScoreConfig(bootstrap=BootstrapConfig(n_bootstrap=200, seed=0))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ds"))


@pytest.fixture(scope="module")
def scored(dataset, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    clips = load_heldout(dataset)
    gen = write_generated(tmp / "sysA", dataset, [c.clip_id for c in clips], fps=30.0, scale=1.5, extra_s=0.4)
    written = score(dataset, [directory_system(gen, clips, "sysA")], tmp / "results", metrics=toy_metrics(),
                    cfg=CFG, clips=clips)
    return {p.stem: read_results(p) for p in written}, written


def test_held_out_set_is_the_test_split(dataset):
    clips = load_heldout(dataset)
    assert [c.clip_id for c in clips] == ["clip00", "clip01", "clip02", "clip03"]   # clip04 is train


def test_every_run_has_the_baselines_and_valid_json(scored):
    docs, written = scored
    assert set(docs) == {"sysA", "baseline_ground_truth", "baseline_reference_repeated", "baseline_audio_shifted_+5",
                         "baseline_ground_truth_halves"}
    for d in docs.values():
        assert d["dataset"]["n_clips"] == 4 and len(d["dataset"]["manifest_sha256"]) == 64
        assert "numpy" in d["env"]["packages"] and d["env"]["weights"] == {"syncnet": None}
        assert set(d["env"]["code"]) == {"git_commit", "dirty"}
    for path in written:
        json.loads(Path(path).read_text(), parse_constant=lambda c: pytest.fail(f"{path} holds {c}"))
    assert docs["baseline_ground_truth"]["system"]["kind"] == "baseline"


def test_alignment_applied_and_reported(scored):
    docs, _ = scored
    a = docs["sysA"]["alignment"]
    assert a["summary"]["n_resampled"] == 4 and a["summary"]["n_resized"] == 4
    rec = a["clips"]["clip00"]
    assert rec["gen_fps"] == pytest.approx(30.0) and rec["gt_size"] == [64, 64] and rec["gen_size"] == [96, 96]
    assert rec["frames_used"] == rec["gt_frames"] == 30          # longer generated video cut to the GT
    assert rec["gen_seconds_dropped"] == pytest.approx(0.4, abs=0.05)
    assert docs["baseline_ground_truth"]["alignment"]["summary"]["n_changed"] == 0


def test_baselines_mean_what_they_say(scored):
    docs, _ = scored
    m = {k: d["metrics"] for k, d in docs.items()}
    assert m["baseline_ground_truth"]["pixel_l1"]["value"] == 0.0
    assert m["baseline_ground_truth"]["mean_colour_fd"]["value"] == 0.0
    assert m["baseline_reference_repeated"]["pixel_l1"]["value"] > m["sysA"]["pixel_l1"]["value"] > 0
    # the toy sync measure reads the 5-frame audio delay on every clip, and nothing elsewhere
    shifted = docs["baseline_audio_shifted_+5"]["per_clip"]
    assert all(v["toy_offset"] == 5.0 for v in shifted.values())
    assert all(v["toy_offset"] == 0.0 for v in docs["baseline_ground_truth"]["per_clip"].values())
    assert all(v["toy_offset"] == 0.0 for v in docs["sysA"]["per_clip"].values())
    assert m["baseline_audio_shifted_+5"]["pixel_l1"]["value"] == 0.0   # image metrics unmoved


def test_metric_entries_intervals_and_unavailable(scored):
    docs, _ = scored
    sys_a = docs["sysA"]["metrics"]
    for name in ("pixel_l1", "toy_conf", "mean_colour_fd"):
        e = sys_a[name]
        assert e["status"] == "ok" and e["ci_low"] <= e["value"] <= e["ci_high"] and e["n"] == 4
    assert sys_a["toy_conf"]["direction"] == "higher" and sys_a["toy_offset"]["direction"] == "lower"
    assert sys_a["mean_colour_fd"]["level"] == "set"
    un = sys_a["needs_weights"]
    assert un["value"] is None and "python -m eval weights fetch" in un["status"]
    assert sys_a["flaky"]["n"] == 3 and "no face found" in sys_a["flaky"]["errors"]["clip01"]


def test_baseline_videos_written_with_shifted_audio(scored):
    from emo.media import load_audio
    docs, written = scored
    json_path = [p for p in written if p.stem == "baseline_audio_shifted_+5"][0]
    video = resolve_video(docs["baseline_audio_shifted_+5"], json_path, "clip00")
    assert video is not None and video.is_file()
    audio = load_audio(video)
    silent = int(5 / 25 * 16000)
    assert np.abs(audio[: silent - 800]).max() < 0.02 < np.abs(audio[silent:]).max()


def test_missing_generated_video_is_a_clear_error(dataset, tmp_path):
    clips = load_heldout(dataset)
    gen = write_generated(tmp_path / "partial", dataset, ["clip00", "clip01"])
    with pytest.raises(HarnessError, match="2 of 4 held-out clips"):
        directory_system(gen, clips)


def test_unreadable_generated_video_stops_before_scoring(dataset, tmp_path):
    clips = load_heldout(dataset)
    gen = write_generated(tmp_path / "g", dataset, [c.clip_id for c in clips])
    (gen / "clip02.mp4").write_bytes(b"not a video")
    with pytest.raises(HarnessError, match="clip02: unreadable container"):
        directory_system(gen, clips)


def _fake_generate_module(calls):
    """emo.generate without the model: same settings accepted (those of the real generate_video,
    anything else is a TypeError as there), frames = the reference image repeated."""
    import inspect
    import emo.generate as real
    accepted = inspect.signature(real.generate_video)

    def generate_batch(checkpoint, items, out_dir, **settings):
        from emo.media import load_audio, write_video
        from PIL import Image
        accepted.bind_partial(**settings)          # TypeError on a setting generate_video does not take
        calls.append((checkpoint, len(items), settings))
        for it in items:
            ref = np.asarray(Image.open(it["image"]).convert("RGB"))
            audio = load_audio(it["audio"])
            n = int(len(audio) / 16000 * 25)
            write_video(Path(out_dir) / f"{it['id']}.mp4", [ref] * n, 25.0, audio=audio)
    return types.SimpleNamespace(generate_batch=generate_batch)


def test_checkpoint_folder_of_steps_scored_per_step(dataset, tmp_path, monkeypatch):
    root = tmp_path / "ckpts"
    for step in (100, 300):
        d = root / f"step-{step:06d}"
        d.mkdir(parents=True)
        (d / "config.yaml").write_text("model: tiny\n")
        (d / "meta.json").write_text(json.dumps({"step": step}))
    assert [s for _, s in checkpoint_dirs(root)] == [100, 300]
    calls = []
    monkeypatch.setitem(sys.modules, "emo.generate", _fake_generate_module(calls))
    import eval.metrics as metrics_pkg
    monkeypatch.setattr(metrics_pkg, "all_metrics", lambda weights_dir=None, **kw: toy_metrics()[:1], raising=False)
    out = tmp_path / "results"
    res = CliRunner().invoke(cli, ["score", "--dataset", str(dataset), "--checkpoint", str(root), "--out", str(out),
                                   "--max-clips", "2", "--n-bootstrap", "50", "--gen", "steps=3",
                                   "--no-baselines"])
    assert res.exit_code == 0, res.output
    docs = [read_results(p) for p in sorted(out.glob("*.json"))]
    assert sorted(d["system"]["step"] for d in docs) == [100, 300]
    assert sorted(d["system"]["meta"]["step"] for d in docs) == [100, 300]
    assert all(d["system"]["kind"] == "checkpoint" and d["system"]["config"] == {"model": "tiny"} for d in docs)
    assert all(d["settings"]["generation"] == {"crop": False, "steps": 3} for d in docs)
    assert len(calls) == 2 and calls[0][1] == 2 and calls[0][2] == {"crop": False, "steps": 3}
    assert all(d["metrics"]["pixel_l1"]["value"] > 0 for d in docs)   # a still image is not the clip


def test_cli_score_errors_and_weights_listing(dataset, tmp_path):
    res = CliRunner().invoke(cli, ["score", "--dataset", str(dataset), "--generated", str(tmp_path),
                                   "--out", str(tmp_path / "r")])
    assert res.exit_code != 0 and "held-out clips have no <clip_id>.mp4" in res.output
    assert not (tmp_path / "r").exists()
    res = CliRunner().invoke(cli, ["weights", "--weights-dir", str(tmp_path / "w")])
    assert res.exit_code == 0 and "syncnet_v2.model" in res.output and "MISSING" in res.output


def test_benchmark_writes_frames_per_second(tmp_path, monkeypatch):
    import importlib.util
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "eval_bench.py"
    spec = importlib.util.spec_from_file_location("eval_bench_under_test", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    import eval.metrics as metrics_pkg
    from eval_harness_helpers import synth_clip
    from eval.metrics.base import ClipSample

    def make():
        frames, audio = synth_clip(20, 32, seed=0)
        return [ClipSample("b", 25.0, frames, frames, frames[0], audio)]
    monkeypatch.setattr(bench, "bench_samples", lambda: (make, "synthetic"))
    monkeypatch.setattr(metrics_pkg, "all_metrics", lambda weights_dir=None, **kw: toy_metrics(), raising=False)
    doc = bench.run(tmp_path)
    assert "pixel_l1" in doc["summary"]
    assert doc["metrics"]["pixel_l1"]["frames"] == 20 and doc["metrics"]["pixel_l1"]["frames_per_second"] > 0
    assert "aggregate_seconds" in doc["metrics"]["mean_colour_fd"]
    assert doc["metrics"]["needs_weights"]["status"].startswith("unavailable")
    assert doc["metrics"]["flaky"]["status"] == "ok"


@pytest.mark.slow
def test_real_emo_checkpoint_is_rendered_and_scored(tmp_path):
    """The real emo.generate.generate_batch on an untrained tiny checkpoint (contract check)."""
    from emo.models.emo_model import EMOModel
    ds = make_dataset(tmp_path / "ds", n_test=1, n_frames=6)
    ckpt = tmp_path / "ckpt"
    EMOModel.from_config("tiny", seed=0).save_checkpoint(ckpt, meta={"step": 7})
    out = tmp_path / "results"
    res = CliRunner().invoke(cli, ["score", "--dataset", str(ds), "--checkpoint", str(ckpt), "--out", str(out),
                                   "--gen", "steps=1", "--gen", "crop=false", "--no-baselines",
                                   "--metric", "psnr", "--n-bootstrap", "20"])
    assert res.exit_code == 0, res.output
    doc = read_results(out / "ckpt.json")
    assert doc["system"]["step"] == 7 and doc["system"]["kind"] == "checkpoint"
    assert resolve_video(doc, out / "ckpt.json", "clip00").is_file()
    assert doc["metrics"]["psnr"]["status"] == "ok" and doc["alignment"]["clips"]["clip00"]["frames_used"] >= 5


def test_labels_are_cut_with_the_frames(dataset, tmp_path):
    from eval.metrics.base import Metric

    class LabelLength(Metric):
        name, direction = "label_frames_match", "higher"

        def status(self):
            return "ok"

        def score_clip(self, sample):
            return float(len(sample.gt_labels["pose"]) == sample.n_frames and sample.gt_labels["face_box"].shape == (4,))

    clips = load_heldout(dataset)[:2]
    short = tmp_path / "short"
    write_generated(short, dataset, [c.clip_id for c in clips], fps=25.0, scale=1.0, extra_s=-0.5)
    written = score(dataset, [directory_system(short, clips, "short")], tmp_path / "r", metrics=[LabelLength()],
                    cfg=ScoreConfig(baselines=False, bootstrap=BootstrapConfig(n_bootstrap=10)), clips=clips)
    doc = read_results(written[0])
    assert doc["alignment"]["summary"]["n_truncated_gt"] == 2
    assert doc["metrics"]["label_frames_match"]["value"] == 1.0
