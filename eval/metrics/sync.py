"""Sync-C / Sync-D with SyncNet, following joonson/syncnet_python.

The network and the protocol after the face boxes (crops, MFCCs, windows, offsets) live in
`emo.media.syncnet.measure_sync`, shared with dataprep's sync stage. Where the face boxes come
from is the route (metrics.yaml `sync_c.route`, recorded in the protocol):

- `s3fd` (default, syncnet_python's run_pipeline): S3FD detections on every frame (scale 0.25,
  confidence > 0.9), linked into a track (IoU > 0.5 with the previous box, at most 25 frames
  without a detection), boxes interpolated over the track; the track must be longer than
  `min_track` frames (100) and its mean box side larger than `min_face_size` pixels (100),
  otherwise the clip has no value (missing, so the metric is partial). The frames and audio of
  the track's span are scored.
- `mediapipe` (the earlier route): MediaPipe landmark extents as boxes (cached per sample). The
  crop's scale and placement differ from S3FD's, so its numbers are not those of papers.

Offsets are reported in this project's convention (+ = audio late), i.e. the negated
syncnet_python AV offset; their absolute value is `sync_offset_abs`.
"""
from __future__ import annotations

import numpy as np

from emo.media.syncnet import SyncScores, measure_sync

from .base import ClipSample, Metric, sample_landmarks

ROUTES = ("s3fd", "mediapipe")
IOU_THRESHOLD = 0.5            # syncnet_python track_shot iouThres
NUM_FAILED_DET = 25            # run_pipeline --num_failed_det


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def face_tracks(detections: list[np.ndarray], min_track: int = 100, min_face_size: float = 100.0) -> list[tuple[int, np.ndarray]]:
    """syncnet_python's track_shot: per-frame (K, 5) detections -> [(first frame, (L, 4) boxes)] of the
    tracks that pass the filters (length > min_track frames, mean box side > min_face_size), boxes
    linearly interpolated over frames without a detection."""
    pending = [[(t, d[:4]) for d in dets] for t, dets in enumerate(detections)]
    tracks = []
    while True:
        track = []
        for frame_faces in pending:
            for face in list(frame_faces):
                if not track:
                    track.append(face)
                    frame_faces.remove(face)
                elif face[0] - track[-1][0] <= NUM_FAILED_DET and _iou(face[1], track[-1][1]) > IOU_THRESHOLD:
                    track.append(face)
                    frame_faces.remove(face)
                    break
                elif face[0] - track[-1][0] > NUM_FAILED_DET:
                    break
        if not track:
            break
        frames = np.array([t for t, _ in track])
        boxes = np.stack([b for _, b in track])
        span = np.arange(frames[0], frames[-1] + 1)
        interp = np.stack([np.interp(span, frames, boxes[:, j]) for j in range(4)], 1)
        size = max(np.mean(interp[:, 2] - interp[:, 0]), np.mean(interp[:, 3] - interp[:, 1]))
        if len(track) > min_track and size > min_face_size:
            tracks.append((int(frames[0]), interp))
    return tracks


def s3fd_boxes(net, frames: np.ndarray, scale: float, conf_th: float) -> list[np.ndarray]:
    from eval.networks.s3fd import detect_faces
    return [detect_faces(net, f, conf_th=conf_th, scale=scale) for f in frames]


class _SyncNetMetric(Metric):
    weights = ("syncnet", "s3fd")
    needs_mediapipe = False

    def __init__(self, weights_dir=None, device="cpu", route: str = "s3fd", min_track: int = 100,
                 min_face_size: float = 100.0, facedet_scale: float = 0.25, conf_th: float = 0.9):
        super().__init__(weights_dir, device)
        if route not in ROUTES:
            raise ValueError(f"sync route {route!r} not in {ROUTES}")
        self.route, self.min_track, self.min_face_size = route, int(min_track), float(min_face_size)
        self.facedet_scale, self.conf_th = float(facedet_scale), float(conf_th)
        if route == "mediapipe":
            self.weights, self.needs_mediapipe = ("syncnet",), True

    def settings(self) -> dict:
        out = {"route": self.route}
        if self.route == "s3fd":
            out.update(min_track=self.min_track, min_face_size=self.min_face_size,
                       facedet_scale=self.facedet_scale, conf_th=self.conf_th)
        return out

    def protocol(self) -> dict:
        detector = (f"S3FD (sfd_face.pth) at scale {self.facedet_scale}, confidence > {self.conf_th}; "
                    f"track IoU > {IOU_THRESHOLD}, <= {NUM_FAILED_DET} missed frames; track > {self.min_track} "
                    f"frames and mean face side > {self.min_face_size:g} px, else the clip is missing"
                    if self.route == "s3fd" else "MediaPipe FaceLandmarker landmark extents (not syncnet_python's)")
        return {"detector": detector, "route": self.route,
                "crop": "syncnet_python crop_video: box centre/size median-filtered (13), crop_scale 0.4, 224 x 224, BGR",
                "frames": "resampled to 25 fps (nearest frame)", "audio": "16 kHz MFCC (python_speech_features), "
                "offsets -15..15", **self.settings()}

    def _scores(self, sample: ClipSample) -> SyncScores | None:
        key = ("syncnet", self.route, self.settings().__repr__())
        if key in sample.cache:
            return sample.cache[key]
        self.require_available()
        from eval.networks import load_network
        net = load_network("syncnet", self.weights_dir).to(self.device)
        if self.route == "mediapipe":
            result = measure_sync(net, sample.generated, sample.fps, sample_landmarks(sample, "generated").boxes,
                                  sample.audio, sample.audio_rate)
        else:
            det = load_network("s3fd", self.weights_dir).to(self.device)
            tracks = face_tracks(s3fd_boxes(det, sample.generated, self.facedet_scale, self.conf_th),
                                 self.min_track, self.min_face_size)
            result = None
            if tracks:   # the longest track that passed the filters
                start, boxes = max(tracks, key=lambda t: len(t[1]))
                end = start + len(boxes)
                a0, a1 = (int(round(i * sample.audio_rate / sample.fps)) for i in (start, end))
                result = measure_sync(net, sample.generated[start:end], sample.fps, boxes,
                                      sample.audio[a0:a1], sample.audio_rate)
        sample.cache[key] = result
        return result


class SyncC(_SyncNetMetric):
    name = "sync_c"
    direction = "higher"
    directions = {"sync_c": "higher", "sync_offset_abs": "lower"}
    description = "SyncNet confidence (median - min mean distance over offsets -15..15), syncnet_python protocol"

    def score_clip(self, sample: ClipSample) -> dict:
        s = self._scores(sample)
        if s is None:
            return {"sync_c": float("nan"), "sync_offset_abs": float("nan")}
        return {"sync_c": s.confidence, "sync_offset_abs": float(abs(s.offset))}


class SyncD(_SyncNetMetric):
    name = "sync_d"
    direction = "lower"
    description = "SyncNet minimum mean embedding distance over offsets -15..15, syncnet_python protocol"

    def score_clip(self, sample: ClipSample) -> float:
        s = self._scores(sample)
        return float("nan") if s is None else s.min_dist
