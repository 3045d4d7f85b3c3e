"""Stage 7: the dataset tables from every video's result, with splits assigned by group.

A group (an identity, or a source video when nothing better is known) lands in exactly one split,
ranked by a hash of its name; at least one group goes to test, and one to val once there are
three or more.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from collections import Counter
from pathlib import Path

import pandas as pd

from emo.fileio import atomic_write
from emo.manifest import (MANIFEST_SCHEMA, REJECTS_SCHEMA, empty_frame, write_manifest,
                          write_rejects)

from ..config import DataprepConfig, SplitConfig

GROUPS_FILE = "groups.csv"


def load_groups(raw_dir: str | os.PathLike) -> dict[str, str]:
    """`<raw>/groups.csv` (source_video,group) -> {relative path: group}; {} when absent."""
    path = Path(raw_dir) / GROUPS_FILE
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"source_video", "group"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected columns source_video,group; got {reader.fieldnames}")
        return {row["source_video"]: row["group"] for row in reader}


def _unit(name: str) -> float:
    return int(hashlib.sha256(name.encode("utf-8")).hexdigest()[:15], 16) / 16 ** 15


def assign_splits(groups: list[str], cfg: SplitConfig) -> dict[str, str]:
    """Groups ranked by a hash of their name fill train, val and test in the config's ratios
    (rounded, at least one test group from 2 groups and one val group from 3): deterministic,
    independent of input order, and exact in proportion even for a handful of groups."""
    total = cfg.train + cfg.val + cfg.test
    if total <= 0 or min(cfg.train, cfg.val, cfg.test) < 0:
        raise ValueError("split ratios must be >= 0 and add up to more than 0")
    ranked = sorted(set(groups), key=lambda g: (_unit(g), g))
    n = len(ranked)
    n_test = max(1 if n >= 2 else 0, int(round(n * cfg.test / total)))
    n_val = max(1 if n >= 3 else 0, int(round(n * cfg.val / total)))
    n_train = max(1 if n >= 1 else 0, n - n_test - n_val)
    n_val = max(0, n - n_train - n_test)
    split = {}
    for i, g in enumerate(ranked):
        split[g] = "train" if i < n_train else "val" if i < n_train + n_val else "test"
    return split


def assemble(results: list[dict], raw_dir: str | os.PathLike, out_dir: str | os.PathLike,
             cfg: DataprepConfig, run: dict) -> dict:
    """Write manifest.parquet, rejects.parquet and stats.json; return the stats."""
    groups_map = load_groups(raw_dir)
    clips = [row for r in results for row in r["clips"]]
    rejects = [row for r in results for row in r["rejects"]]
    manifest = pd.DataFrame(clips) if clips else empty_frame(MANIFEST_SCHEMA)
    if clips:
        manifest["group"] = [groups_map.get(s, s) for s in manifest["source_video"]]
        split = assign_splits(list(manifest["group"]), cfg.split)
        manifest["split"] = [split[g] for g in manifest["group"]]
        manifest = manifest.sort_values(["split", "clip_id"]).reset_index(drop=True)
    rejects_df = pd.DataFrame(rejects) if rejects else empty_frame(REJECTS_SCHEMA)
    if rejects:
        rejects_df = rejects_df.sort_values(["source_video", "source_start", "stage"], na_position="first").reset_index(drop=True)
    write_manifest(manifest, out_dir)
    write_rejects(rejects_df, out_dir)
    stats = make_stats(results, manifest, rejects_df, cfg, run)
    atomic_write(Path(out_dir) / "stats.json", json.dumps(stats, indent=1, default=str))
    return stats


def make_stats(results, manifest, rejects, cfg: DataprepConfig, run: dict) -> dict:
    source_s = sum(r["stats"]["duration_s"] for r in results)
    work_s = sum(r["stats"]["seconds"] for r in results)
    timings = Counter()
    for r in results:
        timings.update(r["stats"]["timings"])
    kept_s = float((manifest["n_frames"] / manifest["fps"]).sum()) if len(manifest) else 0.0
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "videos": len(results),
        "videos_rejected_whole": int(sum(1 for r in results if not r["clips"] and any(
            pd.isna(x["source_start"]) for x in r["rejects"]))),
        "clips_kept": int(len(manifest)),
        "rejects": int(len(rejects)),
        "rejects_by_stage_reason": {f"{s}: {r}": int(n) for (s, r), n in
                                    rejects.groupby(["stage", "reason"]).size().items()} if len(rejects) else {},
        "clips_by_split": {k: int(v) for k, v in manifest["split"].value_counts().items()} if len(manifest) else {},
        "groups_by_split": {k: int(v) for k, v in manifest.groupby("split")["group"].nunique().items()} if len(manifest) else {},
        "source_seconds": source_s, "kept_seconds": kept_s,
        "worker_seconds": work_s, "seconds_per_stage": dict(timings),
        "throughput_video_s_per_worker_s": source_s / work_s if work_s else None,
        # which sync measure decided (per video; "syncnet" or "offline"), see SyncConfig.backend
        "sync_backends": dict(Counter(r["stats"].get("notes", {}).get("sync_backend") for r in results
                                      if r["stats"].get("notes", {}).get("sync_backend"))),
        "run": run,
        "config": cfg.to_dict(),
    }
