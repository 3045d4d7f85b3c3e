"""Does the tiny model learn to LOOK (reference) and LISTEN (audio)? (issue 12)

Trains the tiny config on the synthetic corpus of emo/training/synthetic.py (each clip its own
background and face colours; a mouth that opens with the loudness of its tone-burst audio) and
measures, with `emo.diagnose`, on clips of identities never seen in training:

- looking: colour_follow (how far the frames' coarse colour layout moves towards a swapped
  reference; 1 = all the way) and closer_to_own (share of clips whose frames are nearer their own
  reference than a swapped one), plus the noise prediction's relative change;
- listening: the correlation over frames of the generated mouth region's brightness with the
  loudness of the audio that drove it, against the same with the other clip's audio (a control).
  The corpus draws a dark mouth that opens with loudness, so a listening model gives a clearly
  negative correlation with its own audio and about 0 with the other.

Each checkpoint of the run (after stage 1, in and after stage 2) is diagnosed, so the figures
come with the steps they took. Sizes: TRAIN_CLIPS identities, STAGE_STEPS; override with
EMO_LEARNING_BENCH_STEPS="s1,s2" (e.g. "400,600" for a longer run).
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

TRAIN_CLIPS = 8
HELDOUT_CLIPS = 4
STAGE_STEPS = (300, 300)          # stage 1, stage 2 (stage 3 trains speed only: not about looking/listening)


def _steps() -> tuple[int, int]:
    raw = os.environ.get("EMO_LEARNING_BENCH_STEPS")
    if not raw:
        return STAGE_STEPS
    s1, s2 = (int(v) for v in raw.split(","))
    return s1, s2


def run(out_dir) -> dict:
    import torch

    from emo.config import load_config
    from emo.diagnose import diagnose
    from emo.training.synthetic import make_synthetic_dataset
    from emo.training.train import main

    s1, s2 = _steps()
    with tempfile.TemporaryDirectory(prefix="emo-learning-bench-") as tmp:
        tmp = Path(tmp)
        # Backgrounds over the whole colour range: identities about 85 grey levels apart, above the
        # fitted tiny VAE's reconstruction error (tests/test_learning.py says why that matters).
        train_data = make_synthetic_dataset(tmp / "train", n_clips=TRAIN_CLIPS, n_frames=48, seed=0,
                                            background=(0, 255))
        heldout = make_synthetic_dataset(tmp / "heldout", n_clips=HELDOUT_CLIPS, n_frames=24, seed=1,
                                         background=(0, 255))
        cfg = load_config("tiny")
        mid = s1 + s2 // 2
        cfg.train.update(stages={1: {"steps": s1, "batch_size": 2}, 2: {"steps": s2}}, save_steps=[mid],
                         log_every=50, log_with=None)
        cfg.data.update(num_workers=0)
        t0 = time.time()
        result = main(cfg, train_data, tmp / "run", log_with=None)
        train_s = time.time() - t0
        rows = []
        for ckpt in result.checkpoints:
            t1 = time.time()
            d = diagnose(ckpt, heldout, split="train", n_clips=HELDOUT_CLIPS, steps=10, guidance=1.0)
            rows.append({"checkpoint": ckpt.name, "step": int(ckpt.name.split("-")[-1]), "stage": d["stage"],
                         "noise_rel_change": d["noise_prediction"]["rel_change"],
                         "looking": d["looking"], "listening": d["listening"], "verdict": d["verdict"],
                         "frames_mean_abs_change": d["frames"]["mean_abs_change"],
                         "diagnose_s": round(time.time() - t1, 1)})
    last = rows[-1]
    ls = last["listening"]
    fmt = lambda v: "n/a" if v is None else f"{v:+.2f}"  # noqa: E731
    summary = (f"after {last['step']} steps ({s1} stage 1 + {s2} stage 2, {train_s:.0f} s): looking colour_follow "
               f"{last['looking']['colour_follow']:.2f}, closer to own reference {last['looking']['closer_to_own']:.0%}; "
               f"listening mouth~own audio r {fmt(ls['mouth_audio_corr'])} vs other audio "
               f"{fmt(ls['mouth_other_audio_corr'])} ({HELDOUT_CLIPS} held-out identities)")
    return {"config": "tiny", "device": "cuda" if torch.cuda.is_available() else "cpu",
            "train_clips": TRAIN_CLIPS, "heldout_clips": HELDOUT_CLIPS, "stage_steps": [s1, s2],
            "vae_fit_steps": cfg.train.get("vae_fit_steps"), "train_seconds": round(train_s, 1),
            "losses_every_50": [round(v, 4) for _, _, v in result.losses[::50]],
            "checkpoints": rows, "summary": summary}
