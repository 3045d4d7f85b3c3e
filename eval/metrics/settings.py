"""Settings of the evaluation metrics (`metrics.yaml` beside this file), typed with the toolkit's one
configuration mechanism (emo.typed_config): the dataclasses below are the schema, and a misspelt
key or a wrong type in the file (or in an override) is an error naming the file and the key.

Only cost knobs and the named protocol routes live here: the definitions (networks,
preprocessing, windows, offsets) are fixed by the papers and are not tunable.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from emo.typed_config import from_mapping, read_yaml_mapping

SETTINGS_FILE = Path(__file__).with_name("metrics.yaml")


@dataclass
class InceptionSettings:
    frame_stride: int = 1          # every frame (1) or every k-th (cheaper on CPU)
    batch: int = 16


@dataclass
class StrideSettings:
    frame_stride: int = 1


@dataclass
class FVDSettings:
    route: Literal["stylegan_v", "all_segments"] = "stylegan_v"


@dataclass
class SyncSettings:
    """Sync-C and Sync-D share one SyncNet run, so they share these settings."""
    route: Literal["s3fd", "mediapipe"] = "s3fd"
    min_track: int = 100           # syncnet_python run_pipeline defaults
    min_face_size: float = 100.0
    facedet_scale: float = 0.25
    conf_th: float = 0.9


@dataclass
class LandmarkSyncSettings:
    max_offset: int = 15


@dataclass
class MetricSettings:
    fid: InceptionSettings = field(default_factory=InceptionSettings)
    kid: InceptionSettings = field(default_factory=InceptionSettings)
    fvd: FVDSettings = field(default_factory=FVDSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    lm_sync: LandmarkSyncSettings = field(default_factory=LandmarkSyncSettings)
    lpips: StrideSettings = field(default_factory=StrideSettings)
    f_sim: StrideSettings = field(default_factory=lambda: StrideSettings(frame_stride=2))
    e_fid_3dmm: StrideSettings = field(default_factory=StrideSettings)

    def for_metric(self, name: str) -> dict:
        """Constructor keyword arguments of the metric called `name` ({} when it has no settings)."""
        section = "sync" if name in ("sync_c", "sync_d") else name
        return asdict(getattr(self, section)) if hasattr(self, section) else {}


def load_settings(path: str | Path | None = None, overrides: dict | None = None) -> MetricSettings:
    """metrics.yaml (or `path`), with `overrides` {section: {key: value}} applied on top; checked."""
    path = Path(path or SETTINGS_FILE)
    data = read_yaml_mapping(path)
    for section, over in (overrides or {}).items():
        data[section] = {**(data.get(section) or {}), **over}
    return from_mapping(MetricSettings, data, source=path if not overrides else f"{path} + overrides")
