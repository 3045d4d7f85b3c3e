"""Reading the trainer's frames: PyAV vs decord for one training sample of a 512 x 512 clip.

The access pattern is ClipDataset's (stages 2/3): a random window of n + f = 16 contiguous frames
and one reference frame elsewhere in the clip, from clips of 3, 8 and 12 s at 25 fps (dataprep's
range), encoded as dataprep's export encodes them (libx264, crf 18, x264's default GOP). Readers:

- pyav_seek: emo.media.video.iter_frames as the dataset used it (seek to the keyframe before the
  window, decode forward; one pass for the window, one for the reference);
- pyav_span: one PyAV pass over the span from the first to the last frame the sample needs
  (seek to the keyframe before the first; `emo.training.dataset.read_frames_at`, what the dataset
  uses now);
- pyav_full: PyAV decoding from the first frame (what a reader without seeking costs);
- decord: decord.VideoReader(...).get_batch(indices), the reader opened per sample as a
  DataLoader worker does.

Every reader uses ONE decoding thread: the figure is per DataLoader worker (a loader runs several).
Content: frames of a real talking-head clip from ../shared/data when present (resized to 512), else
synthetic moving shapes; compression and so decode cost depend on content, so the source is named
in the results. `run(out_dir)` returns the dict benchmarks/run.py writes to video_read.json.
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

SIZE, FPS, WINDOW = 512, 25.0, 16
DURATIONS = (3.0, 8.0, 12.0)
SAMPLES_PER_CLIP = 12
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "clips" / "talk_lp_d6.mp4"


def _source_frames(n: int) -> tuple[np.ndarray, str]:
    from PIL import Image

    from emo.media.video import iter_frames
    if SHARED.is_file():
        frames = []
        for _, rgb in iter_frames(SHARED):
            frames.append(np.asarray(Image.fromarray(rgb).resize((SIZE, SIZE), Image.BICUBIC)))
            if len(frames) == n:
                break
        return np.stack(frames), f"real: {SHARED.name} (480x480 resized to 512)"
    t = np.arange(n)[:, None, None]
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    disc = ((xx[None] - 256 - 60 * np.sin(t / 20)) ** 2 + (yy[None] - 256) ** 2 < 150 ** 2)
    img = np.where(disc[..., None], 200, 60).astype(np.uint8) + (xx[None, ..., None] % 7).astype(np.uint8)
    return np.broadcast_to(img, (n, SIZE, SIZE, 3)).copy(), "synthetic moving disc"


def _pyav_seek(path: Path, window: np.ndarray, ref: int) -> int:
    from emo.media.video import iter_frames
    got = 0
    for indices in (window, np.array([ref])):
        lo, hi = int(indices.min()), int(indices.max())
        for idx, _ in iter_frames(path, start=lo / FPS, end=(hi + 1) / FPS, threads=1):
            got += lo <= idx <= hi
    return got


def _pyav_span(path: Path, window: np.ndarray, ref: int) -> int:
    from emo.training.dataset import read_frames_at
    return len(read_frames_at(path, np.concatenate([window, [ref]]), FPS, threads=1))


def _pyav_full(path: Path, window: np.ndarray, ref: int) -> int:
    from emo.media.video import iter_frames
    want, got, last = set(window.tolist()) | {ref}, 0, max(int(window.max()), ref)
    for idx, _ in iter_frames(path, threads=1):
        got += idx in want
        if idx >= last:
            break
    return got


def _decord(path: Path, window: np.ndarray, ref: int) -> int:
    import decord
    vr = decord.VideoReader(str(path), num_threads=1)
    return len(vr.get_batch(list(window) + [ref]).asnumpy())


def run(out_dir) -> dict:
    from emo.media.video import write_video
    readers = {"pyav_seek": _pyav_seek, "pyav_span": _pyav_span, "pyav_full": _pyav_full}
    try:
        import decord  # noqa: F401
        readers["decord"] = _decord
        decord_status = "installed"
    except ImportError:
        decord_status = "not installed (pip install decord: manylinux x86_64 wheels only)"
    frames, source = _source_frames(int(max(DURATIONS) * FPS))
    rng = np.random.default_rng(0)
    times = {name: [] for name in readers}
    per_duration = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dur in DURATIONS:
            n = int(dur * FPS)
            path = Path(tmp) / f"clip_{dur:g}s.mp4"
            write_video(path, frames[:n], FPS, crf=18)
            picks = []
            for _ in range(SAMPLES_PER_CLIP):
                start = int(rng.integers(0, n - WINDOW + 1))
                window = start + np.arange(WINDOW)
                outside = np.setdiff1d(np.arange(n), window)
                picks.append((window, int(rng.choice(outside))))
            per_duration[f"{dur:g}s"] = {}
            for name, fn in readers.items():
                fn(path, *picks[0])                  # warm the file cache and the library
                ts = []
                for window, ref in picks:
                    t0 = time.perf_counter()
                    got = fn(path, window, ref)
                    ts.append(time.perf_counter() - t0)
                    assert got == WINDOW + 1, (name, got)
                times[name] += ts
                per_duration[f"{dur:g}s"][name] = round(statistics.median(ts) * 1000, 1)
    summary = {name: {"median_ms_per_sample": round(statistics.median(ts) * 1000, 1),
                      "mean_ms_per_sample": round(statistics.fmean(ts) * 1000, 1),
                      "samples_per_second_per_worker": round(1.0 / statistics.fmean(ts), 2)}
               for name, ts in times.items()}
    fastest = min(summary, key=lambda k: summary[k]["mean_ms_per_sample"])
    result = {"size": SIZE, "fps": FPS, "frames_per_sample": WINDOW + 1, "durations_s": list(DURATIONS),
              "samples_per_clip": SAMPLES_PER_CLIP, "decode_threads": 1, "content": source,
              "decord": decord_status, "readers": summary, "median_ms_by_clip_length": per_duration,
              "fastest": fastest,
              "ratio_decord_over_pyav_span": (round(summary["decord"]["mean_ms_per_sample"]
                                                    / summary["pyav_span"]["mean_ms_per_sample"], 2)
                                              if "decord" in summary else None),
              "ratio_pyav_seek_over_pyav_span": round(summary["pyav_seek"]["mean_ms_per_sample"]
                                                      / summary["pyav_span"]["mean_ms_per_sample"], 2)}
    train_json = Path(out_dir) / "train.json"
    if train_json.is_file():           # the model's step time beside it (same machine, other run)
        t = json.loads(train_json.read_text())
        result["tiny_stage2_seconds_per_step"] = t.get("stage2_seconds_per_step")
    result["summary"] = f"fastest {fastest}: " + ", ".join(
        f"{k} {v['samples_per_second_per_worker']}/s" for k, v in summary.items())
    return result


if __name__ == "__main__":
    print(json.dumps(run(Path(__file__).parent / "results"), indent=1))
