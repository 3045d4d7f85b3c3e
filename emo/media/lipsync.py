"""Audio-video synchronisation measured from face landmarks and the speech envelope.

Shared by dataprep (reject or correct out-of-sync clips) and eval (sync of generated videos),
so everything here takes arrays, not files.

Convention: ``offset > 0`` means the AUDIO IS LATE relative to the video by ``offset`` frames,
i.e. the sound made with the mouth shape of frame t is heard at frame t + offset. The
correlation curve holds, for each lag k in ``-max_offset..max_offset``,
``corr(mouth[t], envelope[t + k])``; the offset is its arg-max. ``emo.media.audio.shift_audio``
with ``-offset`` frames undoes it.

Why it works without a trained SyncNet: the inner-lip gap and the jaw drop rise and fall with
syllables (3-6 Hz), and so does the log energy of speech. Both signals are high-passed (a ~1-s
moving average removed) so that slow trends (a head moving closer, a louder passage) do not
dominate, then correlated. Confidence is the peak of the curve minus its median: a face that is
not the one speaking (or music, or silence) gives a flat curve and a confidence near 0.

How much to trust an offset: speech is roughly periodic (syllables every 150-300 ms), so the
curve has secondary peaks a few frames from the true one and one of them can win on a short clip.
Two measures come with every result: ``margin``, how far the best peak stands above the best
DISTINCT other peak (a local maximum more than ``PEAK_EXCLUSION`` frames away), in correlation
units; ``stability``, the fraction of leave-one-second-out re-measurements (each second of the
clip masked in turn) whose offset stays within one frame, i.e. whether any single second of
footage decides the answer; and ``quarters``, the same with each quarter of the clip masked in
turn (on an expressive speaker one stretch of several seconds can read 12-14 frames off while
the rest reads true). dataprep acts on an offset only when all three are high.

Limits (measured on the shared clips): a low confidence is good evidence of no sync, but on
clips of 4-6 s a face paired with someone else's speech reached 0.2-0.5 by chance (matched clips:
0.16-0.52), so a moderate confidence on a short clip is no proof of sync. The measure tracks a
shift of a clip's audio closely (the offset moves with the shift), but its reading of an
unshifted clip varies by +-2 frames between people (mouth movement leads the sound it makes by
a person-dependent amount), so it cannot tell a 2-frame offset from none.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .audio import frame_envelope
from .face import CHIN, LEFT_EYE_OUTER, LOWER_INNER_LIP, RIGHT_EYE_OUTER, UPPER_INNER_LIP

ENVELOPE_FLOOR = 6.0  # natural-log units below the peak (~52 dB)
NOSE_BOTTOM = 2  # MediaPipe face mesh: the point under the nose, above the upper lip
UPPER_OUTER_LIP, LOWER_OUTER_LIP = 0, 17  # MediaPipe face mesh: outer lip contour, top and bottom
PEAK_EXCLUSION = 2  # frames: local maxima closer than this to the best peak belong to it


@dataclass
class SyncResult:
    offset: int              # frames; > 0: audio late
    confidence: float        # peak minus median of the curve; 0.0 when nothing can be measured
    curve: np.ndarray        # (2 * max_offset + 1,) mean correlation per lag (NaN: not measurable)
    feature_offsets: tuple = ()  # arg-max of each feature's own curve
    margin: float = float("nan")     # best peak minus the best distinct other peak (correlation units)
    stability: float = float("nan")  # fraction of leave-one-second-out offsets within one frame
    quarters: float = float("nan")   # fraction of leave-one-quarter-out offsets within one frame

    @property
    def lags(self) -> np.ndarray:
        m = (len(self.curve) - 1) // 2
        return np.arange(-m, m + 1)


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # 3-D distance: MediaPipe's z is in the same pixel-like units as x, so head turns and nods
    # change it less than a 2-D distance.
    return np.linalg.norm(a - b, axis=-1)


def mouth_features(landmarks: np.ndarray) -> np.ndarray:
    """(T, 3) [inner-lip gap, jaw drop (under-nose to chin), outer-lip height], each divided by the
    outer-eye-corner distance so that they do not depend on the face's size in the frame. NaN
    where no face. (MediaPipe's mouth blendshapes, e.g. jawOpen, were tried as further features
    and made the offset of one shared clip jump by 11 frames: they are not used.)"""
    lm = np.asarray(landmarks, np.float64)
    if lm.ndim != 3 or lm.shape[1] < 478 or lm.shape[2] < 2:
        raise ValueError(f"landmarks must be (T, 478, 2 or 3), got {lm.shape}")
    eyes = _dist(lm[:, LEFT_EYE_OUTER], lm[:, RIGHT_EYE_OUTER])
    eyes = np.where(eyes > 1e-6, eyes, np.nan)
    lip = _dist(lm[:, UPPER_INNER_LIP], lm[:, LOWER_INNER_LIP]) / eyes
    jaw = _dist(lm[:, NOSE_BOTTOM], lm[:, CHIN]) / eyes
    outer = _dist(lm[:, UPPER_OUTER_LIP], lm[:, LOWER_OUTER_LIP]) / eyes
    return np.stack([lip, jaw, outer], 1)


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """(T,) inner-lip gap (landmarks 13-14) over the outer-eye-corner distance; NaN where no face."""
    return mouth_features(landmarks)[:, 0]


def highpass(x: np.ndarray, width: int) -> np.ndarray:
    """x minus its centred moving average over `width` samples, ignoring NaN (kept as NaN)."""
    x = np.asarray(x, np.float64)
    valid = np.isfinite(x)
    filled = np.where(valid, x, 0.0)
    kernel = np.ones(max(1, int(width)))
    num = np.convolve(filled, kernel, mode="same")
    den = np.convolve(valid.astype(np.float64), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        trend = num / den
    return np.where(valid, x - trend, np.nan)


def lag_correlation(a: np.ndarray, b: np.ndarray, max_lag: int, min_pairs: int) -> np.ndarray:
    """Pearson r of a[t] with b[t + k] for k in -max_lag..max_lag over the pairs where both are
    finite; NaN where fewer than `min_pairs` pairs or a constant side."""
    n = len(a)
    out = np.full(2 * max_lag + 1, np.nan)
    for i, k in enumerate(range(-max_lag, max_lag + 1)):
        x = a[max(0, -k):n - max(0, k)]      # a[t] ...
        y = b[max(0, k):n + min(0, k)]       # ... paired with b[t + k]
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() < min_pairs:
            continue
        xs, ys = x[ok] - x[ok].mean(), y[ok] - y[ok].mean()
        den = np.sqrt((xs ** 2).sum() * (ys ** 2).sum())
        if den > 1e-12:
            out[i] = float((xs * ys).sum() / den)
    return out


def speech_envelope(audio: np.ndarray, rate: int, fps: float, n_frames: int) -> np.ndarray:
    """Log RMS per video frame of the audio band-passed to the speech band (100 Hz - 4 kHz),
    which keeps rumble and hiss from driving the envelope."""
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono (n,), got {audio.shape}")
    if len(audio) > rate // 10:
        from scipy.signal import butter, sosfiltfilt
        high = min(4000.0, 0.45 * rate)
        sos = butter(4, [100.0, high], btype="bandpass", fs=rate, output="sos")
        audio = sosfiltfilt(sos, audio).astype(np.float32)
    env = frame_envelope(audio, rate, fps, n_frames).astype(np.float64)
    # Floor ~50 dB under the loudest frame: digital silence (log of ~0) would otherwise make
    # steps that the high-pass turns into the strongest "events" of the signal.
    if np.isfinite(env).any():
        env = np.maximum(env, env.max() - ENVELOPE_FLOOR)
    # Frames with no audio at all (past the end of a short track) carry no information.
    covered = (np.arange(n_frames) + 0.5) * rate / fps < len(audio)
    return np.where(covered, env, np.nan)


def distinct_peak_margin(curve: np.ndarray, exclusion: int = PEAK_EXCLUSION) -> float:
    """Height of the curve's maximum over its best local maximum more than `exclusion` lags away
    (the curve's minimum when there is none); NaN for an empty curve."""
    c = np.asarray(curve, np.float64)
    if not np.isfinite(c).any():
        return float("nan")
    best = int(np.nanargmax(c))
    filled = np.where(np.isfinite(c), c, -np.inf)
    others = [filled[i] for i in range(len(c)) if abs(i - best) > exclusion and np.isfinite(c[i])
              and (i == 0 or filled[i] >= filled[i - 1]) and (i == len(c) - 1 or filled[i] >= filled[i + 1])]
    second = max(others) if others else float(np.nanmin(c))
    return float(c[best] - second)


def _curves(mouth: np.ndarray, env_hp: np.ndarray, width: int, max_offset: int, min_pairs: int):
    return [lag_correlation(highpass(mouth[:, j], width), env_hp, max_offset, min_pairs)
            for j in range(mouth.shape[1])]


def _mean_curve(curves: list) -> np.ndarray | None:
    if not curves or np.all(np.isnan(np.stack(curves))):
        return None
    stacked = np.stack(curves)
    counts = np.isfinite(stacked).sum(0)
    with np.errstate(invalid="ignore"):
        return np.where(counts > 0, np.nansum(stacked, 0) / np.maximum(counts, 1), np.nan)


def measure_offset(mouth: np.ndarray, audio: np.ndarray, rate: int, fps: float,
                   max_offset: int = 15, highpass_s: float = 0.75, jackknife_s: float = 0.0) -> SyncResult:
    """Audio offset (frames, > 0: audio late) and confidence from mouth opening and speech.

    ``mouth``: (T,) or (T, K) per-frame mouth features (e.g. ``mouth_features``), NaN where no
    face; several features are correlated separately and their curves averaged. ``audio``: mono
    samples covering the same span as the T frames. With nothing to measure (silent or constant
    audio, a still mouth, too few frames) the confidence is 0.0 and the offset 0. ``margin`` and
    ``stability``/``quarters`` (leave-one-`jackknife_s`-out and leave-one-quarter-out; 0, the default,
    skips them: they cost ~T / fps + 4 more curves) say how unambiguous the offset is.
    """
    mouth = np.asarray(mouth, np.float64)
    if mouth.ndim == 1:
        mouth = mouth[:, None]
    if mouth.ndim != 2:
        raise ValueError(f"mouth must be (T,) or (T, K), got {mouth.shape}")
    if fps <= 0 or rate <= 0 or max_offset < 0:
        raise ValueError("fps and rate must be > 0 and max_offset >= 0")
    n = len(mouth)
    width = max(3, int(round(highpass_s * fps)))
    # At least ~2 s of paired frames: fewer give correlations that peak by chance.
    min_pairs = max(int(2 * fps), 10)
    env = highpass(speech_envelope(audio, rate, fps, n), width) if n else np.zeros(0)
    curves = _curves(mouth, env, width, max_offset, min_pairs) if n else []
    curve = _mean_curve(curves)
    if curve is None:
        return SyncResult(0, 0.0, np.full(2 * max_offset + 1, np.nan), margin=0.0, stability=0.0)
    per_feature = tuple(int(np.nanargmax(c)) - max_offset for c in curves if np.isfinite(c).any())
    best = int(np.nanargmax(curve))
    confidence = float(curve[best] - np.nanmedian(curve))
    offset = best - max_offset

    def leave_out_agreement(block: int) -> float:
        """Fraction of re-measurements with each `block` frames masked in turn that stay within a frame."""
        agree = []
        for b0 in range(0, n - block // 2, block):
            masked = mouth.copy()
            masked[b0:b0 + block] = np.nan
            c = _mean_curve(_curves(masked, env, width, max_offset, min_pairs))
            agree.append(c is not None and abs(int(np.nanargmax(c)) - max_offset - offset) <= 1)
        return float(np.mean(agree)) if agree else float("nan")

    block = int(round(jackknife_s * fps))
    stability = leave_out_agreement(block) if block > 0 else float("nan")
    quarters = leave_out_agreement(int(np.ceil(n / 4))) if block > 0 and n >= 4 else float("nan")
    return SyncResult(offset, confidence, curve, per_feature, distinct_peak_margin(curve), stability, quarters)
