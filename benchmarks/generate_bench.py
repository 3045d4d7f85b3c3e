"""Generation memory against the audio's length: peak RSS of `python -m emo generate` (tiny config,
--steps 2, CPU, fp32) for 10 s and 300 s of audio; the target is that the two lie within 10% of each
other (frames streamed to the encoder clip by clip, audio features stacked per clip).

Each case runs in its own process (`python -m emo generate ...` as a user would type it, wrapped
only to read that process's own peak RSS: VmHWM, see benchmarks/memory.py), so peaks do not mix.
Each length runs REPEATS times, alternating, and the medians are compared.
`run(out_dir)` returns the dict that benchmarks/run.py writes to out_dir/generate.json.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECONDS = (10.0, 300.0)
TARGET = 0.10
REPEATS = 3

# The child: run the CLI in-process (so its peak RSS is this process's) and print the peak.
CHILD = r"""
import json, sys, time
from benchmarks.memory import peak_rss_mb
args = sys.argv[1:]
t0 = time.perf_counter()
from emo.cli import main
main(args, standalone_mode=False)
print(json.dumps({"peak_rss_mb": peak_rss_mb(),
                  "seconds": time.perf_counter() - t0}))
"""


def _speech_like(seconds: float, seed: int = 0):
    import numpy as np
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
            + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def _child(args: list[str]) -> dict:
    # One thread: on a shared machine torch's thread pool spins against other processes (20x
    # slower here); peak memory does not depend on it.
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, env=env,
                          cwd=str(REPO))
    if proc.returncode != 0:
        return {"status": f"failed: {proc.stderr.strip()[-800:]}"}
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"status": "ok", "peak_rss_mb": round(doc["peak_rss_mb"], 1), "seconds": round(doc["seconds"], 1)}


def run(out_dir: str | os.PathLike = REPO / "benchmarks" / "results") -> dict:
    import numpy as np
    from PIL import Image

    from emo.media import probe_video, save_wav
    from emo.models.emo_model import EMOModel

    with tempfile.TemporaryDirectory(prefix="emo-gen-bench-") as tmp:
        tmp = Path(tmp)
        ckpt = EMOModel.from_config("tiny", seed=0).save_checkpoint(tmp / "tiny")
        image = tmp / "portrait.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(image)
        cases = []
        for repeat in range(REPEATS):
            for seconds in SECONDS:
                audio = tmp / f"speech_{seconds:.0f}s.wav"
                if not audio.exists():
                    save_wav(audio, _speech_like(seconds))
                out = tmp / f"out_{seconds:.0f}s.mp4"
                res = _child(["generate", "--image", str(image), "--audio", str(audio), "--checkpoint",
                              str(ckpt), "--out", str(out), "--steps", "2", "--no-crop", "--device", "cpu",
                              "--dtype", "fp32"])
                res.update(mode="streamed (python -m emo generate)", audio_seconds=seconds, repeat=repeat)
                if res["status"] == "ok":
                    res["frames_written"] = probe_video(out).n_frames
                cases.append(res)
    doc = {"what": "peak RSS of generation (tiny config, --steps 2, CPU fp32, one thread) against audio length",
           "target": f"300-s peak within {TARGET:.0%} of the 10-s peak (medians of {REPEATS} runs each)",
           "cases": cases}
    failed = [c for c in cases if c["status"] != "ok"]
    if not failed:
        peaks = {s_: [c["peak_rss_mb"] for c in cases if c["audio_seconds"] == s_] for s_ in SECONDS}
        short, long_ = (float(np.median(peaks[s_])) for s_ in SECONDS)
        growth = long_ / short - 1
        doc["median_peak_rss_mb"] = {f"{s_:.0f}s": float(np.median(peaks[s_])) for s_ in SECONDS}
        doc["growth_10s_to_300s"] = round(growth, 4)
        lows, highs = peaks[SECONDS[0]], peaks[SECONDS[1]]
        doc["growth_range"] = [round(min(highs) / max(lows) - 1, 4), round(max(highs) / min(lows) - 1, 4)]
        doc["meets_target"] = abs(growth) <= TARGET
        doc["summary"] = (f"median peak RSS {short:.0f} MB (10 s) vs {long_:.0f} MB (300 s): {growth:+.1%} "
                          f"(runs: {peaks[SECONDS[0]]} vs {peaks[SECONDS[1]]}; target within {TARGET:.0%})")
    else:
        doc["status"] = "failed"
        doc["summary"] = "; ".join(f"{c['audio_seconds']} s: {c['status']}" for c in failed)
    return doc


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
