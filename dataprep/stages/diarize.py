"""Speaker diarization: who speaks when, once per source video, on its whole audio.

Two backends behind one call, ``diarize(audio, rate, cfg) -> list[Turn]``:

- ``offline`` (default) uses only weights that ship inside their wheels, so it runs with no
  network: silero-vad finds speech, resemblyzer's VoiceEncoder embeds sliding windows inside the
  speech, and agglomerative clustering with a cosine-distance threshold groups the windows into
  speakers (the number of speakers is not given). Short turns and tiny clusters are then merged
  into their neighbours, because a spurious 0.3-s "speaker" would wrongly reject a clip as
  "multiple speakers".
- ``pyannote`` runs a pyannote.audio pipeline (a local folder / config.yaml, or a hub id with a
  token read from an environment variable). pyannote.audio is the optional extra
  ``emo-toolkit[pyannote]``.

The clip-level question the pipeline asks afterwards is ``speech_stats(turns, start, end)``.
"""
from __future__ import annotations

import numpy as np

from emo.media.audio import SPEECH_RATE as VAD_RATE  # silero-vad and resemblyzer both expect 16 kHz

from ..config import DiarizeConfig
from .common import Turn

__all__ = ["DiarizeConfig", "Turn", "diarize", "speech_stats"]


def diarize(audio: np.ndarray, rate: int, cfg: DiarizeConfig | None = None) -> list[Turn]:
    """Speaker turns of a mono signal, sorted by start time. Silence gives ``[]``."""
    cfg = cfg or DiarizeConfig()
    audio = _as_mono_16k(audio, rate)
    if cfg.backend == "offline":
        return _diarize_offline(audio, cfg)
    if cfg.backend == "pyannote":
        from .diarize_pyannote import diarize_pyannote
        return diarize_pyannote(audio, cfg)
    raise ValueError(f"unknown diarization backend {cfg.backend!r} (expected 'offline' or 'pyannote')")


def speech_stats(turns: list[Turn], start: float, end: float,
                 cfg: DiarizeConfig | None = None) -> tuple[float, int, str | None]:
    """(speech_ratio, n_speakers, main_speaker) of the window [start, end) in seconds.

    speech_ratio is the fraction of the window covered by any turn (overlaps counted once);
    a speaker counts only when it speaks at least ``min_speaker_s`` seconds and at least
    ``min_speaker_frac`` of the window's speech; main_speaker speaks the most (None: no speech).
    """
    cfg = cfg or DiarizeConfig()
    if not end > start:
        raise ValueError(f"empty window [{start}, {end})")
    per_speaker: dict[str, float] = {}
    pieces = []
    for t in turns:
        s, e = max(t.start, start), min(t.end, end)
        if e > s:
            per_speaker[t.speaker] = per_speaker.get(t.speaker, 0.0) + (e - s)
            pieces.append((s, e))
    speech = _union_length(pieces)
    if not per_speaker:
        return 0.0, 0, None
    main = max(per_speaker, key=per_speaker.get)
    n = sum(1 for v in per_speaker.values()
            if v >= cfg.min_speaker_s and v >= cfg.min_speaker_frac * speech)
    return speech / (end - start), n, main


def _union_length(pieces: list[tuple[float, float]]) -> float:
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(pieces):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


