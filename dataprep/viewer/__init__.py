"""The dataset viewer: one self-contained HTML page for a dataset folder (`python -m dataprep
inspect OUT --html`, `make dataset-report`).

It shows what a curator needs to judge a dataset: kept and rejected counts per stage and reason,
the distributions of the manifest's measurements, every kept clip (a frame strip, the playable
clip with its sound, its manifest values) and every reject (stage, reason, detail, a thumbnail
from the source), and which sync backend decided with which config. Charts and pictures are
embedded (PNG data URIs); the clips are linked relatively, so the page works where it is written
(inside the dataset folder) and wherever the folder is moved.
"""
from __future__ import annotations

import base64
import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape

from emo.fileio import atomic_write
from emo.manifest import read_manifest, read_rejects
from emo.media.page import page_check_script

TEMPLATE_DIR = Path(__file__).parent
STRIP_FRAMES = 5
STRIP_HEIGHT = 96
THUMB_HEIGHT = 72
# (column, label) of the distributions; duration is computed from n_frames / fps
DISTRIBUTIONS = [("duration_s", "duration (s)"), ("face_size", "face size (px, median height)"),
                 ("yaw_abs_max", "|yaw| max (deg)"), ("yaw_range", "yaw range (deg)"),
                 ("mean_speed", "rotation speed (deg/frame)"), ("sync_offset", "sync offset (frames, + = audio late)"),
                 ("sync_confidence", "sync confidence"), ("speech_ratio", "speech ratio"),
                 ("sharpness", "sharpness (Laplacian variance)")]
MANIFEST_SHOWN = ["split", "source_video", "source_start", "source_end", "speaker", "speech_ratio",
                  "sync_offset", "sync_confidence", "sync_corrected", "sync_trusted", "sync_reason",
                  "sync_backend", "face_size", "yaw_abs_max", "mean_speed", "sharpness"]


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _jpeg(rgb: np.ndarray, height: int) -> str:
    from PIL import Image
    img = Image.fromarray(np.asarray(rgb, np.uint8))
    img = img.resize((max(1, round(img.width * height / img.height)), height))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def counts_chart(manifest: pd.DataFrame, rejects: pd.DataFrame) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = ["kept"] + [f"{s}: {r}" for s, r in rejects.groupby(["stage", "reason"]).size().index]
    values = [len(manifest)] + list(rejects.groupby(["stage", "reason"]).size().values)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(labels) + 0.8))
    ax.barh(range(len(labels)), values, color=["#3a7"] + ["#c55"] * (len(labels) - 1))
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    for i, v in enumerate(values):
        ax.text(v, i, f" {v}", va="center")
    ax.set_xlabel("clips (kept) / rejected videos, shots or clips")
    return _png(fig)


def distributions_chart(manifest: pd.DataFrame) -> str | None:
    if not len(manifest):
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    df = manifest.assign(duration_s=manifest.n_frames / manifest.fps)
    fig, axes = plt.subplots(3, 3, figsize=(11, 8))
    for ax, (col, label) in zip(axes.ravel(), DISTRIBUTIONS):
        values = pd.to_numeric(df[col], errors="coerce").dropna().to_numpy(float)
        if len(values):
            ax.hist(values, bins=min(20, max(3, len(values))), color="#469")
        ax.set_title(f"{label} (n={len(values)})", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def frame_strip(path: Path, n: int = STRIP_FRAMES) -> str | None:
    """One JPEG of `n` frames evenly spread over a clip, side by side."""
    from emo.media import read_frames
    try:
        frames = read_frames(path)
    except Exception:  # noqa: BLE001 - an unreadable clip is shown as such, not as a broken image
        return None
    idx = np.linspace(0, len(frames) - 1, min(n, len(frames))).astype(int)
    return _jpeg(np.concatenate([frames[i] for i in idx], axis=1), STRIP_HEIGHT)


def source_thumbnail(raw: Path | None, source_video: str, start: float, end: float) -> str | None:
    """A frame from the middle of a reject's span (the video's first second when it has none)."""
    from emo.media import read_frames
    if raw is None or not (raw / source_video).is_file():
        return None
    t = 0.5 * (start + end) if math.isfinite(start) and math.isfinite(end) else 0.0
    try:
        frames = read_frames(raw / source_video, t, t + 0.5)
    except Exception:  # noqa: BLE001 - an undecodable source (often why it was rejected) has no thumbnail
        return None
    return _jpeg(frames[0], THUMB_HEIGHT)


def _fmt(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return "–" if not math.isfinite(v) else f"{v:.3g}"
    return str(v)


def build_dataset_report(dataset: str | os.PathLike, out: str | os.PathLike | None = None,
                         raw: str | os.PathLike | None = None) -> Path:
    """Write the viewer page (default: DATASET/report.html) and return its path. `raw`: the raw
    folder for reject thumbnails (default: the one stats.json names)."""
    dataset = Path(dataset)
    out = Path(out) if out else dataset / "report.html"
    manifest = read_manifest(dataset)
    rejects = read_rejects(dataset)
    stats_path = dataset / "stats.json"
    stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    raw_dir = Path(raw) if raw else (Path(stats["run"]["raw"]) if stats.get("run", {}).get("raw") else None)
    if raw_dir is not None and not raw_dir.is_absolute():
        raw_dir = (Path.cwd() / raw_dir)
    rel = os.path.relpath(dataset.resolve(), out.resolve().parent)

    clips = []
    for _, row in manifest.iterrows():
        clips.append({
            "clip_id": row.clip_id, "video": Path(rel, row.clip_path).as_posix(),
            "strip": frame_strip(dataset / row.clip_path),
            "duration": row.n_frames / row.fps,
            "fields": [(k, _fmt(row[k])) for k in MANIFEST_SHOWN if k in row],
            "trusted": bool(row.get("sync_trusted", False)), "corrected": bool(row.get("sync_corrected", False)),
        })
    reject_rows = []
    for _, r in rejects.iterrows():
        reject_rows.append({**{k: _fmt(r[k]) for k in ("source_video", "stage", "reason", "detail", "clip_id")},
                            "span": "whole video" if not math.isfinite(r.source_start)
                            else f"{r.source_start:.2f}–{r.source_end:.2f} s",
                            "thumb": source_thumbnail(raw_dir, r.source_video, r.source_start, r.source_end)})
    backends = dict(manifest["sync_backend"].value_counts()) if len(manifest) else {}
    cfg = stats.get("config", {})
    env = Environment(loader=FileSystemLoader(TEMPLATE_DIR), autoescape=select_autoescape(["html"]))
    html = env.get_template("dataset.html").render(
        dataset=str(dataset), stats=stats, n_clips=len(manifest), n_rejects=len(rejects),
        kept_s=float((manifest.n_frames / manifest.fps).sum()) if len(manifest) else 0.0,
        counts_png=counts_chart(manifest, rejects), dist_png=distributions_chart(manifest),
        clips=clips, rejects=reject_rows,
        sync_backends=stats.get("sync_backends") or {k: int(v) for k, v in backends.items()},
        sync_config=json.dumps(cfg.get("sync", {}), indent=1),
        config=json.dumps(cfg, indent=1), raw=str(raw_dir) if raw_dir else "unknown",
        n_untrusted=int((~manifest.sync_trusted.astype(bool)).sum()) if len(manifest) else 0,
        page_check_script=page_check_script())
    return atomic_write(out, html)
