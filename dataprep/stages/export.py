"""Stage 3, second half: the square face crop of each kept clip, encoded with its audio, and
its labels in crop coordinates.

The crop follows the face track, smoothed with a centred moving average on the centre and the
side so it does not jitter with landmark noise. Only clips that passed every check get here, so
rejected footage is never decoded twice; the kept clips' frames are decoded by one reader, in
order, which seeks to a clip only when it does not follow on from the one before
(`dataprep.decode.ClipFrameReader`).
"""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from scipy.ndimage import uniform_filter1d

from emo.manifest import save_labels
from emo.media import write_video
from emo.media.crop import crop_square, square_around

from ..config import DataprepConfig
from ..decode import ClipFrameReader
from .common import Clip, VideoRecord, reject_clip
from .faces import FaceTrack
from .sync_stage import clip_audio

# Fewer decoded frames than this (VFR gaps, corrupt packets) and the clip is a "decode error".
MIN_DECODED_FRACTION = 0.9


def smooth_squares(boxes: np.ndarray, fps: float, scale: float, smooth_s: float) -> np.ndarray:
    """(T, 4) boxes -> (T, 3) squares (cx, cy, side), each column moving-averaged over smooth_s."""
    squares = np.stack([square_around(b, scale) for b in boxes]).astype(np.float64)
    window = max(1, int(round(smooth_s * fps)) | 1)   # odd, so the average is centred
    return uniform_filter1d(squares, size=window, axis=0, mode="nearest").astype(np.float32)


def labels_in_crop(track: FaceTrack, squares: np.ndarray) -> dict[str, np.ndarray]:
    """Landmarks and boxes mapped into [0, 1] of each frame's crop (z scaled like x)."""
    cx, cy, side = squares[:, 0:1], squares[:, 1:2], squares[:, 2:3]
    x0, y0 = cx - side / 2, cy - side / 2
    lm = track.landmarks.copy()
    lm[..., 0] = (lm[..., 0] - x0) / side
    lm[..., 1] = (lm[..., 1] - y0) / side
    lm[..., 2] = lm[..., 2] / side
    b = track.boxes
    boxes = np.stack([(b[:, 0] - x0[:, 0]) / side[:, 0], (b[:, 1] - y0[:, 0]) / side[:, 0],
                      (b[:, 2] - x0[:, 0]) / side[:, 0], (b[:, 3] - y0[:, 0]) / side[:, 0]], axis=1)
    union = np.clip(np.array([boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()]), 0, 1)
    # crop_squares (beyond LABEL_KEYS): each frame's crop (cx, cy, side) in source pixels, so
    # labels can be mapped back to the source video.
    return {"landmarks": lm, "blendshapes": track.blendshapes, "pose": track.pose,
            "rotation_speed": track.speed, "boxes": boxes, "face_box": union,
            "crop_squares": squares}


def render_clip(record: VideoRecord, clip: Clip, cfg: DataprepConfig, reader: ClipFrameReader) -> None:
    fcfg = cfg.faces
    squares = smooth_squares(clip.track.boxes, clip.fps, fcfg.crop_scale, fcfg.smooth_s)
    size = fcfg.crop_size
    clips_dir = Path(record.out_dir) / "clips"
    decoded = [0]

    def frames():
        # Constant frame rate out: a frame missing from a variable-rate source repeats the
        # one before it (cropped where the track says), a duplicate timestamp is dropped.
        k_next, last = 0, None
        for index, rgb in reader.read(clip.start_frame, clip.end_frame):
            k = index - clip.start_frame
            if not k_next <= k < clip.n_frames:
                continue
            decoded[0] += 1
            for gap in range(k_next, k):
                yield crop_square(last if last is not None else rgb, squares[gap], size)
            last, k_next = rgb, k + 1
            yield crop_square(rgb, squares[k], size)
        for gap in range(k_next, clip.n_frames if last is not None else 0):
            yield crop_square(last, squares[gap], size)

    audio = clip_audio(record, clip, clip.audio_delay)
    path = clips_dir / f"{clip.clip_id}.mp4"
    write_video(path, frames(), clip.fps, audio=audio, audio_rate=record.audio_rate, crf=fcfg.crf)
    if decoded[0] < MIN_DECODED_FRACTION * clip.n_frames:
        path.unlink(missing_ok=True)
        raise RuntimeError(f"decoded {decoded[0]} of {clip.n_frames} frames")
    labels = labels_in_crop(clip.track, squares)
    save_labels(clips_dir / f"{clip.clip_id}.npz", labels)
    clip.values.update(
        clip_path=f"clips/{clip.clip_id}.mp4", labels_path=f"clips/{clip.clip_id}.npz",
        size=size, face_box=[float(v) for v in labels["face_box"]])


def export(record: VideoRecord, cfg: DataprepConfig) -> VideoRecord:
    with ClipFrameReader(record.path) as reader:
        for clip in sorted(record.live_clips(), key=lambda c: c.start_frame):
            try:
                render_clip(record, clip, cfg, reader)
            except (RuntimeError, av.FFmpegError) as exc:   # MediaError included; bugs still crash loudly
                reject_clip(record, clip, "export", "decode error", f"while cropping: {exc}")
        record.notes["export_decoded_frames"] = reader.decoded
    return record
