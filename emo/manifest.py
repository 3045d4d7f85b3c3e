"""Contract 1: the dataset folder that `dataprep` writes and `emo` training and `eval` read.

```
<dataset>/
  clips/<clip_id>.mp4     square face crop at the training size, constant fps, AAC 16 kHz mono
  clips/<clip_id>.npz     per-frame labels (LABEL_KEYS)
  manifest.parquet        one row per kept clip (MANIFEST_SCHEMA)
  rejects.parquet         one row per rejected video or shot (REJECTS_SCHEMA)
  stats.json              counts, durations, throughput, the config used
```
Paths inside the tables are relative to the dataset folder (or, for `source_video`, to the raw
folder the run read), never absolute, so a dataset can be moved or shared. Tables are validated
when written and when read; writes are atomic.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .fileio import atomic_path

SPLITS = ("train", "val", "test")

MANIFEST_SCHEMA = pa.schema([
    ("clip_id", pa.string()),            # unique within the dataset; file stem of the clip
    ("clip_path", pa.string()),          # clips/<clip_id>.mp4, relative to the dataset folder
    ("labels_path", pa.string()),        # clips/<clip_id>.npz, relative to the dataset folder
    ("source_video", pa.string()),       # relative to the raw folder
    ("source_start", pa.float64()),      # seconds in the source video
    ("source_end", pa.float64()),
    ("fps", pa.float64()),
    ("n_frames", pa.int64()),
    ("size", pa.int64()),                # clips are square: size x size pixels
    ("split", pa.string()),              # train | val | test
    ("group", pa.string()),              # identity or source group; splits never share one
    ("speaker", pa.string()),            # diarization label within the source video
    ("speech_ratio", pa.float64()),      # fraction of the clip with speech
    ("sync_offset", pa.int64()),         # frames, + = audio late; measured before correction
    ("sync_confidence", pa.float64()),
    ("sync_corrected", pa.bool_()),      # the clip's audio was delayed by -sync_offset frames
    ("sync_trusted", pa.bool_()),        # the offset was unambiguous; false: reported, never acted on
    ("sync_reason", pa.string()),        # why the offset is not trusted ("" when trusted)
    ("sync_backend", pa.string()),       # syncnet | offline: the measure that decided
    ("face_size", pa.float64()),         # median face height in source pixels
    ("face_frac", pa.float64()),         # median face height / source frame height
    ("yaw_range", pa.float64()),         # degrees, max - min over the clip
    ("yaw_abs_max", pa.float64()),       # degrees
    ("mean_speed", pa.float64()),        # mean head rotation speed, degrees per frame
    ("sharpness", pa.float64()),         # variance of the Laplacian of the face crop, median
    ("face_box", pa.list_(pa.float32(), 4)),  # union of face boxes, x0 y0 x1 y1 in [0, 1] of the crop
])

# Columns added after the first datasets were written: a manifest (or a writer) without them gets
# these values, which say that nothing was recorded (an unrecorded sync measurement is not trusted).
MANIFEST_DEFAULTS = {"sync_trusted": False, "sync_reason": "not recorded", "sync_backend": ""}

REJECTS_SCHEMA = pa.schema([
    ("source_video", pa.string()),       # relative to the raw folder
    ("stage", pa.string()),              # probe | cut | faces | diarize | sync | filter | ...
    ("reason", pa.string()),             # short, stable, groupable (e.g. "no face")
    ("detail", pa.string()),             # free text: numbers, exception messages
    ("source_start", pa.float64()),      # NaN for whole-video rejects
    ("source_end", pa.float64()),
    ("clip_id", pa.string()),            # empty for whole-video rejects
])

# Per-frame labels in clips/<clip_id>.npz. T = n_frames. Coordinates are in [0, 1] of the crop.
LABEL_KEYS = {
    "landmarks": ("T", 478, 3),    # float32, x and y in [0, 1] of the crop, z relative
    "blendshapes": ("T", 52),      # float32, MediaPipe's 52 blendshape scores
    "pose": ("T", 3),              # float32, yaw, pitch, roll in degrees
    "rotation_speed": ("T",),      # float32, head rotation speed in degrees per frame
    "boxes": ("T", 4),             # float32, face box per frame, x0 y0 x1 y1 in [0, 1]
    "face_box": (4,),              # float32, union of the boxes (EMO's face-region mask)
}


class ManifestError(ValueError):
    pass


def _check_table(df: pd.DataFrame, schema: pa.Schema, what: str) -> pa.Table:
    missing = [n for n in schema.names if n not in df.columns]
    if missing:
        raise ManifestError(f"{what}: missing columns {missing}")
    try:
        table = pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        raise ManifestError(f"{what}: column types do not match the schema: {exc}") from None
    return table


def _with_defaults(df: pd.DataFrame) -> pd.DataFrame:
    missing = {k: v for k, v in MANIFEST_DEFAULTS.items() if k not in df.columns}
    return df.assign(**missing) if missing else df


def validate_manifest(df: pd.DataFrame) -> pa.Table:
    df = _with_defaults(df)
    table = _check_table(df, MANIFEST_SCHEMA, "manifest")
    if df["clip_id"].duplicated().any():
        raise ManifestError(f"manifest: duplicate clip ids {sorted(df.clip_id[df.clip_id.duplicated()])[:5]}")
    for col in ("clip_path", "labels_path", "source_video"):
        bad = [p for p in df[col] if os.path.isabs(p) or ".." in Path(p).parts]
        if bad:
            raise ManifestError(f"manifest: {col} must be relative and inside the folder: {bad[:3]}")
    bad_split = set(df["split"]) - set(SPLITS)
    if bad_split:
        raise ManifestError(f"manifest: unknown splits {sorted(bad_split)}")
    shared = _groups_across_splits(df)
    if shared:
        raise ManifestError(f"manifest: groups or source videos in more than one split: {shared[:5]}")
    return table


def _groups_across_splits(df: pd.DataFrame) -> list[str]:
    out = []
    for col in ("group", "source_video"):
        n = df.groupby(col)["split"].nunique()
        out += [f"{col}={k}" for k in n[n > 1].index]
    return out


def validate_rejects(df: pd.DataFrame) -> pa.Table:
    table = _check_table(df, REJECTS_SCHEMA, "rejects")
    if (df["reason"].fillna("") == "").any():
        raise ManifestError("rejects: every row needs a reason")
    return table


def _atomic_write_table(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_manifest(df: pd.DataFrame, dataset: str | os.PathLike) -> Path:
    path = Path(dataset) / "manifest.parquet"
    _atomic_write_table(validate_manifest(df), path)
    return path


def write_rejects(df: pd.DataFrame, dataset: str | os.PathLike) -> Path:
    path = Path(dataset) / "rejects.parquet"
    _atomic_write_table(validate_rejects(df), path)
    return path


def empty_frame(schema: pa.Schema) -> pd.DataFrame:
    return schema.empty_table().to_pandas()


def read_manifest(dataset: str | os.PathLike, split: str | None = None, check_files: bool = True) -> pd.DataFrame:
    """The manifest of a dataset folder, validated; optionally one split only."""
    dataset = Path(dataset)
    path = dataset / "manifest.parquet"
    if not path.is_file():
        raise FileNotFoundError(
            f"no manifest at {path}: build one with `python -m dataprep run --raw RAW --out {dataset}` "
            f"(or `make dataset` for the embedded sample)")
    df = _with_defaults(pq.read_table(path).to_pandas())
    validate_manifest(df)
    if check_files:
        missing = [p for p in df["clip_path"].tolist() + df["labels_path"].tolist() if not (dataset / p).is_file()]
        if missing:
            raise ManifestError(f"manifest {path}: {len(missing)} files missing, e.g. {missing[:3]}")
    if split is not None:
        if split not in SPLITS:
            raise ManifestError(f"unknown split {split!r}; expected one of {SPLITS}")
        df = df[df["split"] == split].reset_index(drop=True)
    return df


def read_rejects(dataset: str | os.PathLike) -> pd.DataFrame:
    df = pq.read_table(Path(dataset) / "rejects.parquet").to_pandas()
    validate_rejects(df)
    return df


def load_labels(dataset: str | os.PathLike, row) -> dict[str, np.ndarray]:
    """The per-frame labels of one manifest row, shapes checked against LABEL_KEYS."""
    with np.load(Path(dataset) / row["labels_path"], allow_pickle=False) as z:
        labels = {k: z[k] for k in LABEL_KEYS}
    t = labels["pose"].shape[0]
    for key, shape in LABEL_KEYS.items():
        want = tuple(t if d == "T" else d for d in shape)
        if labels[key].shape != want:
            raise ManifestError(f"{row['labels_path']}: {key} has shape {labels[key].shape}, expected {want}")
    return labels


def save_labels(path: str | os.PathLike, labels: dict[str, np.ndarray]) -> Path:
    """Write a labels file atomically (np.savez, no pickles)."""
    path = Path(path)
    missing = set(LABEL_KEYS) - set(labels)
    if missing:
        raise ManifestError(f"labels missing keys {sorted(missing)}")
    with atomic_path(path) as tmp:   # keeps the .npz suffix, so np.savez adds none
        np.savez(tmp, **{k: np.asarray(v, dtype=np.float32) for k, v in labels.items()})
    return path


def manifest_hash(dataset: str | os.PathLike) -> str:
    """sha256 of manifest.parquet: identifies the exact held-out set a result was scored on."""
    h = hashlib.sha256((Path(dataset) / "manifest.parquet").read_bytes())
    return h.hexdigest()