def _as_mono_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"diarize expects mono audio of shape (n,), got {audio.shape}")
    if rate <= 0:
        raise ValueError(f"bad sample rate {rate}")
    audio = audio.astype(np.float32)
    if not np.all(np.isfinite(audio)):
        raise ValueError("audio contains NaN or inf")
    if rate != VAD_RATE:
        from math import gcd

        from scipy.signal import resample_poly
        g = gcd(int(rate), VAD_RATE)
        audio = resample_poly(audio, VAD_RATE // g, int(rate) // g).astype(np.float32)
    return audio


# ---------------------------------------------------------------- offline backend

_MODELS: dict[str, object] = {}


def _silero():
    if "vad" not in _MODELS:
        from silero_vad import load_silero_vad
        _MODELS["vad"] = load_silero_vad()
    return _MODELS["vad"]


def _voice_encoder():
    if "encoder" not in _MODELS:
        from resemblyzer import VoiceEncoder  # needs pkg_resources: setuptools<81
        _MODELS["encoder"] = VoiceEncoder("cpu", verbose=False)
    return _MODELS["encoder"]


def speech_segments(audio: np.ndarray, cfg: DiarizeConfig) -> list[tuple[float, float]]:
    """Speech regions (seconds) found by silero-vad in 16-kHz mono audio."""
    import torch
    from silero_vad import get_speech_timestamps

    if len(audio) < VAD_RATE * cfg.min_speech_s:
        return []
    stamps = get_speech_timestamps(
        torch.from_numpy(np.ascontiguousarray(audio)), _silero(), threshold=cfg.vad_threshold,
        sampling_rate=VAD_RATE, min_speech_duration_ms=int(cfg.min_speech_s * 1000),
        min_silence_duration_ms=int(cfg.min_silence_s * 1000),
        speech_pad_ms=int(cfg.speech_pad_s * 1000))
    return [(s["start"] / VAD_RATE, s["end"] / VAD_RATE) for s in stamps]


def _windows(segments, cfg: DiarizeConfig) -> list[tuple[float, float]]:
    """Sliding windows inside each speech segment; the last one is aligned to the segment's end."""
    out = []
    for s, e in segments:
        length = e - s
        if length < cfg.min_window_s:
            continue
        if length <= cfg.window_s:
            out.append((s, e))
            continue
        starts = list(np.arange(s, e - cfg.window_s, cfg.hop_s)) + [e - cfg.window_s]
        out += [(float(a), float(a) + cfg.window_s) for a in starts]
    return out


def embed_windows(audio: np.ndarray, windows: list[tuple[float, float]]) -> np.ndarray:
    """L2-normalised resemblyzer embeddings (n, 256) of windows (seconds) of 16-kHz audio."""
    import torch
    from resemblyzer import audio as rz_audio
    from resemblyzer import hparams

    encoder = _voice_encoder()
    # Same loudness normalisation as resemblyzer's preprocess_wav, without its silence trimming
    # (which would move the time axis).
    wav = rz_audio.normalize_volume(audio, hparams.audio_norm_target_dBFS, increase_only=True)
    mel = rz_audio.wav_to_mel_spectrogram(wav)                     # (frames, 40), 10-ms hop
    per_s = 1000 / hparams.mel_window_step
    slices = [(int(round(s * per_s)), max(int(round(e * per_s)), int(round(s * per_s)) + 1))
              for s, e in windows]
    out = np.zeros((len(windows), hparams.model_embedding_size), np.float32)
    by_len: dict[int, list[int]] = {}
    for i, (a, b) in enumerate(slices):
        by_len.setdefault(min(b, len(mel)) - a, []).append(i)
    with torch.inference_mode():
        for length, idx in by_len.items():  # the LSTM wants equal lengths within a batch
            batch = np.stack([mel[slices[i][0]:slices[i][0] + length] for i in idx])
            out[idx] = encoder(torch.from_numpy(batch).to(encoder.device)).cpu().numpy()
    return out


def cluster_embeddings(emb: np.ndarray, threshold: float) -> np.ndarray:
    """Cluster labels 0..k-1 by average-linkage agglomeration under a cosine-distance threshold."""
    if len(emb) == 0:
        return np.zeros(0, int)
    if len(emb) == 1:
        return np.zeros(1, int)
    from sklearn.cluster import AgglomerativeClustering
    model = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average",
                                    distance_threshold=threshold)
    return model.fit_predict(emb)


def _diarize_offline(audio: np.ndarray, cfg: DiarizeConfig) -> list[Turn]:
    segments = speech_segments(audio, cfg)
    if not segments:
        return []
    windows = _windows(segments, cfg)
    if not windows:  # only very short speech: one anonymous speaker
        return _smooth([Turn(s, e, "0") for s, e in segments], cfg)
    raw = embed_windows(audio, windows)
    emb = _smooth_embeddings(raw, windows, cfg.embed_smoothing)
    labels = cluster_embeddings(emb, cfg.cluster_threshold)
    labels = _merge_small_clusters(emb, labels, windows, cfg.min_cluster_s, cfg.hop_s)
    if cfg.relabel_windows:
        labels = _relabel_by_centroid(raw, labels)
    anchors = np.array([s + cfg.window_anchor * (e - s) for s, e in windows])
    starts, ends = np.array([w[0] for w in windows]), np.array([w[1] for w in windows])
    turns = []
    step = cfg.resolution_s
    for s, e in segments:
        # Each frame takes the label of the window of its own segment with the nearest anchor;
        # a segment too short for a window borrows from the nearest window anywhere.
        own = np.flatnonzero((starts >= s - 1e-6) & (ends <= e + 1e-6))
        own = own if len(own) else np.arange(len(windows))
        n = max(1, int(round((e - s) / step)))
        times = s + (np.arange(n) + 0.5) * (e - s) / n
        frame_labels = labels[own[np.abs(times[:, None] - anchors[own][None, :]).argmin(1)]]
        change = np.flatnonzero(np.diff(frame_labels)) + 1
        bounds = [0, *change.tolist(), n]
        for a, b in zip(bounds[:-1], bounds[1:]):
            turns.append(Turn(s + a * (e - s) / n, s + b * (e - s) / n, str(frame_labels[a])))
    return _smooth(turns, cfg)


