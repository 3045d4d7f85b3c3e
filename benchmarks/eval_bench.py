"""Evaluation throughput on CPU: frames scored per second for each metric, run on its own.

Each metric gets fresh samples (empty caches), so its figure includes everything it needs
(MediaPipe analysis, face crops, network forward passes) as if it were the only metric; in a
real run metrics share that work through the sample cache, so the harness is faster than the
sum. Metrics whose weights are missing are listed as unavailable, with the reason.

Samples: two 50-frame windows of a real talking-face clip from ../shared when present (so the
face-based metrics do real work), else synthetic frames. `run(out_dir)` returns the figures;
`python -m benchmarks.run --only eval` writes them to benchmarks/results/eval.json.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL_CLIP = Path(os.environ.get("EMO_SHARED_DIR", REPO.parent / "shared")) / "data" / "clips" / "talk_vox_741400163.mp4"


def bench_samples(n_clips: int = 2, n_frames: int = 50, seed: int = 0):
    """(samples, description): generated = ground truth + noise, reference = first frame."""
    from eval.metrics.base import ClipSample
    rng = np.random.default_rng(seed)
    if REAL_CLIP.is_file():
        from emo.media import load_audio, read_frames
        frames = read_frames(REAL_CLIP, end=n_clips * n_frames / 25.0 + 0.1)
        audio = load_audio(REAL_CLIP)
        source = f"{REAL_CLIP.name} ({frames.shape[2]}x{frames.shape[1]}, 25 fps)"
    else:
        frames = rng.integers(0, 255, (n_clips * n_frames, 128, 128, 3), dtype=np.uint8)
        audio = rng.normal(0, 0.1, n_clips * n_frames * 640).astype(np.float32)
        source = "synthetic noise frames 128x128 (../shared absent: face metrics find no face)"

    def make():
        out = []
        for i in range(n_clips):
            gt = frames[i * n_frames:(i + 1) * n_frames]
            gen = np.clip(gt.astype(np.int16) + rng.integers(-8, 9, gt.shape), 0, 255).astype(np.uint8)
            out.append(ClipSample(f"bench{i}", 25.0, gen, gt, gt[0],
                                  audio[i * n_frames * 640:(i + 1) * n_frames * 640], 16000))
        return out
    return make, source


def time_metric(metric, samples) -> dict:
    t0 = time.perf_counter()
    frames = 0
    if metric.level == "set":
        gen, real = [], []
        for s in samples:
            g, r = metric.features(s)
            gen.append(g)
            real.append(r)
            frames += s.n_frames
        t1 = time.perf_counter()
        metric.aggregate(gen, real)
        agg = time.perf_counter() - t1
    else:
        for s in samples:
            metric.score_clip(s)
            frames += s.n_frames
        agg = None
    total = time.perf_counter() - t0
    out = {"status": "ok", "frames": frames, "seconds": round(total, 3),
           "frames_per_second": round(frames / total, 2) if total > 0 else None}
    if agg is not None:
        out["aggregate_seconds"] = round(agg, 4)  # one aggregate; the bootstrap repeats it n_bootstrap times
    return out


def time_bootstrap(n_clips: int = 100, n_bootstrap: int = 1000) -> float:
    from eval.scoring import BootstrapConfig, bootstrap_mean
    v = np.random.default_rng(0).normal(size=n_clips)
    t0 = time.perf_counter()
    bootstrap_mean(v, BootstrapConfig(n_bootstrap=n_bootstrap), "bench")
    return round(time.perf_counter() - t0, 4)


def time_set_statistics(n_clips: int = 20, frames: int = 50, dim: int = 52, n_bootstrap: int = 200) -> dict:
    """Seconds of a set-level interval and of one paired comparison (Frechet distance of `dim`-d
    features, e.g. E-FID(blendshapes)); the report's comparisons run one per pair of systems."""
    from eval.metrics.frechet import FrechetOfFeatures
    from eval.scoring import BootstrapConfig, bootstrap_set, paired_set_difference

    class FD(FrechetOfFeatures):
        name, direction = "bench_fd", "lower"

    rng = np.random.default_rng(0)
    gen = [rng.normal(size=(frames, dim)) for _ in range(n_clips)]
    other = [rng.normal(size=(frames, dim)) for _ in range(n_clips)]
    real = [rng.normal(size=(frames, dim)) for _ in range(n_clips)]
    cfg = BootstrapConfig(n_bootstrap=n_bootstrap)
    t0 = time.perf_counter()
    bootstrap_set(FD(), gen, real, cfg)
    t1 = time.perf_counter()
    paired_set_difference(FD(), gen, other, real, cfg)
    t2 = time.perf_counter()
    return {"clips": n_clips, "frames_per_clip": frames, "dim": dim, "n_bootstrap": n_bootstrap,
            "interval_seconds": round(t1 - t0, 3), "paired_comparison_seconds": round(t2 - t1, 3)}


def run(out_dir: str | os.PathLike = REPO / "benchmarks" / "results", weights_dir=None) -> dict:
    """The benchmark as a dict (benchmarks/run.py writes it to out_dir/eval.json with machine info)."""
    import torch
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    from eval.metrics import all_metrics

    make, source = bench_samples()
    results = {}
    for metric in all_metrics(weights_dir):
        status = metric.status()
        if status != "ok":
            results[metric.name] = {"status": status}
            continue
        try:
            results[metric.name] = time_metric(metric, make())
        except Exception as exc:  # a metric that fails here is reported, not hidden
            results[metric.name] = {"status": f"error: {type(exc).__name__}: {exc}"[:300]}
    timed = {k: v["frames_per_second"] for k, v in results.items() if v.get("frames_per_second")}
    summary = ", ".join(f"{k} {v:g} fps" for k, v in timed.items()) or "no metric available"
    return {"benchmark": "eval metrics, frames scored per second per metric (each on its own, CPU)",
            "summary": summary, "samples": source, "torch_threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(),
            "bootstrap_mean_seconds_100_clips_1000_resamples": time_bootstrap(),
            "set_level_statistics": time_set_statistics(), "metrics": results}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
