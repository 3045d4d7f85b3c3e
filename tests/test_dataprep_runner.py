"""The runner: bad inputs become reject rows and the run goes on; crashes are isolated; a killed
run restarted with the same arguments redoes nothing finished and ends with identical tables."""
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from dataprep import runner
from dataprep.config import config_from_dict
from emo.manifest import read_manifest, read_rejects
from emo.media import load_audio, read_frames, write_video

# Small crops and a single-frame stride keep these runs short; thresholds as for real footage.
SMALL = {"faces": {"crop_size": 128, "stride": 3}, "cut": {"min_shot_s": 2.0, "min_clip_s": 2.0}}


def _fake_result(rel, clips=0):
    return {"source_video": rel, "clips": [], "rejects": [runner.reject_row(rel, "filter", "too short", "fake")],
            "stats": {"seconds": 0.01, "timings": {}, "duration_s": 1.0, "fps": 25.0, "n_shots": 1,
                      "n_candidate_clips": 1, "notes": {}}}


def test_python_errors_and_dead_workers_become_rejects(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("a.mp4", "boom.mp4", "dies.mp4", "z.mp4"):
        (raw / name).write_bytes(b"x")

    def fake(raw_dir, rel, out_dir, cfg, steps=None):
        if rel == "boom.mp4":
            raise RuntimeError("stage exploded")
        if rel == "dies.mp4":
            os._exit(3)           # a segfault or an OOM kill: the process vanishes
        return _fake_result(rel)

    monkeypatch.setattr(runner, "process_video", fake)
    stats = runner.run(raw, tmp_path / "out", config_from_dict({}), workers=2, progress=False)
    rejects = read_rejects(tmp_path / "out")
    by_video = rejects.set_index("source_video")
    assert set(by_video.index) == {"a.mp4", "boom.mp4", "dies.mp4", "z.mp4"}
    assert by_video.loc["boom.mp4", "reason"] == "worker crashed"
    assert "RuntimeError: stage exploded" in by_video.loc["boom.mp4", "detail"]
    assert by_video.loc["dies.mp4", "reason"] == "worker crashed"
    assert by_video.loc["a.mp4", "reason"] == "too short"
    assert stats["rejects_by_stage_reason"]["runner: worker crashed"] == 2


@pytest.fixture(scope="module")
def vox(shared_data):
    return shared_data / "clips"


@pytest.mark.slow
def test_bad_inputs_are_rejected_and_the_run_goes_on(tmp_path, vox, mediapipe_dir):
    raw = tmp_path / "raw"
    raw.mkdir()
    good = vox / "talk_vox_00010.mp4"
    (raw / "empty.mp4").write_bytes(b"")
    (raw / "notes.mp4").write_text("this is a text file, not a video\n")
    (raw / "truncated.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    os.symlink(vox / "stylized_anime_musetalk_yongen.mp4", raw / "stylised_no_audio.mp4")
    frames = read_frames(good, 0, 3.0)
    audio = load_audio(good, 16000, 0, 3.0)
    write_video(raw / "one_frame.mp4", frames[:1], 25, audio=audio[:640])
    # stored sideways with a display matrix: must come out upright and be analysed like the original
    write_video(raw / "rotated.mp4", np.rot90(frames, k=-1, axes=(1, 2)), 25, audio=audio, rotation=90)
    shutil.copy(good, raw / "vidéo 测试.mp4")
    anime = read_frames(vox / "stylized_anime_musetalk_yongen.mp4", 0, 3.0)
    write_video(raw / "stylised_silent.mp4", anime, 25, audio=np.zeros(48000, np.float32))

    runner.run(raw, tmp_path / "out", config_from_dict(SMALL), workers=2, progress=False)
    manifest = read_manifest(tmp_path / "out")
    rejects = read_rejects(tmp_path / "out")
    print(rejects[["source_video", "stage", "reason", "detail"]].to_string())
    first = rejects.groupby("source_video").first()
    expect = {"empty.mp4": "empty file", "notes.mp4": "unreadable container",
              "truncated.mp4": "unreadable container", "stylised_no_audio.mp4": "no audio stream",
              "one_frame.mp4": "too few frames"}
    for name, reason in expect.items():
        assert first.loc[name, "stage"] == "probe" and first.loc[name, "reason"] == reason, name
    assert "worker crashed" not in set(rejects.reason)
    # rotated and non-ASCII files get through probing and face tracking like any video
    for name in ("rotated.mp4", "vidéo 测试.mp4"):
        kept = manifest[manifest.source_video == name]
        rej = rejects[rejects.source_video == name]
        assert len(kept) + len(rej) >= 1
        assert not set(rej.stage) & {"probe", "faces", "runner"}, rej.to_string()
    assert manifest.clip_id.map(str.isascii).all()
    assert "stylised_silent.mp4" in set(rejects.source_video) | set(manifest.source_video)


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_and_ends_identical(tmp_path, vox, mediapipe_dir, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("talk_vox_00010.mp4", "talk_vox_00086.mp4"):
        os.symlink(vox / name, raw / name)
    (raw / "broken.mp4").write_bytes(b"\x00" * 100)
    cfg = config_from_dict(SMALL)
    out = tmp_path / "out"
    real = runner.process_video
    calls = []

    def killed_after_first(raw_dir, rel, out_dir, cfg, steps=None):
        if calls:
            raise KeyboardInterrupt     # the run is killed while on its second video
        calls.append(rel)
        return real(raw_dir, rel, out_dir, cfg, steps)

    monkeypatch.setattr(runner, "process_video", killed_after_first)
    with pytest.raises(KeyboardInterrupt):
        runner.run(raw, out, cfg, workers=1, progress=False)
    assert not (out / "manifest.parquet").exists()
    assert len(list((out / ".work").glob("*.json"))) == 1
    first_clips = {p: p.stat().st_mtime_ns for p in (out / "clips").glob("*")} if (out / "clips").exists() else {}
    # what a SIGKILL during an encode leaves behind, and a clip of an older configuration
    (out / "clips").mkdir(exist_ok=True)
    (out / "clips" / ".x-1234.1.tmp.mp4").write_bytes(b"half")
    (out / "clips" / "old-clip-000000.npz").write_bytes(b"stale")

    redone = []

    def counting(raw_dir, rel, out_dir, cfg, steps=None):
        redone.append(rel)
        return real(raw_dir, rel, out_dir, cfg, steps)

    monkeypatch.setattr(runner, "process_video", counting)
    runner.run(raw, out, cfg, workers=1, progress=False)
    assert sorted(redone) == sorted({"talk_vox_00010.mp4", "talk_vox_00086.mp4", "broken.mp4"} - set(calls))
    assert all(p.stat().st_mtime_ns == t for p, t in first_clips.items())   # finished clips untouched
    manifest_bytes = (out / "manifest.parquet").read_bytes()
    rejects_1 = read_rejects(out)

    redone.clear()
    runner.run(raw, out, cfg, workers=1, progress=False)
    assert redone == []
    assert (out / "manifest.parquet").read_bytes() == manifest_bytes
    pd.testing.assert_frame_equal(read_rejects(out), rejects_1)
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    on_disk = {p.name.split(".")[0] for p in (out / "clips").glob("*")}
    assert on_disk == set(read_manifest(out).clip_id)
