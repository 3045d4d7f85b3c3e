"""Lip sync: the offset convention on constructed signals, real clips, shifted audio, decisions."""
import json

import numpy as np
import pytest

from dataprep.stages.sync import SyncConfig, check_sync, shift_audio
from emo.media.lipsync import measure_offset, mouth_features, mouth_opening

RATE = 16000
FPS = 25.0
HOP = int(RATE / FPS)


def _syllables(n_frames, seed):
    """A mouth-opening-like signal: smoothed random bursts at a syllable rate (~4 Hz)."""
    rng = np.random.default_rng(seed)
    x = np.convolve(rng.random(n_frames) ** 3, np.hanning(7), mode="same")
    return x / x.max()


def _voice_for(mouth, delay_frames, seed=1):
    """Noise whose loudness follows `mouth` delayed by `delay_frames` (> 0: audio late)."""
    env = np.roll(mouth, delay_frames)
    rng = np.random.default_rng(seed)
    gain = np.repeat(0.01 + env, HOP)
    return (rng.normal(0, 0.2, len(gain)) * gain).astype(np.float32)


@pytest.mark.parametrize("delay", [-7, -2, 0, 3, 9])
def test_offset_sign_convention(delay):
    mouth = _syllables(250, seed=delay + 20)
    r = measure_offset(mouth, _voice_for(mouth, delay), RATE, FPS)
    assert r.offset == delay            # > 0 means the audio is late
    assert r.confidence > 0.3
    assert len(r.curve) == 31 and r.lags[0] == -15


def test_nothing_to_measure_gives_zero_confidence():
    mouth = _syllables(200, seed=3)
    r = measure_offset(mouth, np.zeros(200 * HOP, np.float32), RATE, FPS)
    assert r.confidence == 0.0 and r.offset == 0
    r = measure_offset(np.full(200, np.nan), _voice_for(mouth, 0), RATE, FPS)
    assert r.confidence == 0.0
    with pytest.raises(ValueError):
        measure_offset(np.zeros((2, 3, 4)), np.zeros(100, np.float32), RATE, FPS)


def test_mouth_opening_is_scale_free_and_validates():
    lm = np.zeros((2, 478, 3), np.float32)
    lm[:, 263, 0], lm[:, 33, 0] = 100, 40          # eyes 60 px apart
    lm[:, 13, 1], lm[:, 14, 1] = 50, 62            # lips 12 px apart
    lm[:, 2, 1], lm[:, 152, 1] = 40, 100
    assert np.allclose(mouth_opening(lm), 0.2)
    assert np.allclose(mouth_opening(lm * 3), 0.2)
    assert mouth_features(lm).shape == (2, 2)
    with pytest.raises(ValueError):
        mouth_opening(np.zeros((5, 68, 2)))


def test_shift_audio_undoes_an_offset():
    audio = np.arange(10 * HOP, dtype=np.float32)
    late = shift_audio(audio, RATE, FPS, -3)            # delaying: audio now late by 3 frames
    assert len(late) == len(audio) and np.all(late[:3 * HOP] == 0)
    back = shift_audio(late, RATE, FPS, 3)
    assert np.array_equal(back[:7 * HOP], audio[:7 * HOP])
    assert np.array_equal(shift_audio(audio, RATE, FPS, 0), audio)
    mouth = _syllables(250, seed=5)
    voice = _voice_for(mouth, 6)
    assert measure_offset(mouth, shift_audio(voice, RATE, FPS, 6), RATE, FPS).offset == 0


def _landmarks_for(mouth):
    """Landmarks whose lip gap follows `mouth` (eyes fixed), for check_sync on constructed input."""
    lm = np.zeros((len(mouth), 478, 3), np.float32)
    lm[:, 263, 0], lm[:, 33, 0] = 100, 40
    lm[:, 13, 1] = 50
    lm[:, 14, 1] = 50 + 20 * mouth
    lm[:, 2, 1], lm[:, 152, 1] = 40, 100 + 10 * mouth
    return lm


