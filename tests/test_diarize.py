"""Diarization: the offline backend on real and constructed audio, DER, RTTM, speech_stats."""
import sys

import numpy as np
import pytest

from dataprep.metrics import diarization_error_rate, read_rttm, write_rttm
from dataprep.stages.diarize import DiarizeConfig, Turn, diarize, speech_stats

RATE = 16000


def speakers(turns):
    return {t.speaker for t in turns}


# ------------------------------------------------------------------ DER and RTTM (no media)

def test_der_perfect_and_permutation_invariant():
    ref = [Turn(0, 2, "a"), Turn(2, 5, "b"), Turn(6, 8, "a")]
    hyp = [Turn(t.start, t.end, {"a": "X", "b": "Y"}[t.speaker]) for t in ref]
    r = diarization_error_rate(ref, hyp)
    assert r.der == pytest.approx(0.0, abs=1e-9)
    assert r.mapping == {"X": "a", "Y": "b"}


def test_der_components_by_hand():
    ref = [Turn(0, 4, "a"), Turn(4, 8, "b")]          # 8 s of speech
    # 0-1 missed, 1-4 correct, 4-6 confused (hyp says a), 6-8 correct, 8-9 false alarm
    hyp = [Turn(1, 6, "A"), Turn(6, 9, "B")]
    r = diarization_error_rate(ref, hyp)
    assert r.missed == pytest.approx(1.0, abs=0.02)
    assert r.confusion == pytest.approx(2.0, abs=0.02)
    assert r.false_alarm == pytest.approx(1.0, abs=0.02)
    assert r.der == pytest.approx(4.0 / 8.0, abs=0.01)
    # A collar of 0.5 s each side removes the errors at the boundaries 0 and 4 s, not the rest.
    rc = diarization_error_rate(ref, hyp, collar=0.5)
    assert rc.missed == pytest.approx(0.5, abs=0.02) and rc.total == pytest.approx(6.0, abs=0.02)


def test_der_overlap_counts_per_speaker_and_bad_input():
    ref = [Turn(0, 4, "a"), Turn(2, 4, "b")]          # 6 speaker-seconds
    r = diarization_error_rate(ref, [Turn(0, 4, "A")])
    assert r.missed == pytest.approx(2.0, abs=0.02) and r.total == pytest.approx(6.0, abs=0.02)
    assert diarization_error_rate(ref, [Turn(0, 4, "A")], skip_overlap=True).der == pytest.approx(0, abs=0.01)
    with pytest.raises(ValueError, match="no speech"):
        diarization_error_rate([], [Turn(0, 1, "A")])


def test_rttm_roundtrip(tmp_path):
    turns = [Turn(0.5, 1.25, "spk0"), Turn(1.5, 3.0, "spk1")]
    path = write_rttm(tmp_path / "x.rttm", turns, "clip")
    assert read_rttm(path) == turns
    (tmp_path / "bad.rttm").write_text("SPEAKER clip 1 zero 1.0 <NA> <NA> s <NA> <NA>\n")
    with pytest.raises(ValueError, match="bad onset"):
        read_rttm(tmp_path / "bad.rttm")


def test_speech_stats_counts_meaningful_speakers_only():
    turns = [Turn(0, 4, "A"), Turn(4, 4.4, "B"), Turn(5, 9, "B")]
    ratio, n, main = speech_stats(turns, 0, 5)
    assert ratio == pytest.approx(4.4 / 5) and n == 1 and main == "A"    # B's 0.4 s is not enough
    ratio, n, main = speech_stats(turns, 0, 10)
    assert n == 2 and main == "B" and ratio == pytest.approx(0.84)
    assert speech_stats(turns, 20, 25) == (0.0, 0, None)
    with pytest.raises(ValueError):
        speech_stats(turns, 3, 3)


# ------------------------------------------------------------------ backends: errors

def test_bad_audio_and_backend_errors(monkeypatch):
    with pytest.raises(ValueError, match="mono"):
        diarize(np.zeros((2, RATE), np.float32), RATE)
    with pytest.raises(ValueError, match="NaN"):
        diarize(np.full(RATE, np.nan, np.float32), RATE)
    with pytest.raises(ValueError, match="backend"):
        diarize(np.zeros(RATE, np.float32), RATE, DiarizeConfig(backend="nope"))
    monkeypatch.setitem(sys.modules, "pyannote.audio", None)   # as if the extra were absent
    cfg = DiarizeConfig(backend="pyannote", pyannote_pipeline="pyannote/speaker-diarization-3.1")
    with pytest.raises(ImportError, match=r"emo-toolkit\[pyannote\]"):
        diarize(np.zeros(RATE, np.float32), RATE, cfg)