def _smooth_embeddings(emb: np.ndarray, windows, radius: int) -> np.ndarray:
    """Average each window's embedding with its `radius` neighbours on each side within the same
    stretch of speech (windows that overlap or touch): a speaker rarely changes within ~1 s,
    and single-window embeddings are noisy."""
    if radius <= 0 or len(emb) < 2:
        return emb
    out = np.empty_like(emb)
    for i in range(len(emb)):
        lo = i
        while lo > 0 and i - lo < radius and windows[lo - 1][1] >= windows[lo][0]:
            lo -= 1
        hi = i
        while hi < len(emb) - 1 and hi - i < radius and windows[hi + 1][0] <= windows[hi][1]:
            hi += 1
        m = emb[lo:hi + 1].mean(0)
        out[i] = m / max(np.linalg.norm(m), 1e-12)
    return out


def _relabel_by_centroid(raw: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each window to the nearest cluster centroid by its own (unsmoothed) embedding: smoothing
    finds the speakers, but blurs the change points by the smoothing radius."""
    ids = np.unique(labels)
    if len(ids) < 2:
        return labels
    cent = np.stack([raw[labels == k].mean(0) for k in ids])
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    return ids[(raw @ cent.T).argmax(1)]


def _merge_small_clusters(emb, labels, windows, min_cluster_s: float, hop_s: float) -> np.ndarray:
    """Give the windows of clusters with little speech to the nearest larger cluster (centroids)."""
    labels = labels.copy()
    # Windows overlap: each one stands for about one hop of new speech.
    hop_weight = np.array([min(hop_s, e - s) for s, e in windows])
    while True:
        ids = np.unique(labels)
        if len(ids) < 2:
            return labels
        mass = {k: hop_weight[labels == k].sum() for k in ids}
        small = min(ids, key=mass.get)
        if mass[small] >= min_cluster_s:
            return labels
        centroids = {k: emb[labels == k].mean(0) for k in ids}
        sims = {k: float(np.dot(centroids[small], c) / (np.linalg.norm(centroids[small]) * np.linalg.norm(c)))
                for k, c in centroids.items() if k != small}
        labels[labels == small] = max(sims, key=sims.get)


def _smooth(turns: list[Turn], cfg: DiarizeConfig) -> list[Turn]:
    """Relabel short turns that touch a neighbour, merge touching same-speaker turns, rename
    speakers by order of first appearance (spk0, spk1, ...)."""
    turns = sorted(turns, key=lambda t: t.start)
    touch = 1e-6 + cfg.resolution_s
    changed = True
    while changed:
        changed = False
        order = sorted(range(len(turns)), key=lambda i: turns[i].duration)
        for i in order:
            t = turns[i]
            if t.duration >= cfg.min_turn_s:
                break
            nbrs = [j for j in (i - 1, i + 1) if 0 <= j < len(turns)
                    and turns[j].speaker != t.speaker
                    and (abs(turns[j].end - t.start) < touch or abs(turns[j].start - t.end) < touch)]
            if nbrs:
                j = max(nbrs, key=lambda k: turns[k].duration)
                turns[i] = Turn(t.start, t.end, turns[j].speaker)
                turns = _merge_touching(turns, touch)
                changed = True
                break
    names: dict[str, str] = {}
    for t in turns:
        names.setdefault(t.speaker, f"spk{len(names)}")
    return [Turn(round(t.start, 3), round(t.end, 3), names[t.speaker]) for t in turns]


def _merge_touching(turns: list[Turn], touch: float) -> list[Turn]:
    out: list[Turn] = []
    for t in turns:
        if out and out[-1].speaker == t.speaker and t.start - out[-1].end < touch:
            out[-1] = Turn(out[-1].start, max(out[-1].end, t.end), t.speaker)
        else:
            out.append(t)
    return out
