"""Stage decisions on hand-made observations (no media, no models): cut and faces."""
import numpy as np
import pytest

from dataprep.config import config_from_dict
from dataprep.stages import faces as faces_mod
from dataprep.stages.common import Clip, StageReject, VideoRecord
from dataprep.stages.cut import cut
from dataprep.stages.faces import FrameFaces, build_track
from dataprep.stages.scan import Scan
from emo.media.video import VideoInfo

CFG = config_from_dict({})
FPS = 25.0


def _face(cx, cy, h=100.0, others=(), yaw=0.0):
    lm = np.zeros((478, 3), np.float32)
    lm[:, 0] = np.linspace(cx - h / 2, cx + h / 2, 478)
    lm[:, 1] = np.linspace(cy - h / 2, cy + h / 2, 478)
    return FrameFaces(landmarks=lm, blendshapes=np.zeros(52, np.float32),
                      pose=np.array([yaw, 0, 0], np.float32),
                      box=np.array([cx - h / 2, cy - h / 2, cx + h / 2, cy + h / 2], np.float32),
                      sharpness=50.0, other_boxes=list(others))


def _observed(n=100, stride=3, make=lambda i: _face(300 + i * 0.5, 200)):
    return {i: make(i) for i in range(0, n, stride)}


def _clip(n=100):
    return Clip("c", 0, n, FPS)


def test_a_steady_face_gives_a_full_interpolated_track():
    track = build_track(_observed(make=lambda i: _face(300 + i, 200, yaw=i * 0.3)), _clip(), "x.mp4", CFG.faces)
    assert track.landmarks.shape == (100, 478, 3) and track.boxes.shape == (100, 4)
    # frame 1 lies between analysed frames 0 and 3: its centre is interpolated, not held
    assert np.isclose((track.boxes[1, 0] + track.boxes[1, 2]) / 2, 301.0, atol=1e-3)
    assert np.allclose(track.speed[1:-1], 0.3, atol=0.02)      # constant yaw speed, degrees/frame


@pytest.mark.parametrize("make,reason", [
    (lambda i: _face(300, 200, others=[np.array([0, 0, 90, 90])]), "multiple faces"),
    (lambda i: _face(300, 200, h=40.0), "face too small"),
    (lambda i: None if 30 <= i < 60 else _face(300, 200), "face lost"),
    (lambda i: _face(300 if i < 50 else 700, 200), "face lost"),
])
def test_face_decisions(make, reason):
    with pytest.raises(StageReject) as exc:
        build_track(_observed(make=make), _clip(), "x.mp4", CFG.faces)
    assert (exc.value.stage, exc.value.reason) == ("faces", reason)


def test_a_small_second_face_and_short_gaps_are_tolerated():
    make = lambda i: None if i in (30, 33) else _face(300, 200, others=[np.array([0, 0, 20, 20])])  # noqa: E731
    track = build_track(_observed(make=make), _clip(), "x.mp4", CFG.faces)
    assert np.isfinite(track.landmarks).all()


@pytest.mark.parametrize("found,reason", [(None, "no face"), (25.0, "face too small")])
def test_faceless_clip_tells_no_face_from_tiny_face(monkeypatch, found, reason):
    monkeypatch.setattr(faces_mod, "small_face_search", lambda *a, **k: found)
    with pytest.raises(StageReject) as exc:
        build_track(_observed(make=lambda i: None), _clip(), "x.mp4", CFG.faces)
    assert exc.value.reason == reason


def test_short_shots_are_rejected_and_long_ones_split():
    info = VideoInfo("x.mp4", 640, 360, FPS, 1000, 40.0, 0, "h264", True, 16000, 1, "aac", 40.0)
    record = VideoRecord("x.mp4", "/raw/x.mp4", "/out", info=info)
    record.scan = Scan(n_frames=1000, cuts=[50, 700])
    record = cut(record, CFG)
    assert [(r["stage"], r["reason"]) for r in record.rejects] == [("cut", "shot too short")]
    assert record.rejects[0]["source_start"] == 0.0 and record.rejects[0]["source_end"] == 2.0
    spans = [(c.start_frame, c.end_frame) for c in record.clips]
    assert spans[0][0] == 50 and spans[-1][1] == 1000 and len(spans) == 4   # 26 s -> 3 clips, + 12 s
    assert len({c.clip_id for c in record.clips}) == 4


def _record_with_clip(tmp_path, n=30):
    from dataprep.stages.faces import FaceTrack

    info = VideoInfo("x.mp4", 160, 120, FPS, n, n / FPS, 0, "h264", True, 16000, 1, "aac", n / FPS)
    record = VideoRecord("x.mp4", str(tmp_path / "x.mp4"), str(tmp_path / "out"), info=info,
                         audio=np.zeros(int(n / FPS * 16000), np.float32))
    clip = Clip("x-00000000-000000", 0, n, FPS)
    boxes = np.tile(np.array([50, 30, 110, 90], np.float32), (n, 1))
    clip.track = FaceTrack(np.zeros((n, 478, 3), np.float32), np.zeros((n, 52), np.float32),
                           np.zeros((n, 3), np.float32), boxes, np.zeros(n, np.float32), 50.0)
    return record, clip


@pytest.mark.parametrize("keep_every,ok", [(lambda i: i not in (4, 5, 17), True),   # VFR-like gaps
                                           (lambda i: i < 10, False)])                # mostly missing
def test_export_gives_constant_rate_clips_or_a_decode_error(tmp_path, monkeypatch, keep_every, ok):
    from dataprep.stages import export as export_mod
    from emo.media import probe_video

    record, clip = _record_with_clip(tmp_path)
    frames = [(i, np.full((120, 160, 3), i * 8, np.uint8)) for i in range(30) if keep_every(i)]
    monkeypatch.setattr(export_mod.ClipFrameReader, "read", lambda self, start, end: iter(frames))
    record.clips = [clip]
    cfg = config_from_dict({"faces": {"crop_size": 64}})
    export_mod.export(record, cfg)
    if ok:
        assert clip.reject is None
        assert probe_video(tmp_path / "out" / clip.values["clip_path"]).n_frames == 30
    else:
        assert clip.reject["stage"] == "export" and clip.reject["reason"] == "decode error" and "decoded 10 of 30" in clip.reject["detail"]
        assert not list((tmp_path / "out" / "clips").glob("*.mp4"))
