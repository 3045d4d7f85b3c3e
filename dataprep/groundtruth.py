"""Compare a dataset folder with the ground truth of its raw videos (`*.groundtruth.json`):
cut precision/recall and the keep/reject decision of every shot. Used by tests and benchmarks."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from emo.manifest import read_rejects


def cut_precision_recall(pred: list[int], truth: list[int], tolerance: int = 2) -> tuple[float, float]:
    """Greedy one-to-one matching of cut frames within `tolerance` frames."""
    unmatched = list(truth)
    hits = 0
    for p in sorted(pred):
        near = [t for t in unmatched if abs(t - p) <= tolerance]
        if near:
            unmatched.remove(min(near, key=lambda t: abs(t - p)))
            hits += 1
    precision = hits / len(pred) if pred else 1.0
    recall = hits / len(truth) if truth else 1.0
    return precision, recall


def shot_decisions(dataset: str | os.PathLike, raw: str | os.PathLike) -> pd.DataFrame:
    """One row per ground-truth shot: expected decision/reason and what the pipeline did.

    A shot counts as kept when a manifest clip starts inside it (shots are split into clips);
    otherwise the reject rows starting inside it give stage and reason."""
    dataset, raw = Path(dataset), Path(raw)
    manifest = pd.read_parquet(dataset / "manifest.parquet")
    rejects = read_rejects(dataset)
    rows = []
    for gt_path in sorted(raw.glob("*.groundtruth.json")):
        gt = json.loads(gt_path.read_text())
        video = Path(gt["file"]).name
        m = manifest[manifest.source_video.map(lambda s: Path(s).name) == video]
        r = rejects[rejects.source_video.map(lambda s: Path(s).name) == video]
        for shot in gt["shots"]:
            a, b = shot["start_s"], shot["end_s"]
            kept = m[(m.source_start >= a - 0.2) & (m.source_start < b - 0.2)]
            rej = r[(r.source_start >= a - 0.2) & (r.source_start < b - 0.2)]
            whole = r[r.source_start.isna()]
            if len(kept):
                got, stage, reason = "keep", "", ""
            elif len(rej) or len(whole):
                first = (rej if len(rej) else whole).iloc[0]
                got, stage, reason = "reject", first.stage, first.reason
            else:
                got, stage, reason = "missing", "", ""
            rows.append({"video": video, "shot": shot["id"], "kind": shot["kind"],
                         "expected": shot["expected_decision"],
                         "expected_stage": shot.get("expected_stage", ""),
                         "expected_reason": shot.get("expected_reason", ""),
                         "got": got, "stage": stage, "reason": reason,
                         "n_clips": int(len(kept))})
    return pd.DataFrame(rows)
