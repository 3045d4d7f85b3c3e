"""emo.media: probe/read/write round trips, rotation, audio, crops, pose maths."""
import numpy as np
import pytest

from emo.media import MediaError, load_audio, probe_video, read_frames, write_video
from emo.media.crop import box_in_crop, crop_square, square_around
from emo.media.pose import euler_to_rotation, rotation_speed, rotation_to_euler


def _frames(t=12, h=64, w=96):
    # smooth colour ramps: what a lossy 4:2:0 codec keeps well (noise it would not)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (w + h)], -1).astype(np.uint8)
    return np.stack([np.roll(base, i, axis=1) for i in range(t)])


def test_write_probe_read_round_trip(tmp_path):
    frames = _frames()
    audio = 0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000).astype(np.float32)
    path = write_video(tmp_path / "a.mp4", frames, fps=25, audio=audio)
    info = probe_video(path)
    assert (info.width, info.height, info.n_frames, info.fps) == (96, 64, 12, 25.0)
    assert info.has_audio and info.audio_rate == 16000
    back = read_frames(path)
    assert back.shape == frames.shape
    assert np.abs(back.astype(int) - frames.astype(int)).mean() < 6  # lossy but close
    pcm = load_audio(path)
    assert abs(len(pcm) - 16000) < 2048
    # the tone survives: its spectrum peaks at 440 Hz
    spec = np.abs(np.fft.rfft(pcm[2000:14000]))
    assert abs(np.argmax(spec) * 16000 / 12000 - 440) < 5
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left nothing behind


def test_rotation_metadata_gives_upright_frames(tmp_path):
    frames = _frames(h=40, w=80)
    path = write_video(tmp_path / "r.mp4", frames, fps=25, rotation=90)
    info = probe_video(path)
    assert info.rotation == 90 and (info.width, info.height) == (40, 80)
    assert read_frames(path).shape == (12, 80, 40, 3)


@pytest.mark.parametrize("content,reason", [(b"", "empty file"), (b"hello, not a video", "unreadable")])
def test_probe_rejects_bad_files(tmp_path, content, reason):
    p = tmp_path / "bad.mp4"
    p.write_bytes(content)
    with pytest.raises(MediaError, match=reason):
        probe_video(p)


def test_pose_round_trip_and_speed():
    for ypr in [(10, -5, 3), (-30, 12, -8), (0, 0, 0)]:
        assert np.allclose(rotation_to_euler(euler_to_rotation(*ypr)), ypr, atol=1e-6)
    yaws = np.arange(10) * 2.0  # 2 degrees per frame about one axis
    rots = np.stack([euler_to_rotation(y, 0, 0) for y in yaws])
    assert np.allclose(rotation_speed(rots), 2.0, atol=1e-4)


def test_crop_maps_box_to_centre():
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[40:60, 150:170] = 255
    box = np.array([150, 40, 170, 60], np.float32)
    sq = square_around(box, scale=2.0)
    crop = crop_square(frame, sq, 64)
    inner = box_in_crop(box, sq, 64)
    assert np.allclose(inner, [16, 16, 48, 48], atol=1e-4)
    assert crop[20:44, 20:44].mean() > 250 and crop[:8].mean() < 5
