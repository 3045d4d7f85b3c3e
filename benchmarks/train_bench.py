"""EMO training speed: seconds per optimizer step of the tiny config, per stage (stage 2 is the
headline: 4 motion + 12 frames, audio and temporal layers on), through the real loop
(emo.training.train.main: data decoding, VAE encoding, forward, backward, AdamW) on a small
synthetic dataset at the tiny config's 64 x 64 pixels. Batch size 1, one process, fp32.

Per-step times come from the loop's own log (log_every = 1); the first WARMUP steps of each stage
are left out (allocator and kernel warm-up). The stage-1 saving from skipping the temporal modules
is benchmarks/stage1_skip_bench.py. On a shared machine the median moves with other
load; the minimum is reported beside it. `run(out_dir)` returns the dict that
benchmarks/run.py writes to out_dir/train.json.
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

STEPS = 8
WARMUP = 2


def run(out_dir) -> dict:
    import torch

    from emo.config import load_config
    from emo.training.synthetic import make_synthetic_dataset
    from emo.training.train import main

    threads = max(1, min(4, os.cpu_count() or 1))
    torch.set_num_threads(threads)
    cfg = load_config("tiny")
    cfg.data["num_workers"] = 0          # measure the step itself, decoding included, in one process
    cfg.train.update(stages={s: {"steps": STEPS, "batch_size": 1} for s in (1, 2, 3)},
                     save_every=0, log_every=1, log_with=None,
                     vae_fit_steps=0)            # the VAE fit runs once before training: not a step
    result = {"config": "tiny", "device": "cuda" if torch.cuda.is_available() else "cpu",
              "torch_threads": threads, "batch_size": 1, "steps_per_stage": STEPS, "warmup_steps": WARMUP,
              "sample_size": cfg.model.sample_size, "frames": cfg.model.num_frames,
              "motion_frames": cfg.model.num_motion_frames}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_synthetic_dataset(Path(tmp) / "data", frame_counts=[40, 32], size=cfg.model.sample_size)
        t0 = time.perf_counter()
        out = main(cfg, data, Path(tmp) / "run", log_with=None)
        result["total_seconds"] = round(time.perf_counter() - t0, 2)
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "train_log.jsonl").read_text().splitlines()]
    for stage in (1, 2, 3):
        times = [r["time"] for r in rows if r["stage"] == stage]
        steps = [b - a for a, b in zip(times, times[1:])][WARMUP - 1:]
        result[f"stage{stage}_seconds_per_step"] = round(statistics.median(steps), 3)
        result[f"stage{stage}_seconds_per_step_min"] = round(min(steps), 3)   # least disturbed by other load
        result[f"stage{stage}_trainable_parameters"] = out.trainable[stage]["total"]
    result["seconds_per_step"] = result["stage2_seconds_per_step"]
    result["final_loss"] = round(out.losses[-1][2], 4)
    return result


if __name__ == "__main__":
    print(json.dumps(run(Path(__file__).parent / "results"), indent=1))
