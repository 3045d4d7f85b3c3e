"""Data-preparation speed on one real clip: the whole per-video pipeline beside a plain decode of
the same file, in the same process, so the ratio does not depend on the machine.

Measured: plain decode (PyAV, every frame to RGB, `emo.media.iter_frames`); the scan pass (one
decode feeding cut detection and the face landmarker) at several analysis strides; and the full
`process_video` (probe, diarize, scan, cut, faces, speech, sync, filter, crop + encode).
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMO_SHARED_DIR", REPO.parent / "shared"))
CLIPS = ("talk_hdtf_moore4.mp4", "talk_lp_d6.mp4")
STRIDES = (1, 2, 3, 5)


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _cpu_timed(fn):
    """(wall seconds, CPU seconds of this process and its threads, result). CPU time is the
    steadier figure on a shared machine: other people's jobs stretch wall time, not CPU time."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def _landmarks(observed: dict, n_frames: int):
    """Per-frame landmarks (interpolated as the faces stage does) and the median face height."""
    from dataprep.stages.faces import interp_rows

    known = sorted(i for i, f in observed.items() if f is not None)
    values = np.stack([observed[i].landmarks for i in known])
    heights = [observed[i].box[3] - observed[i].box[1] for i in known]
    return interp_rows(np.array(known, float), values, np.arange(n_frames, dtype=float)), float(np.median(heights))


def run(out_dir: Path) -> dict:
    clip = next((SHARED / "data" / "clips" / c for c in CLIPS if (SHARED / "data" / "clips" / c).is_file()), None)
    mp_dir = SHARED / "models" / "mediapipe"
    if clip is None or not mp_dir.is_dir():
        return {"status": f"unavailable: needs {SHARED}/data/clips/{CLIPS[0]} and {mp_dir} "
                          "(the shared test media); set EMO_SHARED_DIR to their parent folder"}
    os.environ.setdefault("EMO_MEDIAPIPE_DIR", str(mp_dir))
    from dataprep.config import CONFIG_DIR, load_config
    from dataprep.pipeline import process_video
    from dataprep.stages.common import VideoRecord
    from dataprep.stages.probe import probe
    from dataprep.stages.scan import scan
    from emo.media import iter_frames, probe_video

    info = probe_video(clip)
    video_s = info.duration
    cfg = load_config(CONFIG_DIR / "default.yaml")

    def decode():
        return sum(1 for _ in iter_frames(clip))

    decode()                                   # warm the file cache and the codec
    runs = [_cpu_timed(decode) for _ in range(3)]
    decode_s, decode_cpu = min(r[0] for r in runs), min(r[1] for r in runs)
    n = runs[0][2]
    result = {"clip": clip.name, "video_seconds": round(video_s, 3), "frames": n,
              "size": [info.width, info.height], "decode_seconds": round(decode_s, 3),
              "decode_cpu_seconds": round(decode_cpu, 3),
              "decode_video_s_per_s": round(video_s / decode_s, 2), "scan": {}}

    record = probe(VideoRecord(clip.name, str(clip), ""), cfg)
    tracks = {}
    for stride in STRIDES:
        cfg.faces.stride = stride
        scan_s, scan_cpu, rec = _cpu_timed(
            lambda: scan(VideoRecord(clip.name, str(clip), "", info=record.info), cfg))
        tracks[stride] = _landmarks(rec.scan.faces, n)
        result["scan"][f"stride_{stride}"] = {"seconds": round(scan_s, 3),
                                               "ratio_to_decode": round(scan_s / decode_s, 2),
                                               "cpu_ratio_to_decode": round(scan_cpu / decode_cpu, 2)}
    # What a stride costs in accuracy: interpolated landmarks against those of every frame,
    # in face heights (the landmarker's own frame-to-frame noise is part of it).
    ref, height = tracks[STRIDES[0]]
    for stride in STRIDES[1:]:
        err = np.linalg.norm(tracks[stride][0][:, :, :2] - ref[:, :, :2], axis=-1).mean(1) / height
        result["scan"][f"stride_{stride}"]["landmark_error_face_heights"] = {
            "mean": round(float(err.mean()), 4), "p95": round(float(np.percentile(err, 95)), 4)}
    cfg = load_config(CONFIG_DIR / "default.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        process_video(clip.parent, clip.name, tmp, cfg)       # loads the diarization models once
        total_s, total_cpu, res = _cpu_timed(lambda: process_video(clip.parent, clip.name, tmp, cfg))
    timings = {k: round(v, 3) for k, v in res["stats"]["timings"].items()}
    no_diarize = total_s - res["stats"]["timings"].get("diarize", 0.0)
    result.update({
        "config": "dataprep/configs/default.yaml", "stride": cfg.faces.stride,
        "pipeline_seconds": round(total_s, 3), "pipeline_video_s_per_s": round(video_s / total_s, 2),
        "ratio_pipeline_to_decode": round(total_s / decode_s, 2),
        "ratio_pipeline_without_diarize_to_decode": round(no_diarize / decode_s, 2),
        "pipeline_cpu_seconds": round(total_cpu, 3),
        "ratio_pipeline_to_decode_cpu": round(total_cpu / decode_cpu, 2),
        "stage_seconds": timings, "clips_kept": len(res["clips"]),
        "rejects": [f"{r['stage']}: {r['reason']}" for r in res["rejects"]],
        "target": "pipeline within 2x of decode time",
    })
    result["summary"] = (f"{clip.name}: decode {video_s / decode_s:.1f} video-s/s, pipeline "
                         f"{video_s / total_s:.1f} video-s/s, ratio {total_s / decode_s:.2f}x "
                         f"({no_diarize / decode_s:.2f}x without diarization; CPU-time ratio "
                         f"{total_cpu / decode_cpu:.2f}x)")
    return result
