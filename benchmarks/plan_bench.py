"""The memory plan of the sd15 config (emo/plan.py) for each training stage, under a few precision /
sharding choices. Activations are counted once per stage (FakeTensorMode, reduced sizes, scaled and
checked at 96 px and the full 512 px); the rest is arithmetic. Predictions: no GPU measured them.
`run(out_dir)` returns the dict that benchmarks/run.py writes to out_dir/plan.json.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHOICES = {
    "1 GPU, fp32 weights + bf16 autocast, AdamW": dict(weights="fp32", optimizer="adamw"),
    "1 GPU, fp32 weights + bf16 autocast, 8-bit AdamW": dict(weights="fp32", optimizer="adamw8bit"),
    "8 GPUs, ZeRO-2, fp32 weights + bf16 autocast, AdamW": dict(weights="fp32", optimizer="adamw", zero=2, gpus=8),
    "8 GPUs, ZeRO-2, bf16 weights, AdamW": dict(weights="bf16", optimizer="adamw", zero=2, gpus=8),
    "8 GPUs, ZeRO-2, fp32 weights, 8-bit AdamW": dict(weights="fp32", optimizer="adamw8bit", zero=2, gpus=8),
}


def run(out_dir: str | os.PathLike = REPO / "benchmarks" / "results") -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from emo.config import load_config
    from torch._subclasses.fake_tensor import FakeTensorMode

    from emo.plan import GiB, Precision, activation_scaling, make_plan, parameter_table, plan_model

    cfg = load_config("sd15")
    stages, lines = {}, []
    for stage in (1, 2, 3):
        scaling = activation_scaling(cfg, stage, checkpointing=True)
        with FakeTensorMode():
            params = parameter_table(plan_model(cfg), stage)
        rows = {}
        for label, kw in CHOICES.items():
            for batch in (1, None):            # one sample, and the config's batch for the stage
                plan = make_plan(cfg, stage, Precision(**kw), batch_size=batch, checkpointing=True, scaling=scaling,
                                 parameters=params)
                key = f"{label}, batch {plan.activations['batch']}"
                rows[key] = {"total_gib": round(plan.total_bytes / GiB, 2),
                             "state_gib": {k: round(v / GiB, 2) for k, v in plan.state.items()},
                             "activations_gib": round(plan.activations["peak"] / GiB, 2),
                             "fits": plan.fits}
        stages[stage] = {"parameters": plan.parameters, "scaling": scaling, "plans": rows}
        best = min(rows.items(), key=lambda kv: kv[1]["total_gib"])
        lines.append(f"stage {stage}: {plan.parameters['trained'] / 1e6:.0f} M trained; "
                     + "; ".join(f"{k}: {v['total_gib']} GiB" for k, v in rows.items() if k.startswith("1 GPU, fp32 weights + bf16 autocast, AdamW, batch 1")
                                 or k.startswith("8 GPUs, ZeRO-2, fp32 weights, 8-bit AdamW"))
                     + f" (lowest: {best[1]['total_gib']} GiB)")
    return {"what": "predicted GPU memory per stage of sd15 (emo/plan.py; counted on CPU, no GPU measurement)",
            "stages": stages, "summary": " | ".join(lines)}


if __name__ == "__main__":
    print(json.dumps(run(), indent=1, default=str)[:4000])
