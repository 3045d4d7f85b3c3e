"""load_audio reads audio on the players' clock: by presentation timestamps, relative to the video."""
import av
import numpy as np
import pytest

from emo.media.audio import load_audio
from emo.media.video import read_frames

RATE = 16000
FPS = 25


def _write(path, audio_start_s, gap=None, n_frames=50):
    """An mp4 whose video starts at 0 and whose audio stream (a click at 1.0 s of its own
    timeline) starts `audio_start_s` later, muxed with shifted packet timestamps as
    `ffmpeg -itsoffset` does; `gap` = (at_s, length_s) drops that much audio from the stream's
    timestamps (a leading/inner gap the player fills with silence)."""
    audio = np.zeros(int(2.0 * RATE), np.float32)
    audio[RATE:RATE + 160] = 0.8                                      # click at 1.0 s
    with av.open(str(path), "w", format="mp4") as c:
        vs = c.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = 64, 64, "yuv420p"
        as_ = c.add_stream("aac", rate=RATE, layout="mono")
        for i in range(n_frames):
            img = np.full((64, 64, 3), 255 if i == FPS else 0, np.uint8)   # flash at 1.0 s
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        start = int(round(audio_start_s * RATE))
        for i in range(0, len(audio), 1024):
            f = av.AudioFrame.from_ndarray(audio[None, i:i + 1024], format="fltp", layout="mono")
            f.sample_rate = RATE
            pts = i + start
            if gap and i >= gap[0] * RATE:
                pts += int(gap[1] * RATE)
            f.pts = pts
            for p in as_.encode(f):
                c.mux(p)
        for p in as_.encode():
            c.mux(p)
    return path


def _click_s(audio):
    return float(np.argmax(np.abs(audio) > 0.3)) / RATE


def test_in_step_file_reads_click_with_flash(tmp_path):
    path = _write(tmp_path / "a.mp4", 0.0)
    frames = read_frames(path)
    assert int(np.argmax(frames.mean(axis=(1, 2, 3)))) == FPS           # flash frame = 1.0 s
    assert abs(_click_s(load_audio(path)) - 1.0) < 0.01


@pytest.mark.parametrize("start", [0.4, 0.34])
def test_audio_starting_after_the_video_is_read_late(tmp_path, start):
    path = _write(tmp_path / "late.mp4", start)
    with av.open(str(path)) as c:       # the container really says so (what players follow)
        first = next(c.decode(c.streams.audio[0])).time
    # (the first decoded frame holds the AAC encoder's 1024 priming samples, 64 ms before `start`)
    assert first == pytest.approx(start - 1024 / RATE, abs=0.002)
    audio = load_audio(path)
    assert abs(_click_s(audio) - (1.0 + start)) < 0.01       # the old reader put it at 1.0 s
    assert np.all(audio[:int(first * RATE) - 10] == 0)
    # start/end cut on the same clock
    cut = load_audio(path, start=1.0, end=1.5 + start)
    assert abs(_click_s(cut) - start) < 0.01


def test_gap_inside_the_stream_is_silence(tmp_path):
    path = _write(tmp_path / "gap.mp4", 0.0, gap=(0.5, 0.3))
    audio = load_audio(path)
    assert abs(_click_s(audio) - 1.3) < 0.01         # everything after the gap plays 0.3 s later
