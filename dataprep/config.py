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
from typing import Literal

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
class DiarizeConfig:
    """Speaker diarization (dataprep.stages.diarize), once per video on its whole audio."""
    backend: Literal["offline", "pyannote"] = "offline"
    # pyannote backend
    pyannote_pipeline: str | None = None     # local dir / config.yaml, or a hub id
    pyannote_token_env: str = "HF_TOKEN"     # environment variable holding the hub token
    device: str = "cpu"
    # voice activity detection (silero-vad)
    vad_threshold: float = 0.5
    min_speech_s: float = 0.25
    min_silence_s: float = 0.15
    speech_pad_s: float = 0.03
    # speaker embeddings on sliding windows inside speech (resemblyzer)
    window_s: float = 1.5
    hop_s: float = 0.25
    min_window_s: float = 0.5                # speech segments shorter than this get no embedding
    embed_smoothing: int = 2                 # neighbouring windows averaged on each side
    relabel_windows: bool = True             # final labels from each window's own embedding
    # Where in its window an embedding "is" (0 start, 1 end): the encoder keeps the LSTM's last
    # state, which weighs the end of the window most; 0.85 moved the speaker changes of the
    # shared multi-shot video ~0.5 s closer to the true cuts than the centre (0.5) did.
    window_anchor: float = 0.85
    # clustering and smoothing
    # Cosine distance, average linkage. Tuned on the shared pyannote sample (two close voices:
    # their centroids are 0.88 cosine-similar in resemblyzer space; 0.22 splits it into three
    # speakers, 0.28 merges it into one) and on single-speaker clips (never split at 0.25).
    cluster_threshold: float = 0.25
    min_turn_s: float = 0.5                  # shorter turns take the label of a touching neighbour
    min_cluster_s: float = 1.0               # speakers with less speech in total are merged away
    resolution_s: float = 0.05               # frame step of the labelling
    # speech_stats: a speaker counts in a clip only above both of these
    # (speaker changes are located within about +-1 s, so less than 1.5 s is below resolution)
    min_speaker_s: float = 1.5
    min_speaker_frac: float = 0.15           # of the clip's speech


@dataclass
class SyncConfig:
    """Audio-video sync (dataprep.stages.sync_decisions; the stage is dataprep.stages.sync_stage).

    Offsets are in video frames, + = audio late. Decisions: a measurement without evidence that the
    face speaks the audio -> reject "face not speaking"; an ambiguous one -> `sync_trusted` false,
    nothing corrected, and `untrusted` says whether the clip is kept (flagged) or rejected; a
    trusted offset beyond `max_correctable` -> reject "out of sync"; beyond `tolerance` -> the
    exported audio is shifted back by the offset; otherwise kept as is.
    """
    backend: Literal["auto", "syncnet", "offline"] = "auto"   # auto: SyncNet when its weights are present
    weights_dir: str | None = None    # SyncNet's folder (default: $EMO_EVAL_WEIGHTS, ~/.cache/emo/eval)
    max_offset: int = 15              # frames searched on each side (SyncNet's protocol: 15)
    max_correctable: int = 8          # frames (320 ms at 25 fps); a trusted offset beyond: "out of sync"
    # |offset| <= tolerance is left alone: 1 frame (40 ms at 25 fps) is under the ~45-ms audio-lead
    # detectability threshold of ITU-R BT.1359 and within either measure's +-1-frame jitter.
    tolerance: int = 1
    # Clips whose offset is ambiguous: rejected "sync ambiguous" (default: a kept clip's sync was
    # measured unambiguously), or kept with sync_trusted false for the trainer to filter. Neither is
    # ever shifted.
    untrusted: Literal["keep", "reject"] = "reject"
    # SyncNet: LatentSync keeps clips with confidence (Sync-C) >= 3 and shifts them by the offset.
    syncnet_min_confidence: float = 3.0
    # Offline measure (emo.media.lipsync): see dataprep/stages/sync_decisions.py for the principle.
    offline_min_confidence: float = 0.1   # peak minus median of the correlation curve: below, no speaking face
    # An offset is trusted only when no single second of footage decides it: at least this fraction
    # of the leave-one-second-out re-measurements agree within a frame ...
    offline_min_stability: float = 0.75
    # ... and this fraction of the leave-one-quarter-out ones (all: no stretch of the clip decides it) ...
    offline_min_quarters: float = 1.0
    # ... and the best peak of the correlation curve beats the best distinct other peak by this much
    # (correlation units).
    offline_min_margin: float = 0.03
    # The offline reading of unshifted clips varies by +-2 frames between people: it corrects only beyond.
    offline_tolerance: int = 2
    highpass_s: float = 0.75              # moving-average window removed from both signals

    def __post_init__(self):
        if not 0 <= self.tolerance <= self.max_correctable < self.max_offset:
            raise ValueError("need 0 <= tolerance <= max_correctable < max_offset (an offset at the "
                             f"edge of the search may lie beyond it), got tolerance {self.tolerance}, "
                             f"max_correctable {self.max_correctable}, max_offset {self.max_offset}")


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
    diarize: DiarizeConfig = field(default_factory=DiarizeConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
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
