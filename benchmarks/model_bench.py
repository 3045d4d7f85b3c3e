"""EMO model speed: seconds per denoising step for one clip (f = 12 frames + n = 4 motion frames,
conditional + unconditional pass of guidance) and peak memory, with random weights.

- tiny config on CPU (measured here);
- sd15 config's architecture at 512x512 (random weights, no files needed): measured only where it
  fits the time budget. On a CPU we first time ONE frame through the backbone; if the projected
  cost of a full step exceeds the budget it is reported as not measured, with the projection.
Each configuration runs in its own process, so peak RSS (CPU) is that configuration's own.
`run(out_dir)` returns the dict that benchmarks/run.py writes to out_dir/model.json.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import time
from pathlib import Path

from .memory import peak_rss_mb

REPO = Path(__file__).resolve().parents[1]
CPU_BUDGET_S = 120.0


def _measure(name: str, budget_s: float, queue) -> None:
    import torch

    from emo.config import load_config
    from emo.models.emo_model import EMOModel

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = load_config(name)
    for k in ("unet", "vae", "motion_module", "wav2vec2"):      # architecture only, random weights
        setattr(cfg.model.pretrained, k, None)
    t0 = time.perf_counter()
    model = EMOModel.from_config(cfg).eval().to(device)
    build_s = time.perf_counter() - t0
    m = cfg.model
    f, n, h = m.num_frames, m.num_motion_frames, m.sample_size // 8
    res = {"config": name, "device": device, "sample_size": m.sample_size, "frames": f, "motion_frames": n,
           "build_seconds": round(build_s, 2), "parameters": model.parameter_counts(),
           "torch_threads": torch.get_num_threads()}
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(1, 4, h, h, generator=g).to(device)
    motion = torch.randn(1, n, 4, h, h, generator=g).to(device)
    noisy = torch.randn(1, f, 4, h, h, generator=g).to(device)
    audio = torch.randn(1, f, 2 * cfg.audio.context + 1, model.audio_encoder.feature_dim, generator=g).to(device)
    mask = torch.ones(1, 1, m.sample_size, m.sample_size, device=device)
    speed = torch.full((1, f), 0.5, device=device)
    t = torch.tensor([500], device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.no_grad():
        if device == "cpu":
            # One frame, no temporal layers: projects the cost of a clip step before paying it.
            model.set_stage(1)
            t1 = time.perf_counter()
            model.predict_noise(noisy[:, :1], t, None, audio[:, :1], mask, speed[:, :1])
            one = time.perf_counter() - t1
            model.set_stage(3)
            projected = one * (2 * (f + n) + n + 1)   # 2 passes over f (+ n in temporal) + ReferenceNet
            res["one_frame_seconds"] = round(one, 3)
            res["projected_step_seconds"] = round(projected, 1)
            if projected > budget_s:
                res["status"] = (f"not measured on this machine: a step is projected at {projected:.0f} s "
                                 f"(> {budget_s:.0f} s budget) on {os.cpu_count()} CPU cores")
                res["peak_rss_mb"] = round(peak_rss_mb(), 1)
                queue.put(res)
                return
        sync()
        t1 = time.perf_counter()
        bank = model.reference_bank(ref, motion)
        sync()
        res["reference_net_seconds_per_clip"] = round(time.perf_counter() - t1, 4)
        times = []
        for _ in range(3 if device == "cuda" or name == "tiny" else 1):
            sync()
            t1 = time.perf_counter()
            model.predict_noise(noisy, t, bank, audio, mask, speed)            # conditional
            model.predict_noise(noisy, t, bank.without_reference(), None, mask, speed)   # unconditional
            sync()
            times.append(time.perf_counter() - t1)
    res["seconds_per_step"] = round(min(times), 4)
    res["steps_timed"] = len(times)
    res["status"] = "ok"
    if device == "cuda":
        res["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    res["peak_rss_mb"] = round(peak_rss_mb(), 1)
    queue.put(res)


def _in_process(name: str, budget_s: float) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_measure, args=(name, budget_s, q))
    p.start()
    p.join(timeout=budget_s * 3 + 300)
    if p.is_alive():
        p.terminate()
        return {"config": name, "status": "not measured: timed out"}
    return q.get() if not q.empty() else {"config": name, "status": f"failed (exit code {p.exitcode})"}


def run(out_dir: str | os.PathLike = REPO / "benchmarks" / "results") -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    doc = {"what": "seconds per denoising step of one clip (f=12 + 4 motion frames, guidance: 2 passes)",
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
           "results": [_in_process("tiny", CPU_BUDGET_S), _in_process("sd15", CPU_BUDGET_S)]}
    doc["summary"] = "; ".join(
        f"{r['config']}: {r['seconds_per_step']} s/step on {r.get('device')}" if r.get("status") == "ok"
        else f"{r['config']}: {r.get('status')}" for r in doc["results"])
    return doc


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
