"""The audio cache: bytes per video-second and read time per training sample, the old layout
against the new one (emo/training/audio_cache.py).

- old: neighbour-stacked float32 (T, 2m + 1, D) in one safetensors file per clip; a sample opens
  the file (safetensors maps it) and indexes its 12 rows, as the dataset did before;
- new: unstacked float16 (T, D) .npy per clip; a sample memory-maps it, reads the 16 rows its
  window needs (m = 2 each side) and stacks them (`load_window`).

At wav2vec2-base's width (D = 12 layers x 768 = 9216) on a 12-s clip at 25 fps (T = 300), the
longest dataprep writes. The features are random numbers of that shape (the layout's cost does not
depend on their values; no wav2vec2-base weights are needed). Read time is measured cold (the file
dropped from the page cache with posix_fadvise(DONTNEED) before each read, as for a dataset larger
than RAM) and warm (in the page cache), with one torch thread as in a DataLoader worker. The files
are written under the system temp folder: on tmpfs the "cold" figure is a warm one. `run(out_dir)` returns the dict benchmarks/run.py writes.
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

D, CONTEXT, FPS, SECONDS, WINDOW, REPEATS = 9216, 2, 25.0, 12.0, 12, 30


def _drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def run(out_dir) -> dict:
    from safetensors.torch import load_file, save_file

    from emo.models.speed_encoder import stack_neighbours
    from emo.training import audio_cache as ac

    torch.set_num_threads(1)          # as in a DataLoader worker (emo.training.train._one_thread)
    T = int(SECONDS * FPS)
    feats = torch.randn(T, D, generator=torch.Generator().manual_seed(0))
    rng = np.random.default_rng(0)
    starts = rng.integers(0, T - WINDOW + 1, REPEATS)
    result = {"feature_dim": D, "context": CONTEXT, "frames": T, "clip_seconds": SECONDS, "window": WINDOW,
              "repeats": REPEATS}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old_path = tmp / "clip.safetensors"
        save_file({"features": stack_neighbours(feats[None], CONTEXT, dim=1)[0].contiguous()}, str(old_path))
        np.save(ac.feature_path(tmp, "clip"), feats.numpy().astype(np.float16))
        new_path = ac.feature_path(tmp, "clip")

        def read_old(start):
            full = load_file(str(old_path))["features"]
            return full[torch.from_numpy(np.minimum(start + np.arange(WINDOW), len(full) - 1))]

        def read_new(start):
            return ac.load_window(tmp, "clip", start + np.arange(WINDOW), CONTEXT)

        assert torch.allclose(read_old(5), read_new(5), rtol=1e-3, atol=1e-3)
        for name, path, read in (("old_stacked_fp32", old_path, read_old), ("new_unstacked_fp16", new_path, read_new)):
            size = path.stat().st_size
            timings = {}
            for mode in ("cold", "warm"):
                ts = []
                for s in starts:
                    if mode == "cold":
                        _drop_cache(path)
                    else:
                        read(int(s))
                    t0 = time.perf_counter()
                    read(int(s))
                    ts.append(time.perf_counter() - t0)
                timings[f"read_ms_per_sample_{mode}"] = round(statistics.median(ts) * 1000, 3)
            result[name] = {"bytes_per_clip": size, "bytes_per_video_second": round(size / SECONDS),
                            # bytes a sample touches (safetensors maps the old file: its 12 stacked rows)
                            "bytes_per_sample_read": (WINDOW * (2 * CONTEXT + 1) * D * 4 if name.startswith("old")
                                                      else (WINDOW + 2 * CONTEXT) * D * 2),
                            **timings}
    old, new = result["old_stacked_fp32"], result["new_unstacked_fp16"]
    result["size_ratio_old_over_new"] = round(old["bytes_per_clip"] / new["bytes_per_clip"], 2)
    result["cold_read_ratio_old_over_new"] = round(old["read_ms_per_sample_cold"] / new["read_ms_per_sample_cold"], 1)
    result["warm_read_ratio_old_over_new"] = round(old["read_ms_per_sample_warm"] / new["read_ms_per_sample_warm"], 1)
    hours = 250
    result["terabytes_for_250_hours"] = {"old": round(old["bytes_per_video_second"] * hours * 3600 / 1e12, 2),
                                         "new": round(new["bytes_per_video_second"] * hours * 3600 / 1e12, 2)}
    result["summary"] = (f"{old['bytes_per_video_second'] / 1e6:.2f} -> {new['bytes_per_video_second'] / 1e6:.2f} MB per "
                         f"video-second; cold read {old['read_ms_per_sample_cold']} -> {new['read_ms_per_sample_cold']} ms "
                         f"per sample")
    return result


if __name__ == "__main__":
    print(json.dumps(run(Path(__file__).parent / "results"), indent=1))