@pytest.mark.parametrize("delay,keep,reason,corrected", [
    (0, True, "", False), (1, True, "", False), (3, True, "", True), (-5, True, "", True),
    (11, False, "out of sync", False)])
def test_check_sync_decisions(delay, keep, reason, corrected):
    mouth = _syllables(250, seed=11)
    d = check_sync(_landmarks_for(mouth), _voice_for(mouth, delay), RATE, FPS, SyncConfig())
    assert (d.offset, d.keep, d.reason, d.corrected, d.trusted) == (delay, keep, reason, corrected, True)


def test_check_sync_rejects_a_face_that_is_not_speaking():
    mouth = _syllables(1500, seed=0)
    other = _syllables(1500, seed=100)                 # someone else's voice: chance level ~0.1
    for lm in (_landmarks_for(np.zeros(1500)), _landmarks_for(other)):
        d = check_sync(lm, _voice_for(mouth, 0), RATE, FPS, SyncConfig(min_confidence=0.2))
        assert not d.keep and d.reason == "face not speaking"


def test_disagreeing_features_are_not_acted_on():
    mouth = _syllables(250, seed=13)
    lm = _landmarks_for(mouth)
    lm[:, 152, 1] = 100 + 10 * np.roll(mouth, 6)       # the jaw says -6, the lips say 0
    d = check_sync(lm, _voice_for(mouth, 0), RATE, FPS)
    assert d.keep and not d.corrected and not d.trusted


def test_check_sync_config_is_validated():
    with pytest.raises(ValueError):
        check_sync(_landmarks_for(np.zeros(50)), np.zeros(50 * HOP, np.float32), RATE, FPS,
                   SyncConfig(max_offset=5, max_correctable=5))
    with pytest.raises(ValueError, match="unknown"):
        SyncConfig.from_dict({"max_ofset": 3})


# ------------------------------------------------------------------ real clips

CLIPS = ["talk_vox_00086", "talk_vox_741400163", "talk_vox_00010", "talk_hdtf_moore4",
         "noSpeech_music_lp_d14"]


@pytest.fixture(scope="session")
def clip_tracks(shared_data, mediapipe_dir):
    """Landmarks (first 12 s at most), audio and fps of a few shared clips, computed once."""
    from emo.media.audio import load_audio
    from emo.media.face import FaceAnalyser
    from emo.media.video import iter_frames, probe_video

    out = {}
    for name in CLIPS:
        path = shared_data / "clips" / f"{name}.mp4"
        fps = probe_video(path).fps
        lms = []
        with FaceAnalyser(max_faces=1, model_dir=str(mediapipe_dir)) as fa:
            for i, rgb in iter_frames(path, end=12.0):
                faces = fa.analyse(rgb, int(i * 1000 / fps))
                lms.append(faces[0].landmarks if faces else np.full((478, 3), np.nan, np.float32))
        lms = np.stack(lms)
        audio = load_audio(path, RATE)[:int(len(lms) * RATE / fps)]
        out[name] = (lms, audio, fps)
    return out


TALK = [c for c in CLIPS if c.startswith("talk")]


@pytest.mark.realmedia
@pytest.mark.parametrize("name", TALK)
def test_real_clips_are_in_sync(clip_tracks, name):
    lms, audio, fps = clip_tracks[name]
    r = measure_offset(mouth_features(lms), audio, RATE, fps)
    print(f"{name}: offset {r.offset:+d} confidence {r.confidence:.3f}")
    # Observed: 00086 +0, 741400163 +2, 00010 -2, moore4 +0 (the README's sync2 lip probe, whose
    # sign is the opposite, gives 0, -2, +2, 0).
    assert abs(r.offset) <= 2
    assert r.confidence >= SyncConfig().min_confidence


def _shifted(lms, audio, fps, delay, margin=12):
    """Frames [margin, T - margin) with the audio taken `delay` frames earlier in the source:
    the sound of frame t then plays at frame t + delay (audio late by `delay`)."""
    mouth = mouth_features(lms)[margin:len(lms) - margin]
    hop = RATE / fps
    a0 = int(round((margin - delay) * hop))
    return mouth, audio[a0:a0 + int(round(len(mouth) * hop))]