def test_silence_and_hiss_give_no_speech():
    assert diarize(np.zeros(3 * RATE, np.float32), RATE) == []
    hiss = np.random.default_rng(0).normal(0, 1e-3, 3 * RATE).astype(np.float32)
    assert diarize(hiss, RATE) == []


# ------------------------------------------------------------------ real speech

@pytest.fixture(scope="module")
def speech(shared_data):
    from emo.media.audio import load_audio
    d = shared_data / "audio"
    return {name: load_audio(d / f"{name}.wav") for name in
            ("two_speakers_pyannote_sample", "en_speech_RD_Radio31_000", "zh_speech_chinese_news",
             "ja_speech_japanese")}


@pytest.mark.realmedia
def test_der_on_pyannote_sample(speech, shared_data):
    ref = read_rttm(shared_data / "audio" / "two_speakers_pyannote_sample.rttm")
    hyp = diarize(speech["two_speakers_pyannote_sample"], RATE)
    r = diarization_error_rate(ref, hyp)
    print(f"DER sample: {r.der:.3f} (collar 0.25: {diarization_error_rate(ref, hyp, collar=0.25).der:.3f})")
    # Observed 0.147 (missed 2.03 s, false alarm 0.22 s, confusion 1.33 s of 24.35 s); pyannote's
    # own pretrained pipeline reports 0.235 on this file. Everything-one-speaker scores ~0.5.
    assert r.der < 0.30
    assert len(speakers(hyp)) == 2


def _alternate(a, b, turn_s=3.5, gap_s=0.4, rounds=2):
    parts, ref, t = [], [], 0.0
    for i in range(rounds):
        for name, src in (("A", a), ("B", b)):
            parts += [src[int(i * turn_s * RATE):int((i + 1) * turn_s * RATE)],
                      np.zeros(int(gap_s * RATE), np.float32)]
            ref.append(Turn(t, t + turn_s, name))
            t += turn_s + gap_s
    return np.concatenate(parts), ref


@pytest.mark.realmedia
@pytest.mark.parametrize("pair", [("en_speech_RD_Radio31_000", "zh_speech_chinese_news"),
                                  ("zh_speech_chinese_news", "ja_speech_japanese")])
def test_alternating_voices_are_two_speakers(speech, pair):
    audio, ref = _alternate(speech[pair[0]], speech[pair[1]])
    hyp = diarize(audio, RATE)
    r = diarization_error_rate(ref, hyp)
    assert len(speakers(hyp)) == 2
    assert r.der < 0.25          # observed 0.08 (en/zh) and 0.14 (zh/ja)
    ratio, n, _ = speech_stats(hyp, 0, ref[-1].end)
    assert n == 2 and ratio > 0.7


@pytest.mark.realmedia
@pytest.mark.parametrize("name", ["en_speech_RD_Radio31_000", "ja_speech_japanese"])
def test_single_speaker_is_one_speaker(speech, name):
    audio = speech[name]
    turns = diarize(audio, RATE)
    assert len(speakers(turns)) == 1
    ratio, n, main = speech_stats(turns, 0, len(audio) / RATE)
    assert n == 1 and main == "spk0" and ratio > 0.6


@pytest.mark.realmedia
def test_multishot_video_talk_shots_have_one_speaker(shared_data):
    """The pipeline's question on real shots: each talking shot of the shared multi-shot video
    (speaker changes at cuts, with no pause) must come out with exactly one speaker."""
    import json

    from emo.media.audio import load_audio
    raw = shared_data / "raw" / "raw_multishot_shared"
    truth = json.loads(raw.with_suffix(".groundtruth.json").read_text())
    turns = diarize(load_audio(raw.with_suffix(".mp4")), RATE)
    ref = [Turn(t["start_s"], t["end_s"], t["speaker"]) for t in truth["speaker_turns"]]
    print(f"DER multishot: {diarization_error_rate(ref, turns).der:.3f}")
    for shot in truth["shots"]:
        ratio, n, _ = speech_stats(turns, shot["start_s"], shot["end_s"])
        if shot["kind"] in ("talk", "talk_two_speakers_A", "talk_two_speakers_B"):
            assert n == 1 and ratio > 0.5, (shot["id"], ratio, n)
        if shot["kind"] == "noface_music":
            assert n == 0, (shot["id"], ratio, n)
