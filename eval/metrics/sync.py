"""Sync-C / Sync-D with SyncNet, following joonson/syncnet_python (SyncNetInstance.evaluate).

Protocol, step by step (what the released code does, and where we differ):
1. Face track -> 224 x 224 crops as run_pipeline.crop_video does: box centre and half-size
   median-filtered over the track (kernel 13), crop [y - s, y + s(1 + 2*0.4)] x
   [x - s(1 + 0.4), x + s(1 + 0.4)] of the frame padded with grey 110, resized (bilinear), BGR.
   Difference: the boxes come from MediaPipe's landmarks (cached per sample) instead of S3FD.
2. Video at 25 fps (the model's rate): other rates are resampled by nearest frame in time.
3. Audio 16 kHz int16 -> python_speech_features.mfcc defaults (13 x 100 per second).
4. Windows: for video frame i < min(T, floor(len(audio) / 640)) - 5, lip input = frames i..i+4,
   audio input = MFCC columns 4i..4i+19; both through SyncNet.
5. For every i, distances from video embedding i to audio embeddings i - 15 .. i + 15 (zero
   padding beyond the ends, as released), averaged over i: `mdist` (31 values).
   Sync-D = min(mdist); Sync-C = median(mdist) - min(mdist); offset = 15 - argmin.
Offsets are reported in this project's convention (+ = audio late), i.e. the negated
syncnet_python AV offset; their absolute value is `sync_offset_abs`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .base import ClipSample, Metric, device_of, sample_landmarks

SYNCNET_FPS = 25.0
SYNCNET_RATE = 16000
CROP_SCALE = 0.4
CROP_SIZE = 224
SMOOTH_KERNEL = 13
VSHIFT = 15


@dataclass
class SyncScores:
    offset: int            # frames, + = audio late (project convention)
    confidence: float      # Sync-C
    min_dist: float        # Sync-D
    mean_dists: np.ndarray  # (2 * vshift + 1,) mean distance per candidate shift


def sync_scores(video_emb: torch.Tensor, audio_emb: torch.Tensor, vshift: int = VSHIFT) -> SyncScores:
    """The offset/confidence maths of syncnet_python (calc_pdist + evaluate) on embeddings."""
    video_emb, audio_emb = torch.as_tensor(video_emb).float(), torch.as_tensor(audio_emb).float()
    if len(video_emb) != len(audio_emb) or len(video_emb) == 0:
        raise ValueError(f"need as many audio as video embeddings (> 0), got {len(video_emb)}, {len(audio_emb)}")
    win = 2 * vshift + 1
    padded = F.pad(audio_emb, (0, 0, vshift, vshift))
    dists = torch.stack([F.pairwise_distance(video_emb[[i]].repeat(win, 1), padded[i:i + win])
                         for i in range(len(video_emb))], 1)           # (win, n)
    mdist = dists.mean(1)
    minval, minidx = torch.min(mdist, 0)
    syncnet_offset = vshift - int(minidx)        # syncnet_python's sign: + = audio early
    return SyncScores(offset=-syncnet_offset, confidence=float(torch.median(mdist) - minval),
                      min_dist=float(minval), mean_dists=mdist.numpy())


def resample_indices(n_frames: int, fps: float, target_fps: float = SYNCNET_FPS) -> np.ndarray:
    """Nearest source frame for each target frame time (identity when fps == target)."""
    n_out = int(np.floor(n_frames / fps * target_fps + 1e-6))
    return np.clip(np.round(np.arange(n_out) * fps / target_fps).astype(int), 0, n_frames - 1)


def _median_filter(x: np.ndarray, k: int) -> np.ndarray:
    from scipy.signal import medfilt
    return medfilt(x, kernel_size=k) if len(x) >= k else x


def face_crops(frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) RGB + (T, 4) boxes (NaN where no face) -> (T, 224, 224, 3) BGR float crops."""
    found = np.isfinite(boxes[:, 0])
    if not found.any():
        raise ValueError("no face in any frame")
    t = np.arange(len(boxes))
    boxes = np.stack([np.interp(t, t[found], boxes[found, j]) for j in range(4)], 1)
    size = _median_filter(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / 2, SMOOTH_KERNEL)
    cx = _median_filter((boxes[:, 0] + boxes[:, 2]) / 2, SMOOTH_KERNEL)
    cy = _median_filter((boxes[:, 1] + boxes[:, 3]) / 2, SMOOTH_KERNEL)
    out = np.empty((len(frames), CROP_SIZE, CROP_SIZE, 3), np.float32)
    for i, frame in enumerate(frames):
        bs = float(size[i])
        pad = int(bs * (1 + 2 * CROP_SCALE))
        padded = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), constant_values=110)
        my, mx = cy[i] + pad, cx[i] + pad
        crop = padded[int(my - bs):int(my + bs * (1 + 2 * CROP_SCALE)),
                      int(mx - bs * (1 + CROP_SCALE)):int(mx + bs * (1 + CROP_SCALE))]
        tens = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float()
        resized = F.interpolate(tens, size=(CROP_SIZE, CROP_SIZE), mode="bilinear", align_corners=False)
        out[i] = resized[0].permute(1, 2, 0).numpy()[..., ::-1]       # RGB -> BGR (cv2 order)
    return out


