"""Run the pipeline over a raw folder: any executor, progress, crash isolation, honest resume.

The shape is datatrove's: `process_video` runs the steps on one video; an executor
(`dataprep.executors`: a local process pool, or Ray) only schedules `VideoWork` jobs; each job
writes its video's record atomically to `<out>/.work/<key>.json` where it ran; and the merge
into manifest.parquet, rejects.parquet and stats.json (`stages.manifest.assemble`) is this
module's, the same whichever executor ran the jobs.

Resume reuses a record only when it cannot be stale:
- its key is made from the video's relative path, size and modification time, the config hash,
  the code version (a hash of the code that computes clips, and the versions of the libraries
  it calls) and the step list;
- every file it lists (clips and labels) still exists with the size it had when written;
- it is not a crash (crashes are retried: they may have been transient).
An output folder belongs to one config: `<out>/.owner.json` names it, and a run with another
config stops with an error naming the settings that differ, unless told to start afresh
(`fresh=True`, `--fresh`). After a code change every video is redone. The tables exist only for
a completed run: they are removed when a run starts that has work to do and rewritten at its end.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from tqdm import tqdm

from emo.fileio import atomic_write

from .config import DataprepConfig, config_hash
from .executors import Executor, Job, make_executor
from .pipeline import process_video
from .stages.common import reject_row
from .stages.manifest import assemble

VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".flv", ".mpg", ".mpeg", ".ts"}
RECORD_VERSION = 2
WORK_DIR = ".work"
OWNER_FILE = ".owner.json"          # in the output folder: which config it belongs to
TABLES = ("manifest.parquet", "rejects.parquet", "stats.json")
RUNNER_STAGE = "runner"

# The code whose change can change a clip or a row: hashed into every work key.
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]
CODE_PATHS = ("dataprep/config.py", "dataprep/decode.py", "dataprep/pipeline.py", "dataprep/stages",
              "emo/media", "emo/manifest.py")
LIBRARIES = ("av", "mediapipe", "scenedetect", "scenedetect-headless", "numpy", "scipy",
             "opencv-python", "opencv-contrib-python", "silero-vad", "resemblyzer", "torch")


class OutFolderConflict(RuntimeError):
    """--out holds results of another configuration (or of unknown origin)."""


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of the source files in CODE_PATHS and of the installed versions of LIBRARIES."""
    h = hashlib.sha256()
    for entry in CODE_PATHS:
        root = _PACKAGE_ROOT / entry
        files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
        for path in files:
            h.update(path.relative_to(_PACKAGE_ROOT).as_posix().encode() + b"\0")
            h.update(path.read_bytes())
    for lib in LIBRARIES:
        try:
            h.update(f"{lib}=={metadata.version(lib)}\0".encode())
        except metadata.PackageNotFoundError:
            pass
    return h.hexdigest()[:12]


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


def _steps_id(steps) -> str:
    if steps is None:
        return "STEPS"
    return ",".join(f"{name}={fn.__module__}.{fn.__qualname__}" for name, fn in steps)


def work_key(raw_dir, rel: str, cfg_hash: str, code: str | None = None, steps=None) -> str:
    p = Path(raw_dir) / rel
    try:
        st = p.stat()
        source = f"{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        source = "missing"
    ident = f"{rel}|{source}|{cfg_hash}|{code or code_version()}|{_steps_id(steps)}"
    return hashlib.sha256(ident.encode("utf-8")).hexdigest()[:20]


def crashed_result(rel: str, detail: str, reason: str = "worker crashed") -> dict:
    return {"source_video": rel, "clips": [],
            "rejects": [reject_row(rel, RUNNER_STAGE, reason, detail)],
            "stats": {"seconds": 0.0, "timings": {}, "duration_s": 0.0, "fps": None,
                      "n_shots": 0, "n_candidate_clips": 0, "notes": {}}}


def is_crash(result: dict) -> bool:
    return any(r["stage"] == RUNNER_STAGE for r in result.get("rejects", []))