@pytest.mark.realmedia
@pytest.mark.parametrize("name", ["talk_vox_00086", "talk_vox_741400163", "talk_hdtf_moore4"])
def test_shifted_audio_is_recovered(clip_tracks, name):
    lms, audio, fps = clip_tracks[name]
    errors = {}
    for delay in (-10, -5, 5, 10):
        mouth, a = _shifted(lms, audio, fps, delay)
        errors[delay] = measure_offset(mouth, a, RATE, fps).offset - delay
    print(f"{name}: recovery errors {errors}")
    assert all(abs(e) <= 2 for e in errors.values()), errors


@pytest.mark.realmedia
def test_music_clip_has_low_confidence(clip_tracks):
    lms, audio, fps = clip_tracks["noSpeech_music_lp_d14"]
    d = check_sync(lms, audio, RATE, fps, SyncConfig())
    talk = [measure_offset(mouth_features(clip_tracks[n][0]), clip_tracks[n][1], RATE,
                           clip_tracks[n][2]).confidence for n in TALK]
    print(f"music: offset {d.offset:+d} confidence {d.confidence:.3f}; talk {np.round(talk, 3)}")
    assert d.confidence < min(talk)
    assert not d.keep and d.reason == "face not speaking"


@pytest.mark.realmedia
def test_check_sync_on_real_clip(clip_tracks):
    lms, audio, fps = clip_tracks["talk_vox_00086"]
    assert check_sync(lms, audio, RATE, fps).keep
    mouth_lms = lms[12:len(lms) - 12]
    _, late = _shifted(lms, audio, fps, 10)
    d = check_sync(mouth_lms, late, RATE, fps)
    assert not d.keep and d.reason == "out of sync" and abs(d.offset - 10) <= 2


@pytest.fixture(scope="session")
def synth_video(tmp_path_factory):
    """One video of the synthetic corpus that holds an audio-shifted shot (rendered once)."""
    synth = pytest.importorskip("dataprep.synth")
    cfg = synth.load_config()
    index = next((i for i, v in enumerate(cfg["videos"])
                  if any(s["kind"] == "audio_shifted" for s in v["shots"])), None)
    if index is None:
        pytest.skip("the synthetic corpus config has no audio_shifted shot")
    path = synth.render_video(cfg, index, 0, tmp_path_factory.mktemp("synth"))
    return path, json.loads(path.with_name(f"{path.stem}.groundtruth.json").read_text())


def test_synthetic_shifted_shot_is_recovered(synth_video, mediapipe_dir):
    from emo.media.audio import load_audio
    from emo.media.face import FaceAnalyser
    from emo.media.video import iter_frames

    path, truth = synth_video
    audio = load_audio(path, RATE)
    fps = truth["fps"]
    shots = [s for s in truth["shots"] if s["kind"] == "audio_shifted"] + \
            [s for s in truth["shots"] if s["kind"] == "talk"][:1]
    with FaceAnalyser(max_faces=1, model_dir=str(mediapipe_dir)) as fa:
        for shot in shots:
            lms = []
            for i, rgb in iter_frames(path, start=shot["start_s"], end=shot["end_s"]):
                faces = fa.analyse(rgb, int(i * 1000 / fps))
                lms.append(faces[0].landmarks if faces else np.full((478, 3), np.nan, np.float32))
            a = audio[int(shot["start_s"] * RATE):int(shot["end_s"] * RATE)]
            d = check_sync(np.stack(lms), a, RATE, fps)
            expected = shot["expected_audio_offset_frames"]
            print(f"synthetic {shot['id']} ({shot['kind']}): expected {expected:+d}, measured {d}")
            assert abs(d.offset - expected) <= 1
            assert d.keep and d.trusted and d.corrected == (abs(expected) > 1)
