"""dataprep's decoding helpers against emo.media's plain reader on small encoded videos: the
export's range reader gives exactly iter_frames' frames whatever the order of the ranges, decoding
adjacent ranges once; the scan's face view is the source frame resized, its cut-detector view the
scaler's frame as before."""
import av
import numpy as np
import pytest

from dataprep.decode import ClipFrameReader, face_view, iter_scaled
from emo.media import iter_frames

FPS = 25
N_FRAMES = 90


def _encode(path, rotation: int = 0, size=(96, 64)):
    """Moving colour noise, a keyframe every 12 frames and B-frames, so ranges start inside
    GOPs and frames come out of the decoder reordered."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size[1], size[0] * 2, 3), dtype=np.uint8)
    with av.open(str(path), mode="w") as container:
        vs = container.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        vs.options = {"g": "12", "bf": "2", "crf": "20", "preset": "veryfast", "sc_threshold": "0"}
        if rotation:
            vs.set_display_rotation(rotation)
        for i in range(N_FRAMES):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(base[:, i % size[0]:i % size[0] + size[0]]),
                                               format="rgb24")
            for packet in vs.encode(frame):
                container.mux(packet)
        for packet in vs.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return _encode(tmp_path_factory.mktemp("decode") / "noise.mp4")


def _reference(path, start, end):
    return [(i, f) for i, f in iter_frames(path, start / FPS, end / FPS)]


def _same(got, want):
    assert [i for i, _ in got] == [i for i, _ in want]
    for (_, a), (_, b) in zip(got, want):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("ranges", [
    [(0, 30), (30, 55), (55, 90)],          # adjacent: one pass
    [(5, 20), (40, 70)],                    # a gap: a seek to a frame inside a GOP
    [(40, 70), (5, 20)],                    # backwards
    [(13, 14), (14, 15), (80, 200)],        # single frames; a range past the end
    [(0, 10), (0, 10)],                     # the same range twice
])
def test_range_reader_gives_iter_frames_frames(video, ranges):
    with ClipFrameReader(video) as reader:
        for start, end in ranges:
            _same(list(reader.read(start, end)), _reference(video, start, end))


def test_adjacent_ranges_decode_each_frame_once(video):
    with ClipFrameReader(video) as reader:
        for start, end in [(0, 30), (30, 60), (65, 90)]:     # 65: 5 frames on, within continue_s
            assert len(list(reader.read(start, end))) == end - start
        assert reader.decoded == N_FRAMES and reader.seeks == 0
    with ClipFrameReader(video, continue_s=0.0) as reader:
        list(reader.read(0, 30))
        list(reader.read(65, 90))                             # now a seek: to the keyframe at 60
        assert reader.seeks == 1 and reader.decoded < N_FRAMES


def test_range_reader_after_an_early_stop(video):
    with ClipFrameReader(video) as reader:
        for _ in zip(range(3), reader.read(0, 30)):      # the consumer stops after 3 frames
            pass
        _same(list(reader.read(30, 40)), _reference(video, 30, 40))


def test_range_reader_turns_rotated_frames_upright(tmp_path):
    path = _encode(tmp_path / "rotated.mp4", rotation=90)
    with ClipFrameReader(path) as reader:
        got = list(reader.read(20, 30))
    assert got[0][1].shape == (96, 64, 3)
    _same(got, _reference(path, 20, 30))


def test_scan_views(video):
    """The cut detector's frame is the scaler's BGR frame at its size (unchanged, so are the
    cuts); the face analyser's frame is the RGB source frame resized, within a few levels of
    the scaler's own resize."""
    frames = {i: f for i, f in iter_frames(video)}
    seen = 0
    for sf in iter_scaled(video, small_width=48, face_max_side=72, stride=3):
        assert sf.small_bgr.shape == (32, 48, 3)
        assert (sf.face_rgb is not None) == (sf.index % 3 == 0)
        if sf.face_rgb is None:
            continue
        want = face_view(frames[sf.index], (72, 48))
        np.testing.assert_array_equal(sf.face_rgb, want)
        assert sf.face_scale == pytest.approx(72 / 96)
        seen += 1
    assert seen == N_FRAMES // 3
    with av.open(str(video)) as container:
        first = next(container.decode(video=0))
        small = first.reformat(width=48, height=32, format="bgr24").to_ndarray()
    np.testing.assert_array_equal(next(iter_scaled(video, 48, 72, 3)).small_bgr, small)
