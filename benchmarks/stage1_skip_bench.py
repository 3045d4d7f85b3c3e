"""Stage 1 without the temporal modules: seconds per stage-1 training step of the tiny config
(forward + backward of StageLoss on a fixed batch of 2 frames at 64 x 64, no data loading) with the
temporal modules skipped (as the backbone does now) and run with their output thrown away (as it
did before). The two alternate step by step in one process, so machine load affects both alike;
one torch thread (a shared machine's cores are oversubscribed; threads spinning on them made every
figure 50-100x slower in a trial). `run(out_dir)` returns the dict benchmarks/run.py writes.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

REPEATS, WARMUP = 30, 3


def run(out_dir) -> dict:
    import torch

    from emo.config import load_config
    from emo.models.emo_model import EMOModel
    from emo.training.step import StageLoss

    torch.set_num_threads(1)
    model = EMOModel.from_config(load_config("tiny"))
    model.set_stage(1)
    loss_fn = StageLoss(model, 1, 0)
    g = torch.Generator().manual_seed(0)
    batch = {"frames": torch.rand(2, 1, 3, 64, 64) * 2 - 1, "reference": torch.rand(2, 3, 64, 64) * 2 - 1,
             "face_mask": torch.ones(2, 1, 64, 64), "frame_valid": torch.ones(2, 1, dtype=torch.bool),
             "motion_valid": torch.zeros(2, 0, dtype=torch.bool), "speed": torch.zeros(2, 1)}
    modules = model.backbone.temporal_modules()
    skipping = [type(m) for m in modules]
    running = [t.__mro__[1] for t in skipping]          # the same module class without the skip

    def step() -> float:
        t0 = time.perf_counter()
        loss_fn(batch, g).backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    times = {"skipped": [], "run_and_discarded": []}
    for i in range(REPEATS + WARMUP):
        for mode, classes in (("skipped", skipping), ("run_and_discarded", running)):
            for m, c in zip(modules, classes):
                m.__class__ = c
            t = step()
            if i >= WARMUP:
                times[mode].append(t)
    for m, c in zip(modules, skipping):
        m.__class__ = c
    skipped, ran = statistics.median(times["skipped"]), statistics.median(times["run_and_discarded"])
    pairs = [a / b for a, b in zip(times["skipped"], times["run_and_discarded"])]
    saving = 1 - skipped / ran
    return {"config": "tiny", "batch": 2, "torch_threads": 1, "repeats": REPEATS,
            "seconds_per_step_skipped": round(skipped, 4), "seconds_per_step_run_and_discarded": round(ran, 4),
            "saving_fraction": round(saving, 3),
            "paired_ratio_quartiles": [round(q, 3) for q in statistics.quantiles(pairs, n=4)],
            "summary": f"stage-1 step {ran:.3f} -> {skipped:.3f} s ({saving:.1%} saved)"}


if __name__ == "__main__":
    print(json.dumps(run(Path(__file__).parent / "results"), indent=1))