def written_files(out: Path, result: dict) -> dict[str, int]:
    """{path relative to out: size in bytes} of every file the result's rows point to."""
    files = {}
    for row in result["clips"]:
        for col in ("clip_path", "labels_path"):
            files[row[col]] = (out / row[col]).stat().st_size
    return files


@dataclass
class VideoWork:
    """What an executor runs for one job: the steps on one video, then its record, written
    atomically where the job ran. Picklable; the executors know nothing else of it."""
    raw: str
    out: str
    cfg: DataprepConfig
    config_hash: str
    code_version: str
    steps: list | None = None

    def __call__(self, job: Job, worker: dict) -> dict:
        if code_version() != self.code_version:
            raise RuntimeError(f"worker {worker} runs code version {code_version()}, the driver "
                               f"{self.code_version}: install the same toolkit on every node")
        try:
            result = process_video(self.raw, job.name, self.out, self.cfg, self.steps)
        except Exception:  # noqa: BLE001 - one broken video must never stop the run
            result = crashed_result(job.name, traceback.format_exc())
        result["files"] = written_files(Path(self.out), result)
        save_record(Path(self.out), job, result, worker, self)
        return result


def save_record(out: Path, job: Job, result: dict, worker: dict, work: VideoWork) -> None:
    result.update(record_version=RECORD_VERSION, key=job.key, config_hash=work.config_hash,
                  code_version=work.code_version, worker=worker)
    atomic_write(out / WORK_DIR / f"{job.key}.json", json.dumps(result, default=float))


def load_record(out: Path, job: Job) -> tuple[dict | None, str | None]:
    """(the record, None) when it can be reused; (None, why not) otherwise (why None: absent)."""
    path = out / WORK_DIR / f"{job.key}.json"
    if not path.is_file():
        return None, None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None, "record unreadable"
    if record.get("record_version") != RECORD_VERSION or record.get("key") != job.key:
        return None, "record of another version"
    if is_crash(record):
        return None, "crashed before"
    for rel, size in record.get("files", {}).items():
        p = out / rel
        if not p.is_file():
            return None, "clip file missing"
        if p.stat().st_size != size:
            return None, "clip file changed"
    return record, None


def _config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    diffs = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _config_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            diffs.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return diffs


def clear_results(out: Path) -> None:
    """Remove what runs write (clips/, .work/, the tables), nothing else."""
    for name in ("clips", WORK_DIR):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in TABLES:
        (out / name).unlink(missing_ok=True)


