"""The runner: every odd input gets its exact reject row and the run goes on; Python errors and
dying processes become "runner" rows after bounded retries; a killed run restarted with several
workers redoes exactly the unfinished videos; records are reused only while their files are intact
and the folder's config and code are unchanged; a run in which every video crashed fails."""
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from dataprep import runner
from dataprep.cli import main as cli
from dataprep.config import CONFIG_DIR, config_from_dict, load_config
from emo.manifest import read_manifest, read_rejects
from emo.media import load_audio, read_frames, write_video

# Small crops and a single-frame stride keep these runs short; thresholds as for real footage.
# The runner's tests keep clips whose sync the offline measure cannot settle on 3-s clips (flagged
# sync_trusted false): what they check is the runner, not the sync policy (tests/test_sync.py).
SMALL = {"faces": {"crop_size": 128, "stride": 3}, "cut": {"min_shot_s": 2.0, "min_clip_s": 2.0},
         "sync": {"untrusted": "keep"}}


def _fake_result(rel):
    return {"source_video": rel, "clips": [], "rejects": [runner.reject_row(rel, "filter", "too short", "fake")],
            "stats": {"seconds": 0.01, "timings": {}, "duration_s": 1.0, "fps": 25.0, "n_shots": 1,
                      "n_candidate_clips": 1, "notes": {}}}


