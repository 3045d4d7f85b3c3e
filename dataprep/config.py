"""Dataset-preparation settings: one dataclass per stage, loaded from YAML.

The YAML files live in dataprep/configs/. `config_hash` identifies a configuration: the runner
keys its per-video results by it, so changing any setting redoes the work and nothing stale is
reused.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from emo.typed_config import from_mapping, load_yaml

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class ProbeConfig:
    min_frames: int = 25              # fewer decodable frames than this: "too few frames"


@dataclass
class CutConfig:
    detector: str = "content"         # content | adaptive (PySceneDetect detectors)
    threshold: float = 27.0           # ContentDetector threshold
    adaptive_threshold: float = 3.0   # AdaptiveDetector ratio
    min_scene_len: int = 10           # frames between two cuts at least (PySceneDetect)
    analysis_width: int = 256         # frames are downscaled to this width for cut detection
    min_shot_s: float = 3.0           # shorter shots: "shot too short" (EMO keeps 3-12 s clips)
    clip_s: float = 8.0               # long shots are split into clips of about this length
    max_clip_s: float = 12.0
    min_clip_s: float = 3.0


@dataclass
class FacesConfig:
    stride: int = 2                   # analyse every n-th frame, interpolate between
    analysis_max_side: int = 640      # frames are downscaled to at most this side for MediaPipe
    max_faces: int = 2
    min_confidence: float = 0.5
    min_presence: float = 0.5         # fraction of analysed frames with a face, else no face / too small
    max_gap_s: float = 0.5            # a longer run of frames without the face: "face lost"
    max_jump: float = 0.5             # centre jump between analysed frames, in face heights: "face lost"
    second_face_ratio: float = 0.35   # a second face this large relative to the main one counts
    max_multi_frac: float = 0.2       # fraction of frames with a second face allowed
    min_face_px: float = 64.0         # median face height below this: "face too small"
    small_face_tile: int = 256        # tile size of the small-face search (BlazeFace on tiles)
    small_face_samples: int = 3       # frames searched for small faces in a faceless clip
    crop_size: int = 512              # training size of the square crops
    crop_scale: float = 1.8           # crop side / larger side of the face box
    smooth_s: float = 0.5             # moving-average window for the crop centre and size
    crf: int = 18


@dataclass
class SpeechConfig:
    # Diarization turn boundaries are off by up to ~1 s (1.5-s embedding windows) while cuts are
    # frame-exact; another speaker heard only this close to a clip's ends is not counted.
    edge_margin_s: float = 1.0


@dataclass
class FilterConfig:
    min_face_frac: float = 0.1        # face height / frame height
    min_sharpness: float = 15.0       # variance of the Laplacian of the face at 128 px
    max_abs_yaw: float = 45.0         # degrees
    min_duration_s: float = 3.0
    min_speech_ratio: float = 0.3
    min_sync_confidence: float = 0.0


@dataclass
class SplitConfig:
    train: float = 0.8
    val: float = 0.1
    test: float = 0.1


@dataclass
class DataprepConfig:
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    cut: CutConfig = field(default_factory=CutConfig)
    faces: FacesConfig = field(default_factory=FacesConfig)
    # The diarize and sync stages own their settings (their modules' config classes); these
    # sections go to them as given.
    diarize: dict = field(default_factory=dict)
    sync: dict = field(default_factory=dict)
    speech: SpeechConfig = field(default_factory=SpeechConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    split: SplitConfig = field(default_factory=SplitConfig)

    def to_dict(self) -> dict:
        return asdict(self)


def config_from_dict(data: dict, source: str | os.PathLike | None = None) -> DataprepConfig:
    return from_mapping(DataprepConfig, data or {}, source=source)


def load_config(path: str | os.PathLike | None = None) -> DataprepConfig:
    """Read a YAML config; None gives the default config (configs/default.yaml)."""
    return load_yaml(DataprepConfig, Path(path) if path else CONFIG_DIR / "default.yaml")


def config_hash(cfg: DataprepConfig) -> str:
    text = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