def claim_out_folder(out: Path, cfg: DataprepConfig, chash: str, code: str, fresh: bool) -> str | None:
    """Make `out` this config's folder, or raise OutFolderConflict; return a note for stats."""
    owner_path = out / OWNER_FILE
    note = None
    if fresh:
        clear_results(out)
        note = "fresh: earlier results removed"
    elif owner_path.is_file():
        owner = json.loads(owner_path.read_text())
        if owner.get("config_hash") != chash:
            diff = _config_diff(owner.get("config", {}), cfg.to_dict())
            raise OutFolderConflict(
                f"{out} holds the results of another config (hash {owner.get('config_hash')}, this "
                f"run's {chash}; differs in {'; '.join(diff[:8]) or 'nothing readable'}). Mixing them "
                "would overwrite or delete that dataset's clips: choose another --out, or pass "
                "--fresh to delete those results and start over.")
        if owner.get("code_version") != code:
            note = f"code changed ({owner.get('code_version')} -> {code}): every video is redone"
    elif any((out / n).exists() for n in TABLES) or any((out / "clips").glob("*")) \
            or any((out / WORK_DIR).glob("*.json")):
        raise OutFolderConflict(
            f"{out} holds dataset files but no {OWNER_FILE} saying which config made "
            "them (an older toolkit, or another tool): choose another --out, or pass --fresh to "
            "delete them and start over.")
    atomic_write(owner_path, json.dumps({"config_hash": chash, "code_version": code,
                                         "config": cfg.to_dict(),
                                         "claimed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                                        indent=1, default=str))
    return note


def run(raw_dir: str | os.PathLike, out_dir: str | os.PathLike, cfg: DataprepConfig,
        workers: int = 1, progress: bool = True, *, executor: Executor | None = None,
        fresh: bool = False, max_retries: int = 2, steps=None) -> dict:
    """Process every video under raw_dir into out_dir; return the stats (also in stats.json).

    `executor` defaults to the local process pool with `workers` processes. `steps` replaces
    the pipeline's step list (tests, custom pipelines); it is part of the work key."""
    raw, out = Path(raw_dir).resolve(), Path(out_dir).resolve()
    executor = executor or make_executor("local", workers=workers, max_retries=max_retries)
    videos = find_videos(raw)
    chash, code = config_hash(cfg), code_version()
    out.mkdir(parents=True, exist_ok=True)
    note = claim_out_folder(out, cfg, chash, code, fresh)
    jobs = {rel: Job(rel, work_key(raw, rel, chash, code, steps)) for rel in videos}
    results, not_reused = {}, Counter()
    for rel, job in jobs.items():
        record, why = load_record(out, job)
        if record is not None:
            results[rel] = record
        elif why:
            not_reused[why] += 1
    todo = [job for rel, job in jobs.items() if rel not in results]
    if todo:
        for name in TABLES:       # the tables describe a completed run only
            (out / name).unlink(missing_ok=True)
    t0 = time.perf_counter()
    bar = tqdm(total=len(videos), initial=len(results), desc=f"dataprep ({executor.name})",
               unit="video", disable=not progress)
    lost = []

    def on_result(job: Job, result: dict) -> None:
        results[job.name] = result
        bar.update(1)

    def on_lost(job: Job, reason: str) -> None:
        lost.append(job.name)
        results[job.name] = crashed_result(job.name, reason, reason="worker lost")
        bar.update(1)

    work = VideoWork(str(raw), str(out), cfg, chash, code, steps)
    executor.run(work, todo, on_result, on_lost)
    bar.close()
    ordered = [results[rel] for rel in videos]
    this_run = [results[job.name] for job in todo]
    run_info = {
        "raw": str(raw_dir), "executor": executor.describe(), "workers": workers,
        "config_hash": chash, "code_version": code, "note": note,
        "wall_seconds_this_run": time.perf_counter() - t0,
        "videos_processed_this_run": len(todo), "videos_reused": len(videos) - len(todo),
        "records_not_reused": dict(not_reused),
        "videos_crashed": sum(1 for r in ordered if is_crash(r)), "videos_lost_this_run": len(lost),
        "videos_by_node_this_run": dict(Counter(r.get("worker", {}).get("node_id", "?") for r in this_run
                                                if r["source_video"] not in lost)),
    }
    kept = {row["clip_id"] for r in ordered for row in r["clips"]}
    run_info["stale_clip_files_removed"] = remove_stale_clips(out, kept)
    run_info["stale_records_removed"] = remove_stale_records(out, {job.key for job in jobs.values()})
    return assemble(ordered, raw, out, cfg, run_info)


def remove_stale_clips(out: Path, kept_ids: set[str]) -> int:
    """Clip files no manifest row points to (left by a killed run, or by a video that is gone
    or now rejected) would make the folder disagree with its tables: remove them."""
    removed = 0
    for p in (out / "clips").glob("*"):
        stem = p.name.split(".", 1)[0] if not p.name.startswith(".") else None
        if p.is_file() and (stem is None or stem not in kept_ids):
            p.unlink()
            removed += 1
    return removed


def remove_stale_records(out: Path, keys: set[str]) -> int:
    """Records of videos no longer in the raw folder, or made by other code: never reusable."""
    removed = 0
    for p in (out / WORK_DIR).glob("*.json"):
        if p.stem not in keys:
            p.unlink()
            removed += 1
    return removed
