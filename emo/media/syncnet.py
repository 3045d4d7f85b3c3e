"""SyncNet (Chung & Zisserman 2016) and the syncnet_python protocol that turns a face track and its
audio into an audio-video offset and a confidence. One implementation serves both evaluation's
Sync-C/D (`eval.metrics.sync`) and dataprep's SyncNet sync backend.

The network, as released in joonson/syncnet_python (`syncnet_v2.model`). Key names follow syncnet_python's `SyncNetModel.S`: four `nn.Sequential`s, `netcnnaud` (audio
CNN over a 13 x 20 MFCC window), `netfcaud`, `netcnnlip` (3D CNN over 5 consecutive frames of a
224 x 224 face crop, in OpenCV's BGR channel order) and `netfclip`. Indices inside each Sequential count ReLUs and pools,
as in the original (`netcnnaud.0.weight`, `netcnnaud.1.running_mean`, `netfcaud.3.weight`,
`netcnnlip.24.weight`...), so `syncnet_v2.model` loads with `load_state_dict(strict=True)`.

Input conventions of the released model (kept by the protocol below): lip input is
(N, 3, 5, 224, 224) float BGR in 0..255, unnormalised; audio input is (N, 1, 13, 20) MFCCs from
python_speech_features with its defaults, 100 MFCC frames per second, 4 per video frame at 25 fps.

The protocol, step by step (joonson/syncnet_python, SyncNetInstance.evaluate):
1. Face track -> 224 x 224 crops as run_pipeline.crop_video does: box centre and half-size
   median-filtered over the track (kernel 13), crop [y - s, y + s(1 + 2*0.4)] x
   [x - s(1 + 0.4), x + s(1 + 0.4)] of the frame padded with grey 110, resized (bilinear), BGR.
   The boxes are the caller's (syncnet_python takes them from S3FD; see eval.metrics.sync).
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
from torch import nn

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
    v_out, a_out, dev = [], [], next(net.parameters()).device
    with torch.no_grad():
        for i in range(0, n, batch):
            idx = range(i, min(n, i + batch))
            v_out.append(net.forward_lip(torch.stack([video[:, j:j + 5] for j in idx]).to(dev)).cpu())
            a_out.append(net.forward_aud(torch.stack([cc[None, :, 4 * j:4 * j + 20] for j in idx]).to(dev)).cpu())
    return torch.cat(v_out), torch.cat(a_out)


def _conv2d_block(cin, cout, kernel, pool=None, padding=(1, 1), relu_inplace=True):
    layers = [nn.Conv2d(cin, cout, kernel_size=kernel, stride=(1, 1), padding=padding),
              nn.BatchNorm2d(cout), nn.ReLU(inplace=relu_inplace)]
    if pool is not None:
        layers.append(pool)
    return layers


def _conv3d_block(cin, cout, kernel, stride=(1, 1, 1), padding=0, pool=None):
    layers = [nn.Conv3d(cin, cout, kernel_size=kernel, stride=stride, padding=padding),
              nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]
    if pool is not None:
        layers.append(pool)
    return layers


def _embedding_head(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, dim))


class SyncNet(nn.Module):
    def __init__(self, embedding_dim: int = 1024):
        super().__init__()
        self.netcnnaud = nn.Sequential(
            *_conv2d_block(1, 64, (3, 3), nn.MaxPool2d(kernel_size=(1, 1), stride=(1, 1))),
            *_conv2d_block(64, 192, (3, 3), nn.MaxPool2d(kernel_size=(3, 3), stride=(1, 2))),
            *_conv2d_block(192, 384, (3, 3)),
            *_conv2d_block(384, 256, (3, 3)),
            *_conv2d_block(256, 256, (3, 3), nn.MaxPool2d(kernel_size=(3, 3), stride=(2, 2))),
            *_conv2d_block(256, 512, (5, 4), padding=(0, 0), relu_inplace=False),
        )
        self.netfcaud = _embedding_head(embedding_dim)
        self.netfclip = _embedding_head(embedding_dim)
        self.netcnnlip = nn.Sequential(
            *_conv3d_block(3, 96, (5, 7, 7), stride=(1, 2, 2),
                           pool=nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2))),
            *_conv3d_block(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1),
                           pool=nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))),
            *_conv3d_block(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            *_conv3d_block(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            *_conv3d_block(256, 256, (1, 3, 3), padding=(0, 1, 1),
                           pool=nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2))),
            *_conv3d_block(256, 512, (1, 6, 6)),
        )
        self.eval()

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(N, 1, 13, 20) MFCC windows -> (N, embedding_dim)."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_lip(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, 5, 224, 224) BGR 0..255 -> (N, embedding_dim)."""
        return self.netfclip(self.netcnnlip(frames).flatten(1))


def load_syncnet(weights_dir: str | None = None) -> SyncNet:
    """SyncNet with `syncnet_v2.model` from the weights registry (FileNotFoundError naming the file
    and the fetch command when it is absent; ValueError when the file does not fit)."""
    from emo.weights import load_state_dict, load_strict
    return load_strict(SyncNet(), load_state_dict("syncnet", weights_dir), "syncnet")


def measure_sync(net: SyncNet, frames: np.ndarray, fps: float, boxes: np.ndarray, audio: np.ndarray,
                 audio_rate: int) -> SyncScores:
    """Offset (+ = audio late), confidence (Sync-C) and Sync-D of RGB `frames` with per-frame face
    `boxes` (x0, y0, x1, y1; NaN where no face) against `audio`, by the syncnet_python protocol."""
    idx = resample_indices(len(frames), fps)
    crops = face_crops(frames[idx], boxes[idx])
    n_samples = int(len(audio) * SYNCNET_RATE / audio_rate)
    video_emb, audio_emb = syncnet_embeddings(net, crops, mfcc_16k(audio, audio_rate), n_samples)
    return sync_scores(video_emb, audio_emb)
