"""Run the pipeline over a raw folder: a process pool, progress, crash isolation, resume.

Each finished video's result goes atomically to `<out>/.work/<key>.json`, the key made from its
relative path, size, modification time and the config hash; a restarted run with the same
arguments skips those videos. The tables are merged from these files at the end, so a killed
run never leaves a half-written manifest (and clips are written atomically by write_video).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from tqdm import tqdm

from emo.fileio import atomic_write

from .config import DataprepConfig, config_hash
from .pipeline import process_video
from .stages.common import reject_row
from .stages.manifest import assemble

VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".flv", ".mpg", ".mpeg", ".ts"}


def find_videos(raw_dir: str | os.PathLike) -> list[str]:
    """Relative paths (POSIX) of the video files under raw_dir, sorted; hidden files skipped."""
    raw = Path(raw_dir)
    if not raw.is_dir():
        raise FileNotFoundError(f"raw folder not found: {raw}")
    out = []
    for p in raw.rglob("*"):
        rel = p.relative_to(raw)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.suffix.lower() in VIDEO_EXTENSIONS and not p.is_dir():
            out.append(rel.as_posix())
    return sorted(out)


def work_key(raw_dir, rel: str, cfg_hash: str) -> str:
    p = Path(raw_dir) / rel
    try:
        st = p.stat()
        ident = f"{rel}|{st.st_size}|{st.st_mtime_ns}|{cfg_hash}"
    except OSError:
        ident = f"{rel}|missing|{cfg_hash}"
    return hashlib.sha256(ident.encode("utf-8")).hexdigest()[:20]


def crashed_result(rel: str, detail: str) -> dict:
    return {"source_video": rel, "clips": [],
            "rejects": [reject_row(rel, "runner", "worker crashed", detail)],
            "stats": {"seconds": 0.0, "timings": {}, "duration_s": 0.0, "fps": None,
                      "n_shots": 0, "n_candidate_clips": 0, "notes": {}}}


def _worker(raw_dir: str, rel: str, out_dir: str, cfg: DataprepConfig) -> dict:
    """Runs in a pool process: any Python exception becomes a "worker crashed" reject."""
    try:
        return process_video(raw_dir, rel, out_dir, cfg)
    except Exception:  # noqa: BLE001 - one broken video must never stop the run
        return crashed_result(rel, traceback.format_exc())


def _save_result(work_dir: Path, key: str, result: dict) -> None:
    atomic_write(work_dir / f"{key}.json", json.dumps(result, default=float))


def _load_result(work_dir: Path, key: str) -> dict | None:
    path = work_dir / f"{key}.json"
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None     # a damaged result is simply redone
    if any(r["stage"] == "runner" for r in result.get("rejects", [])):
        return None     # crashes are retried on restart (they may have been transient)
    return result


def _run_pool(raw: str, todo: dict[str, str], out: str, cfg: DataprepConfig, workers: int,
              on_result) -> list[str]:
    """Process `todo` {rel: key}; return the videos whose worker process died (segfault, OOM)."""
    died = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_worker, raw, rel, out, cfg): rel for rel in todo}
        for fut in as_completed(futures):
            rel = futures[fut]
            try:
                on_result(rel, fut.result())
            except BrokenProcessPool:
                died.append(rel)
    return died


def run(raw_dir: str | os.PathLike, out_dir: str | os.PathLike, cfg: DataprepConfig,
        workers: int = 1, progress: bool = True) -> dict:
    raw, out = Path(raw_dir).resolve(), Path(out_dir).resolve()
    videos = find_videos(raw)
    work_dir = out / ".work"
    work_dir.mkdir(parents=True, exist_ok=True)
    chash = config_hash(cfg)
    keys = {rel: work_key(raw, rel, chash) for rel in videos}
    results = {rel: r for rel in videos if (r := _load_result(work_dir, keys[rel])) is not None}
    todo = {rel: keys[rel] for rel in videos if rel not in results}
    t0 = time.perf_counter()
    bar = tqdm(total=len(videos), initial=len(results), desc="dataprep", unit="video",
               disable=not progress)

    def on_result(rel, result):
        _save_result(work_dir, keys[rel], result)
        results[rel] = result
        bar.update(1)

    if workers <= 1:
        for rel in todo:
            on_result(rel, _worker(str(raw), rel, str(out), cfg))
    else:
        died = _run_pool(str(raw), todo, str(out), cfg, workers, on_result)
        # A dead process breaks the whole pool, so the innocent are retried one at a time.
        for rel in died:
            again = _run_pool(str(raw), {rel: keys[rel]}, str(out), cfg, 1, on_result)
            if again:
                on_result(rel, crashed_result(rel, "the worker process died (killed or crashed) twice"))
    bar.close()
    run_info = {"raw": str(raw_dir), "workers": workers, "config_hash": chash,
                "wall_seconds_this_run": time.perf_counter() - t0,
                "videos_processed_this_run": len(todo), "videos_reused": len(videos) - len(todo)}
    ordered = [results[rel] for rel in videos]
    kept = {row["clip_id"] for r in ordered for row in r["clips"]}
    run_info["stale_clip_files_removed"] = remove_stale_clips(out, kept)
    return assemble(ordered, raw, out, cfg, run_info)


def remove_stale_clips(out: Path, kept_ids: set[str]) -> int:
    """Clip files no manifest row points to (left by a run under another config, or by a
    killed one) would make the folder disagree with its tables: remove them."""
    removed = 0
    for p in (out / "clips").glob("*"):
        stem = p.name.split(".", 1)[0] if not p.name.startswith(".") else None
        if p.is_file() and (stem is None or stem not in kept_ids):
            p.unlink()
            removed += 1
    return removed
