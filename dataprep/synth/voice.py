"""A small formant "babble" synthesizer: speech-like sound whose loudness drives the mouth.

A glottal pulse train (pitch with declination and jitter) goes through a cascade of formant
resonators set per syllable to a vowel, under a syllable-rate amplitude envelope, with a short
noise burst for the consonant. Phrases of a few syllables are separated by pauses, so voice
activity detection has something to find. Each voice has its own pitch and formant scale, so a
speaker-embedding model can tell two voices apart. The same envelope, sampled per video frame and
weighted by how open each vowel is, is the mouth opening the face is drawn with.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

RATE = 16000

# Vowel formants (Hz, adult male averages) and how open the mouth is for each.
VOWELS = {
    "a": ((730, 1090, 2440), 1.0),
    "e": ((530, 1840, 2480), 0.7),
    "i": ((270, 2290, 3010), 0.4),
    "o": ((570, 840, 2410), 0.75),
    "u": ((300, 870, 2240), 0.45),
}
BANDWIDTHS = (80, 100, 140)


@dataclass(frozen=True)
class Voice:
    pitch: float = 120.0          # mean f0 in Hz
    formant_scale: float = 1.0    # ~1.0 male, ~1.17 female, vocal tract length
    breathiness: float = 0.04
    rate: float = 4.5             # syllables per second
    glottal_pole: float = 0.95    # spectral tilt of the source: higher = darker voice
    accent: tuple = (1.0,) * 10   # per-vowel F1, F2 factors (a, e, i, o, u): an own timbre


def random_voice(rng: np.random.Generator, index: int) -> Voice:
    """Alternate low and high voices so consecutive identities sound different."""
    high = index % 2 == 1
    return Voice(pitch=float(rng.uniform(215, 255) if high else rng.uniform(85, 110)),
                 formant_scale=float(rng.uniform(1.22, 1.3) if high else rng.uniform(0.88, 0.95)),
                 breathiness=float(rng.uniform(0.06, 0.1) if high else rng.uniform(0.01, 0.04)),
                 rate=float(rng.uniform(4.0, 5.2)),
                 glottal_pole=float(rng.uniform(0.88, 0.92) if high else rng.uniform(0.96, 0.975)),
                 accent=tuple(float(x) for x in rng.uniform(0.88, 1.12, 10)))


@dataclass
class Speech:
    audio: np.ndarray       # float32 mono at RATE
    mouth_open: np.ndarray  # (n_frames,) in [0, 1]
    speaking: np.ndarray    # (n_frames,) bool: inside a phrase


def _resonator(freq: float, bw: float, rate: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.exp(-np.pi * bw / rate)
    c = 2 * r * np.cos(2 * np.pi * freq / rate)
    return np.array([1 - c + r * r]), np.array([1.0, -c, r * r])  # unit gain at DC


def _syllable(rng: np.random.Generator, voice: Voice, n: int, vowel: str, f0: np.ndarray) -> np.ndarray:
    """One voiced syllable of n samples (before its envelope)."""
    phase = np.cumsum(f0 / RATE)
    pulses = np.diff(np.floor(phase), prepend=0.0)           # 1 at each glottal closure
    p = voice.glottal_pole
    src = lfilter([1.0], [1.0, -2 * p, p * p], pulses)        # glottal flow: a double pole
    src = np.diff(src, prepend=0.0)                           # lip radiation
    src = src / (np.abs(src).max() + 1e-9) + voice.breathiness * rng.standard_normal(n)
    out = src
    formants, _ = VOWELS[vowel]
    k = "aeiou".index(vowel)
    accent = (voice.accent[2 * k], voice.accent[2 * k + 1], 1.0)
    for f, bw, acc in zip(formants, BANDWIDTHS, accent):
        b, a = _resonator(f * voice.formant_scale * acc, bw, RATE)
        out = lfilter(b, a, out)
    return out / (np.abs(out).max() + 1e-9)


def synth_speech(rng: np.random.Generator, voice: Voice, duration: float, fps: float,
                 lead_in: float = 0.25, tail: float = 0.2) -> Speech:
    """Babble filling `duration` seconds (silent lead-in and tail), with its mouth track."""
    n = int(round(duration * RATE))
    n_frames = int(round(duration * fps))
    audio = np.zeros(n, np.float64)
    env_full = np.zeros(n, np.float64)     # amplitude envelope x vowel openness
    speaking = np.zeros(n, bool)
    t = int(lead_in * RATE)
    end = n - int(tail * RATE)
    while t < end - int(0.3 * RATE):
        n_syll = int(rng.integers(4, 11))
        phrase_start = t
        for k in range(n_syll):
            dur = rng.uniform(0.75, 1.3) / voice.rate
            m = int(dur * RATE)
            if t + m > end:
                break
            vowel = "aeiou"[int(rng.integers(0, 5))]
            # Pitch: declination over the phrase, a little jitter and vibrato.
            pos = (t - phrase_start) / RATE
            f0 = voice.pitch * (1.08 - 0.05 * pos) * (1 + 0.02 * rng.standard_normal())
            f0 = f0 * (1 + 0.015 * np.sin(2 * np.pi * 5.5 * np.arange(m) / RATE))
            voiced = _syllable(rng, voice, m, vowel, f0)
            # Envelope: fast attack, slower decay, a dip between syllables.
            x = np.linspace(0, 1, m)
            env = np.sin(np.pi * np.clip(x / 0.85, 0, 1)) ** 1.5 * rng.uniform(0.6, 1.0)
            # Consonant onset: a short band of noise before the vowel.
            burst = np.zeros(m)
            nb = int(0.03 * RATE)
            burst[:nb] = rng.standard_normal(nb) * np.hanning(nb) * 0.25
            audio[t:t + m] += voiced * env + burst
            env_full[t:t + m] = np.maximum(env_full[t:t + m], env * VOWELS[vowel][1])
            t += m
        speaking[phrase_start:t] = True
        t += int(rng.uniform(0.25, 0.6) * RATE)   # pause between phrases
    audio = 0.3 * audio / (np.abs(audio).max() + 1e-9)
    hop = RATE / fps
    mouth = np.array([env_full[int(i * hop):int((i + 1) * hop)].mean() if int(i * hop) < n else 0.0
                      for i in range(n_frames)])
    speak_f = np.array([speaking[int(i * hop):int((i + 1) * hop)].mean() > 0.5 if int(i * hop) < n else False
                        for i in range(n_frames)])
    return Speech(audio.astype(np.float32), np.clip(mouth, 0, 1).astype(np.float32), speak_f)


def synth_music(rng: np.random.Generator, duration: float) -> np.ndarray:
    """Plucked chords (no speech): for the shot with no face."""
    n = int(round(duration * RATE))
    out = np.zeros(n)
    t = np.arange(n) / RATE
    roots = [261.6, 220.0, 174.6, 196.0]          # C, A, F, G
    note_len = 0.25
    for k in range(int(duration / note_len)):
        root = roots[(k // 4) % 4]
        f = root * (1, 1.26, 1.5, 2.0)[k % 4]
        i0 = int(k * note_len * RATE)
        m = min(n - i0, int(0.8 * RATE))
        tt = t[:m]
        tone = sum(np.sin(2 * np.pi * f * h * tt) / h ** 1.5 for h in (1, 2, 3, 4))
        out[i0:i0 + m] += tone * np.exp(-tt * 5.0)
    return (0.2 * out / (np.abs(out).max() + 1e-9)).astype(np.float32)


def room_tone(rng: np.random.Generator, n: int, level: float = 0.002) -> np.ndarray:
    """Quiet background noise, so no stretch is digitally silent."""
    return (level * rng.standard_normal(n)).astype(np.float32)
