"""The one decoding pass over a whole video: feeds the shot detector every frame and the face
analyser every `faces.stride`-th frame (stages 2 and 3 then work on what it collected)."""
from __future__ import annotations

from dataclasses import dataclass, field

from emo.media import MediaError

from ..config import DataprepConfig
from ..decode import iter_scaled
from .common import VideoRecord
from .cut import ShotDetector
from .faces import FrameFaces, observe


@dataclass
class Scan:
    n_frames: int = 0                                   # frames actually decoded
    cuts: list = field(default_factory=list)            # frame indices that start a shot
    faces: dict = field(default_factory=dict)           # analysed frame -> FrameFaces | None
    frame_size: tuple = (0, 0)                          # upright (width, height)


def scan(record: VideoRecord, cfg: DataprepConfig) -> VideoRecord:
    from emo.media.face import FaceAnalyser

    fps = record.info.fps
    detector = ShotDetector(cfg.cut, fps)
    result = Scan()
    last = -1
    with FaceAnalyser(max_faces=cfg.faces.max_faces, video=True,
                      min_confidence=cfg.faces.min_confidence) as analyser:
        try:
            for frame in iter_scaled(record.path, cfg.cut.analysis_width, cfg.faces.analysis_max_side,
                                     cfg.faces.stride):
                if frame.index <= last:       # duplicate timestamps: keep the first frame
                    continue
                last = frame.index
                detector.feed(frame.index, frame.small_bgr)
                if frame.face_rgb is not None:
                    found = analyser.analyse(frame.face_rgb, int(round(frame.index * 1000 / fps)))
                    result.faces[frame.index] = observe(found, frame.face_rgb, frame.face_scale)
        except MediaError as exc:
            return record.reject_video("probe", "decode error", str(exc))
    result.n_frames = last + 1
    result.cuts = detector.finish()
    record.scan = result
    if result.n_frames < cfg.probe.min_frames:
        return record.reject_video("probe", "too few frames",
                                   f"{result.n_frames} decodable frames < {cfg.probe.min_frames}")
    record.notes["decoded_frames"] = result.n_frames
    record.notes["cuts"] = result.cuts
    return record


__all__ = ["Scan", "scan", "FrameFaces"]