def mfcc_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    """(13, N) MFCCs exactly as syncnet_python computes them (int16 samples, library defaults)."""
    import python_speech_features
    audio = np.asarray(audio, np.float32)
    if rate != SYNCNET_RATE:
        from math import gcd
        from scipy.signal import resample_poly
        g = gcd(int(rate), SYNCNET_RATE)
        audio = resample_poly(audio, SYNCNET_RATE // g, int(rate) // g).astype(np.float32)
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    return np.asarray(python_speech_features.mfcc(pcm, SYNCNET_RATE)).T


def syncnet_embeddings(net, crops_bgr: np.ndarray, mfcc: np.ndarray, n_audio_samples: int | None = None,
                       batch: int = 20):
    """Embeddings of the 5-frame windows; the window count is syncnet_python's
    min(video frames, floor(audio samples / 640)) - 5 (from the MFCC count when samples are not given)."""
    audio_frames = n_audio_samples // 640 if n_audio_samples is not None else mfcc.shape[1] // 4
    n = min(len(crops_bgr), audio_frames) - 5
    if n > 0 and 4 * (n - 1) + 20 > mfcc.shape[1]:
        raise ValueError(f"{mfcc.shape[1]} MFCC frames do not cover {n} windows")
    if n <= 0:
        raise ValueError("clip too short for SyncNet (needs more than 5 frames of video and audio)")
    video = torch.from_numpy(np.ascontiguousarray(crops_bgr)).permute(3, 0, 1, 2)   # (3, T, H, W)
    cc = torch.from_numpy(mfcc.astype(np.float32))
    v_out, a_out, dev = [], [], device_of(net)
    with torch.no_grad():
        for i in range(0, n, batch):
            idx = range(i, min(n, i + batch))
            v_out.append(net.forward_lip(torch.stack([video[:, j:j + 5] for j in idx]).to(dev)).cpu())
            a_out.append(net.forward_aud(torch.stack([cc[None, :, 4 * j:4 * j + 20] for j in idx]).to(dev)).cpu())
    return torch.cat(v_out), torch.cat(a_out)


def syncnet_result(sample: ClipSample, net, which: str = "generated") -> SyncScores:
    key = ("syncnet", which)
    if key not in sample.cache:
        frames = getattr(sample, which)
        idx = resample_indices(len(frames), sample.fps)
        boxes = sample_landmarks(sample, which).boxes
        crops = face_crops(frames[idx], boxes[idx])
        n_samples = int(len(sample.audio) * SYNCNET_RATE / sample.audio_rate)
        v, a = syncnet_embeddings(net, crops, mfcc_16k(sample.audio, sample.audio_rate), n_samples)
        sample.cache[key] = sync_scores(v, a)
    return sample.cache[key]


class _SyncNetMetric(Metric):
    weights = ("syncnet",)
    needs_mediapipe = True

    def _scores(self, sample: ClipSample) -> SyncScores:
        self.require_available()
        from eval.networks import load_network
        return syncnet_result(sample, load_network("syncnet", self.weights_dir).to(self.device))


class SyncC(_SyncNetMetric):
    name = "sync_c"
    direction = "higher"
    directions = {"sync_c": "higher", "sync_offset_abs": "lower"}
    description = "SyncNet confidence (median - min mean distance over offsets -15..15), syncnet_python protocol"

    def score_clip(self, sample: ClipSample) -> dict:
        s = self._scores(sample)
        return {"sync_c": s.confidence, "sync_offset_abs": float(abs(s.offset))}


class SyncD(_SyncNetMetric):
    name = "sync_d"
    direction = "lower"
    description = "SyncNet minimum mean embedding distance over offsets -15..15, syncnet_python protocol"

    def score_clip(self, sample: ClipSample) -> float:
        return self._scores(sample).min_dist