def _count_call(calls: Path, rel: str) -> int:
    """Record one call across processes (an O_EXCL-created numbered file); return its index."""
    calls.mkdir(exist_ok=True)
    i = 0
    while True:
        try:
            fd = os.open(calls / f"{i:04d}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            i += 1
            continue
        os.write(fd, rel.encode())
        os.close(fd)
        return i


def _calls(calls: Path) -> list[str]:
    return [p.read_text() for p in sorted(calls.glob("*"))] if calls.exists() else []


def test_python_errors_and_dead_workers_become_exact_rejects(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("a.mp4", "boom.mp4", "dies.mp4", "dies_once.mp4", "z.mp4"):
        (raw / name).write_bytes(b"x")
    calls = tmp_path / "calls"

    def fake(raw_dir, rel, out_dir, cfg, steps=None):
        n_before = _calls(calls).count(rel)
        _count_call(calls, rel)
        if rel == "boom.mp4":
            raise RuntimeError("stage exploded")
        if rel == "dies.mp4" or (rel == "dies_once.mp4" and n_before == 0):
            os._exit(3)           # a segfault or an OOM kill: the process vanishes
        return _fake_result(rel)

    monkeypatch.setattr(runner, "process_video", fake)
    stats = runner.run(raw, tmp_path / "out", config_from_dict({}), workers=2, progress=False,
                       max_retries=1)
    rejects = read_rejects(tmp_path / "out")
    rows = {r.source_video: r for r in rejects.itertuples()}
    assert len(rejects) == 5 and set(rows) == {"a.mp4", "boom.mp4", "dies.mp4", "dies_once.mp4", "z.mp4"}
    assert (rows["boom.mp4"].stage, rows["boom.mp4"].reason) == ("runner", "worker crashed")
    assert "RuntimeError: stage exploded" in rows["boom.mp4"].detail
    assert (rows["dies.mp4"].stage, rows["dies.mp4"].reason) == ("runner", "worker lost")
    assert "died on each of 2 attempts" in rows["dies.mp4"].detail
    for name in ("a.mp4", "z.mp4", "dies_once.mp4"):      # dies_once: its retry succeeded
        assert (rows[name].stage, rows[name].reason, rows[name].detail) == ("filter", "too short", "fake")
    # bounded: a Python error is not retried, a death is retried max_retries (1) times
    made = _calls(calls)
    assert {n: made.count(n) for n in set(made)} == {"a.mp4": 1, "z.mp4": 1, "boom.mp4": 1,
                                                       "dies.mp4": 2, "dies_once.mp4": 2}
    assert stats["rejects_by_stage_reason"] == {"filter: too short": 3, "runner: worker crashed": 1,
                                                "runner: worker lost": 1}
    assert stats["run"]["videos_crashed"] == 2 and stats["run"]["videos_lost_this_run"] == 1


def test_a_run_where_every_video_crashed_exits_non_zero(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (raw / name).write_bytes(b"x")

    def broken(raw_dir, rel, out_dir, cfg, steps=None):
        raise ImportError("a stage's dependency is missing")

    monkeypatch.setattr(runner, "process_video", broken)
    result = CliRunner().invoke(cli, ["run", "--raw", str(raw), "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 1, result.output
    assert "every video (2) crashed" in result.output
    assert len(read_rejects(tmp_path / "out")) == 2          # the tables still say why

    monkeypatch.setattr(runner, "process_video", lambda raw_dir, rel, out_dir, cfg, steps=None:
                        _fake_result(rel) if rel == "a.mp4" else broken(raw_dir, rel, out_dir, cfg))
    result = CliRunner().invoke(cli, ["run", "--raw", str(raw), "--out", str(tmp_path / "out2"), "--quiet"])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def vox(shared_data):
    return shared_data / "clips"


@pytest.mark.slow
@pytest.mark.realmedia
def test_each_bad_input_gets_its_exact_reject_row(tmp_path, vox, mediapipe_dir):
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
    # stored sideways with a display matrix, beside the same frames stored upright
    write_video(raw / "rotated.mp4", np.rot90(frames, k=-1, axes=(1, 2)), 25, audio=audio, rotation=90)
    write_video(raw / "upright.mp4", frames, 25, audio=audio)
    os.symlink(good, raw / "good.mp4")
    shutil.copy(good, raw / "vidéo 测试.mp4")
    anime = read_frames(vox / "stylized_anime_musetalk_yongen.mp4", 0, 3.0)
    write_video(raw / "stylised_silent.mp4", anime, 25, audio=np.zeros(48000, np.float32))

    out = tmp_path / "out"
    runner.run(raw, out, config_from_dict(SMALL), workers=2, progress=False)
    manifest = read_manifest(out)
    rejects = read_rejects(out)
    print(rejects[["source_video", "stage", "reason", "detail"]].to_string())
    # one row per bad file, whole-video rejects (no time range) except the silent one's shot
    expect = {"empty.mp4": ("probe", "empty file"), "notes.mp4": ("probe", "unreadable container"),
              "truncated.mp4": ("probe", "unreadable container"),
              "stylised_no_audio.mp4": ("probe", "no audio stream"),
              "one_frame.mp4": ("probe", "too few frames"),
              "stylised_silent.mp4": ("diarize", "no speech")}
    assert sorted(rejects.source_video) == sorted(expect)
    for row in rejects.itertuples():
        assert (row.stage, row.reason) == expect[row.source_video], row
        whole = row.source_video != "stylised_silent.mp4"
        assert math.isnan(row.source_start) == whole, row
    silent = rejects[rejects.source_video == "stylised_silent.mp4"].iloc[0]
    assert (silent.source_start, silent.source_end) == (0.0, 3.0)
    assert rejects.set_index("source_video").loc["one_frame.mp4", "detail"] == "1 frames < 25"

    # the good files are kept; a non-ASCII name changes nothing but the id
    assert sorted(manifest.source_video) == sorted(["good.mp4", "vidéo 测试.mp4", "rotated.mp4", "upright.mp4"])
    assert manifest.clip_id.map(str.isascii).all()
    by = manifest.set_index("source_video")
    values = ["source_start", "source_end", "n_frames", "face_size", "yaw_range", "sharpness",
              "sync_offset", "sync_confidence", "speech_ratio"]
    assert by.loc["good.mp4", values].tolist() == by.loc["vidéo 测试.mp4", values].tolist()
    # the rotated file is read upright: the same measurements as the upright copy within the
    # x264 noise of encoding the two separately (1% of the face size, 1 degree of yaw range)
    rot, up = by.loc["rotated.mp4"], by.loc["upright.mp4"]
    assert (rot.n_frames, rot.sync_offset) == (up.n_frames, up.sync_offset)
    assert abs(rot.face_size - up.face_size) < 0.01 * up.face_size
    assert abs(rot.yaw_range - up.yaw_range) < 1.0
    a = read_frames(out / rot.clip_path, 0, 0.04)[0].astype(float)
    b = read_frames(out / up.clip_path, 0, 0.04)[0].astype(float)
    assert np.abs(a - b).mean() < np.abs(np.rot90(a) - b).mean() / 3


SYNTH_SUBSET = ("synth_v1.mp4", "synth_v2.mp4", "synth_v3.mp4")


@pytest.fixture
def synth_raw(tmp_path, mediapipe_dir):
    """Three of the cached synthetic corpus's five videos (the runner, not the stages, is tested)."""
    from dataprep.synth import cached_corpus

    videos = {p.name: p for p in cached_corpus(0)}
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in SYNTH_SUBSET:
        os.symlink(videos[name], raw / name)
    return raw


def _counting(monkeypatch, calls: Path, kill_at: int | None = None):
    real = runner.process_video

    def counted(raw_dir, rel, out_dir, cfg, steps=None):
        if _count_call(calls, rel) == kill_at:
            raise KeyboardInterrupt       # the run is killed while starting this video
        return real(raw_dir, rel, out_dir, cfg, steps)

    monkeypatch.setattr(runner, "process_video", counted)


def _sample_config():
    cfg = load_config(CONFIG_DIR / "sample.yaml")
    cfg.faces.crop_size = 128        # a cheaper encode; the runner is under test, not the crops
    return cfg


def _snapshot(out: Path) -> dict:
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns
            for p in [*(out / ".work").glob("*.json"), *(out / "clips").glob("*")]}


@pytest.mark.slow
def test_killed_run_with_two_workers_resumes_exactly_and_checks_files(tmp_path, synth_raw, monkeypatch):
    cfg = _sample_config()
    out = tmp_path / "out"
    # 1. two workers; the third video's start kills the run: the other worker finishes its video
    _counting(monkeypatch, tmp_path / "calls1", kill_at=2)
    with pytest.raises(KeyboardInterrupt):
        runner.run(synth_raw, out, cfg, workers=2, progress=False)
    first = _calls(tmp_path / "calls1")
    finished = set(first[:2])
    assert len(first) == 3 and len(finished) == 2
    assert not (out / "manifest.parquet").exists()
    assert {json.loads(p.read_text())["source_video"] for p in (out / ".work").glob("*.json")} == finished
    before = _snapshot(out)
    # what a SIGKILL during an encode leaves behind
    (out / "clips" / ".x-1234.1.tmp.mp4").write_bytes(b"half")

    # 2. restart with two workers: exactly the unfinished video runs; finished work untouched
    _counting(monkeypatch, tmp_path / "calls2")
    stats = runner.run(synth_raw, out, cfg, workers=2, progress=False)
    assert _calls(tmp_path / "calls2") == sorted(set(SYNTH_SUBSET) - finished)
    assert stats["run"]["videos_processed_this_run"] == 1 and stats["run"]["videos_reused"] == 2
    after = _snapshot(out)
    assert {k: after[k] for k in before} == before
    manifest, rejects = read_manifest(out), read_rejects(out)
    assert set(manifest.source_video) == set(SYNTH_SUBSET)
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    assert {p.name.split(".")[0] for p in (out / "clips").glob("*")} == set(manifest.clip_id)

    # 3. a deleted clip and a changed labels file: exactly their videos are redone, the rest reused
    gone, changed = manifest.iloc[0], manifest[manifest.source_video != manifest.iloc[0].source_video].iloc[0]
    (out / gone.clip_path).unlink()
    with open(out / changed.labels_path, "ab") as f:
        f.write(b"\0")
    _counting(monkeypatch, tmp_path / "calls3")
    stats = runner.run(synth_raw, out, cfg, workers=2, progress=False)
    assert sorted(_calls(tmp_path / "calls3")) == sorted({gone.source_video, changed.source_video})
    assert stats["run"]["records_not_reused"] == {"clip file missing": 1, "clip file changed": 1}
    assert (out / gone.clip_path).is_file()
    pd.testing.assert_frame_equal(read_manifest(out), manifest)
    pd.testing.assert_frame_equal(read_rejects(out), rejects)

    # 4. nothing changed: nothing runs, the tables are rewritten identically
    _counting(monkeypatch, tmp_path / "calls4")
    manifest_bytes = (out / "manifest.parquet").read_bytes()
    runner.run(synth_raw, out, cfg, workers=2, progress=False)
    assert _calls(tmp_path / "calls4") == []
    assert (out / "manifest.parquet").read_bytes() == manifest_bytes


@pytest.mark.slow
def test_resume_after_a_code_or_config_change_never_reuses_stale_work(tmp_path, synth_raw, monkeypatch):
    for name in SYNTH_SUBSET[1:]:
        (synth_raw / name).unlink()          # one video is enough here
    video = SYNTH_SUBSET[0]
    cfg = _sample_config()
    out = tmp_path / "out"
    runner.run(synth_raw, out, cfg, progress=False)
    manifest = read_manifest(out)
    assert len(manifest) >= 2

    # another code version: the same folder, every video redone (and said so)
    monkeypatch.setattr(runner, "code_version", lambda: "0123456789ab")
    _counting(monkeypatch, tmp_path / "calls1")
    stats = runner.run(synth_raw, out, cfg, progress=False)
    assert _calls(tmp_path / "calls1") == [video]
    assert "code changed" in stats["run"]["note"] and stats["run"]["stale_records_removed"] == 1
    pd.testing.assert_frame_equal(read_manifest(out), manifest)

    # another config: a clear error naming the setting; nothing in the folder touched
    other = _sample_config()
    other.filter.min_duration_s = 5.0              # keeps only the longer clips
    snapshot = {**_snapshot(out), "manifest": (out / "manifest.parquet").read_bytes()}
    _counting(monkeypatch, tmp_path / "calls2")
    with pytest.raises(runner.OutFolderConflict, match=r"filter\.min_duration_s: 2\.5 -> 5\.0"):
        runner.run(synth_raw, out, other, progress=False)
    assert _calls(tmp_path / "calls2") == []
    assert {**_snapshot(out), "manifest": (out / "manifest.parquet").read_bytes()} == snapshot
    result = CliRunner().invoke(cli, ["run", "--raw", str(synth_raw), "--out", str(out), "--quiet",
                                      "--config", str(CONFIG_DIR / "default.yaml")])
    assert result.exit_code != 0 and "holds the results of another config" in result.output

    # --fresh: the other config's dataset alone, none of the first one's clips left
    stats = runner.run(synth_raw, out, other, progress=False, fresh=True)
    assert _calls(tmp_path / "calls2") == [video]
    fresh = read_manifest(out)
    assert 1 <= len(fresh) < len(manifest) and (fresh.n_frames / fresh.fps >= 5.0).all()
    assert {p.name.split(".")[0] for p in (out / "clips").glob("*")} == set(fresh.clip_id)
