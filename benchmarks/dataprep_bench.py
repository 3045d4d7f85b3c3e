"""Data preparation: where every core-second goes, against the floors of the same work measured
in the same run, and how throughput scales with workers and with Ray nodes.

For one real clip (`talk_hdtf_moore4.mp4`, default config) and for the synthetic corpus (sample
config), in one process:
- the per-stage profile of `process_video` (seconds, share, seconds per video-second);
- the floors: decode alone (every frame, no conversion), the landmark model alone on exactly
  the frames the scan gives it (decoded and scaled beforehand, untimed), and the encode alone of
  exactly the crops the export wrote (decoded and cropped beforehand, untimed);
- pipeline time / sum of floors (the issue's aim: <= 1.3), also without diarization, which is a
  model of its own that the floors do not cover;
- video-seconds per core-second (CPU time of the process and its threads, the steadier figure on a
  shared machine; wall figures beside it).
Then, on four corpus videos: throughput with 1 and 2 local workers, and on 1 and 2 simulated
Ray nodes (`ray.cluster_utils.Cluster`, one CPU each); efficiency = throughput ratio / worker
ratio (Ray's worker processes are warmed by a first run, as the local lanes are forks of this
warm process; on a machine loaded by other work the kernel shares the cores per process, so
these efficiencies say little about core scaling there). And the stride sweep: landmark calls
saved against landmark error, and the x264 presets: CPU time against file size at equal CRF.

The machine is shared, so wall seconds vary run to run: ratios inside one run are the figures.
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
SCALING_VIDEOS = ("synth_v1.mp4", "synth_v2.mp4", "synth_v3.mp4", "synth_v4.mp4")
# VoxCeleb2 (Chung et al., 2018): 2,442 hours of video, 1,128,246 utterances, 6,112 speakers.
VOXCELEB2_HOURS = 2442.0
PROJECTION_CORES = (180, 1000)    # 180: the CPU count LatentSync reports for its VoxCeleb2 run


def _cpu_timed(fn):
    """(wall seconds, CPU seconds of this process and its threads, result)."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def _r(x, n=3):
    return None if x is None else round(float(x), n)


def decode_floor(path) -> tuple[float, float]:
    """Every frame decoded once, nothing converted: what any pipeline over this file must pay."""
    import av

    def decode():
        with av.open(str(path)) as container:
            vs = container.streams.video[0]
            vs.thread_type = "AUTO"
            return sum(1 for _ in container.decode(vs))

    wall, cpu, _ = _cpu_timed(decode)
    return wall, cpu


def landmark_floor(path, cfg, fps: float) -> tuple[float, float, int]:
    """The landmark model alone on the frames the scan feeds it (decoded beforehand)."""
    from dataprep.decode import iter_scaled
    from emo.media.face import FaceAnalyser

    frames = [(f.index, f.face_rgb) for f in iter_scaled(path, cfg.cut.analysis_width,
                                                         cfg.faces.analysis_max_side, cfg.faces.stride)
              if f.face_rgb is not None]
    with FaceAnalyser(max_faces=cfg.faces.max_faces, video=True,
                      min_confidence=cfg.faces.min_confidence) as analyser:
        wall, cpu, _ = _cpu_timed(lambda: [analyser.analyse(rgb, int(round(i * 1000 / fps)))
                                           for i, rgb in frames])
    return wall, cpu, len(frames)


def encode_floor(raw: Path, out: Path, result: dict, cfg) -> tuple[float, float, int]:
    """Encoding alone (x264 + AAC + mux) of exactly the crops the export wrote for each kept clip."""
    from emo.media import iter_frames, load_audio, write_video
    from emo.media.crop import crop_square

    wall = cpu = 0.0
    n = 0
    for row in result["clips"]:
        with np.load(out / row["labels_path"]) as z:
            squares = z["crop_squares"]
        src = raw / result["source_video"]
        f0 = int(round(row["source_start"] * row["fps"]))
        crops = [crop_square(rgb, squares[i - f0], row["size"])
                 for i, rgb in iter_frames(src, row["source_start"], row["source_end"])
                 if 0 <= i - f0 < len(squares)]
        audio = load_audio(src, 16000, row["source_start"], row["source_end"])
        with tempfile.TemporaryDirectory() as tmp:
            w, c, _ = _cpu_timed(lambda: write_video(Path(tmp) / "c.mp4", crops, row["fps"], audio=audio,
                                                     audio_rate=16000, crf=cfg.faces.crf))
        wall, cpu, n = wall + w, cpu + c, n + len(crops)
    return wall, cpu, n


PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "medium")


def encoder_sweep(raw: Path, out: Path, result: dict, crf: int) -> dict:
    """x264 presets at the config's CRF on the first kept clip's crops: CPU seconds, size and
    PSNR of the decoded result against the crops (what training reads against what it should).
    The toolkit encodes with `veryfast` (emo.media.write_video)."""
    import av

    from emo.media import iter_frames
    from emo.media.crop import crop_square

    row = result["clips"][0]
    with np.load(out / row["labels_path"]) as z:
        squares = z["crop_squares"]
    f0 = int(round(row["source_start"] * row["fps"]))
    crops = [crop_square(rgb, squares[i - f0], row["size"])
             for i, rgb in iter_frames(raw / result["source_video"], row["source_start"], row["source_end"])
             if 0 <= i - f0 < len(squares)]
    sweep = {}
    with tempfile.TemporaryDirectory() as tmp:
        for preset in PRESETS:
            path = Path(tmp) / f"{preset}.mp4"

            def encode():
                with av.open(str(path), mode="w") as container:
                    vs = container.add_stream("libx264", rate=int(round(row["fps"])))
                    vs.width = vs.height = row["size"]
                    vs.pix_fmt = "yuv420p"
                    vs.options = {"crf": str(crf), "preset": preset}
                    for rgb in crops:
                        for packet in vs.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                            container.mux(packet)
                    for packet in vs.encode():
                        container.mux(packet)

            wall, cpu, _ = _cpu_timed(encode)
            decoded = [f for _, f in iter_frames(path)]
            mse = np.mean([np.mean((a.astype(np.float64) - b) ** 2) for a, b in zip(decoded, crops)])
            sweep[preset] = {"cpu_s": _r(cpu), "wall_s": _r(wall), "kbytes": round(path.stat().st_size / 1024),
                             "psnr_db": _r(10 * np.log10(255 ** 2 / mse), 2), "frames": len(crops)}
    return sweep


def cpu_timed_steps(cpu: dict) -> list:
    """The pipeline's steps, each adding its CPU seconds to cpu[name] (wall time the pipeline
    records itself)."""
    from dataprep.pipeline import STEPS

    def timed(name, step):
        def run_step(record, cfg):
            c0 = time.process_time()
            try:
                return step(record, cfg)
            finally:
                cpu[name] = cpu.get(name, 0.0) + time.process_time() - c0
        return run_step

    return [(name, timed(name, step)) for name, step in STEPS]


def profile(raw: Path, videos: list[str], cfg, warm: bool = True, sweep: bool = False) -> dict:
    """The per-stage profile of process_video over `videos` and the floors of the same work."""
    from dataprep.pipeline import process_video
    from emo.media import probe_video

    totals = {"pipeline": [0.0, 0.0], "decode": [0.0, 0.0], "landmarks": [0.0, 0.0], "encode": [0.0, 0.0]}
    stages: dict[str, float] = {}
    stages_cpu: dict[str, float] = {}
    steps = cpu_timed_steps(stages_cpu)
    video_s = 0.0
    counts = {"frames_to_landmarker": 0, "frames_encoded": 0, "clips_kept": 0}
    with tempfile.TemporaryDirectory() as tmp:
        if warm:     # loads the diarization and MediaPipe models once, as a long run does
            process_video(raw, videos[0], Path(tmp) / "warm", cfg)
        for name in videos:
            out = Path(tmp) / name
            wall, cpu, res = _cpu_timed(lambda: process_video(raw, name, out, cfg, steps))
            totals["pipeline"][0] += wall
            totals["pipeline"][1] += cpu
            for k, v in res["stats"]["timings"].items():
                stages[k] = stages.get(k, 0.0) + v
            info = probe_video(raw / name)
            video_s += info.duration
            for part, (w, c, *extra) in (("decode", decode_floor(raw / name)),
                                         ("landmarks", landmark_floor(raw / name, cfg, info.fps)),
                                         ("encode", encode_floor(raw, out, res, cfg))):
                totals[part][0] += w
                totals[part][1] += c
                if part == "landmarks":
                    counts["frames_to_landmarker"] += extra[0]
                if part == "encode":
                    counts["frames_encoded"] += extra[0]
            counts["clips_kept"] += len(res["clips"])
            if sweep and res["clips"] and "encoder_presets" not in counts:
                counts["encoder_presets"] = encoder_sweep(raw, out, res, cfg.faces.crf)
    pipe_wall, pipe_cpu = totals["pipeline"]
    floors_wall = sum(totals[k][0] for k in ("decode", "landmarks", "encode"))
    floors_cpu = sum(totals[k][1] for k in ("decode", "landmarks", "encode"))
    cpu_sum = sum(stages_cpu.values())
    diarize_cpu = stages_cpu.get("diarize", 0.0)
    return {
        "videos": len(videos), "video_seconds": _r(video_s), **counts,
        "pipeline": {"wall_s": _r(pipe_wall), "cpu_s": _r(pipe_cpu),
                     "video_s_per_core_s": _r(video_s / pipe_cpu, 2),
                     "video_s_per_wall_s": _r(video_s / pipe_wall, 2)},
        "stages": {k: {"wall_s": _r(v), "cpu_s": _r(stages_cpu[k]), "cpu_share": _r(stages_cpu[k] / cpu_sum),
                       "cpu_s_per_video_s": _r(stages_cpu[k] / video_s, 4)}
                   for k, v in sorted(stages.items(), key=lambda kv: -stages_cpu[kv[0]])},
        "floors": {k: {"wall_s": _r(totals[k][0]), "cpu_s": _r(totals[k][1]),
                       "cpu_s_per_video_s": _r(totals[k][1] / video_s, 4)} for k in ("decode", "landmarks", "encode")},
        "pipeline_over_floors_wall": _r(pipe_wall / floors_wall, 2),
        "pipeline_over_floors_cpu": _r(pipe_cpu / floors_cpu, 2),
        # diarization (VAD + speaker embeddings) is model time the three floors do not include
        "pipeline_without_diarize_over_floors_cpu": _r((pipe_cpu - diarize_cpu) / floors_cpu, 2),
        "stage_over_floor_cpu": {
            "scan/(decode+landmarks)": _r(stages_cpu.get("scan", 0) / (totals["decode"][1] + totals["landmarks"][1]), 2),
            "export/encode": _r(stages_cpu.get("export", 0) / totals["encode"][1], 2)},
    }


def stride_sweep(clip: Path, cfg) -> dict:
    """Landmark calls saved by analysing every n-th frame, against the interpolated landmarks'
    error relative to analysing every frame (in face heights; the landmarker's own frame-to-frame
    noise is part of it)."""
    from dataprep.stages.common import VideoRecord
    from dataprep.stages.faces import interp_rows
    from dataprep.stages.probe import probe
    from dataprep.stages.scan import scan

    record = probe(VideoRecord(clip.name, str(clip), ""), cfg)
    out, tracks = {}, {}
    for stride in STRIDES:
        cfg.faces.stride = stride
        wall, cpu, rec = _cpu_timed(lambda: scan(VideoRecord(clip.name, str(clip), "", info=record.info), cfg))
        observed = rec.scan.faces
        known = sorted(i for i, f in observed.items() if f is not None)
        values = np.stack([observed[i].landmarks for i in known])
        height = float(np.median([observed[i].box[3] - observed[i].box[1] for i in known]))
        tracks[stride] = (interp_rows(np.array(known, float), values,
                                      np.arange(rec.scan.n_frames, dtype=float)), height)
        out[f"stride_{stride}"] = {"scan_wall_s": _r(wall), "scan_cpu_s": _r(cpu)}
    ref, height = tracks[STRIDES[0]]
    for stride in STRIDES[1:]:
        err = np.linalg.norm(tracks[stride][0][:, :, :2] - ref[:, :, :2], axis=-1).mean(1) / height
        out[f"stride_{stride}"]["landmark_error_face_heights"] = {
            "mean": _r(err.mean(), 4), "p95": _r(np.percentile(err, 95), 4)}
    return out


def _throughput(raw: Path, cfg, executor) -> float:
    from dataprep.runner import run

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        stats = run(raw, Path(tmp) / "out", cfg, progress=False, executor=executor)
        wall = time.perf_counter() - t0
    return stats["source_seconds"] / wall


def scaling(raw: Path, cfg) -> dict:
    from dataprep.executors import make_executor

    result = {"videos": list(SCALING_VIDEOS)}
    local = {n: _throughput(raw, cfg, make_executor("local", workers=n)) for n in (1, 2)}
    result["local_workers"] = {"video_s_per_wall_s": {str(n): _r(v, 2) for n, v in local.items()},
                               "efficiency_1_to_2": _r(local[2] / local[1] / 2, 2)}
    try:
        import ray
        from ray.cluster_utils import Cluster
    except ImportError:
        result["ray_nodes"] = "unavailable: Ray is not installed (pip install 'emo-toolkit[ray]')"
        return result
    from dataprep.executors.ray_executor import RayExecutor

    nodes = {}
    for n in (1, 2):
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "object_store_memory": 80 * 1024 ** 2, "include_dashboard": False})
        for _ in range(n - 1):
            cluster.add_node(num_cpus=1, object_store_memory=80 * 1024 ** 2)
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        try:
            # Ray's workers are fresh processes (the local lanes are forks of this warm one): a
            # first run with one video per node starts them and loads the models, then the timed run
            warm = Path(tempfile.mkdtemp()) / "raw"
            warm.mkdir()
            for p in sorted(raw.iterdir())[:n]:
                os.symlink(p.resolve(), warm / p.name)
            _throughput(warm, cfg, RayExecutor())
            nodes[n] = _throughput(raw, cfg, RayExecutor())
        finally:
            ray.shutdown()
            cluster.shutdown()
    result["ray_nodes"] = {"video_s_per_wall_s": {str(n): _r(v, 2) for n, v in nodes.items()},
                           "efficiency_1_to_2": _r(nodes[2] / nodes[1] / 2, 2)}
    return result


def projection(video_s_per_core_s: float, efficiency: float | None) -> dict:
    core_hours = VOXCELEB2_HOURS / video_s_per_core_s
    eff = efficiency if efficiency else 1.0
    return {"video_hours": VOXCELEB2_HOURS, "video_s_per_core_s": _r(video_s_per_core_s, 2),
            "core_hours": round(core_hours), "parallel_efficiency_assumed": _r(eff, 2),
            "wall_days": {str(c): _r(core_hours / (c * eff) / 24, 1) for c in PROJECTION_CORES}}


def run(out_dir: Path) -> dict:
    clip = next((SHARED / "data" / "clips" / c for c in CLIPS if (SHARED / "data" / "clips" / c).is_file()), None)
    mp_dir = SHARED / "models" / "mediapipe"
    if clip is None or not mp_dir.is_dir():
        return {"status": f"unavailable: needs {SHARED}/data/clips/{CLIPS[0]} and {mp_dir} "
                          "(the shared test media); set EMO_SHARED_DIR to their parent folder"}
    os.environ.setdefault("EMO_MEDIAPIPE_DIR", str(mp_dir))
    from dataprep.config import CONFIG_DIR, load_config
    from dataprep.synth import cached_corpus

    result = {"load_average_at_start": [round(x, 1) for x in os.getloadavg()], "cpus": os.cpu_count()}
    default, sample = load_config(CONFIG_DIR / "default.yaml"), load_config(CONFIG_DIR / "sample.yaml")
    # The profile is of what keeping the clip costs. Without SyncNet weights the offline sync
    # measure abstains on this clip, and the default policy (sync.untrusted: reject) would drop it
    # before the export; here it is kept, so the export and its encode floor are measured.
    default.sync.untrusted = "keep"
    result["clip"] = {"name": clip.name, "config": "dataprep/configs/default.yaml with sync.untrusted: keep",
                      **profile(clip.parent, [clip.name], default, sweep=True)}
    corpus = cached_corpus(0)
    result["synthetic"] = {"config": "dataprep/configs/sample.yaml",
                           **profile(corpus[0].parent, [p.name for p in corpus], sample)}
    result["stride_sweep"] = stride_sweep(clip, load_config(CONFIG_DIR / "default.yaml"))
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        raw.mkdir()
        for p in corpus:
            if p.name in SCALING_VIDEOS:
                os.symlink(p, raw / p.name)
        result["scaling"] = scaling(raw, sample)
    eff = result["scaling"]["local_workers"]["efficiency_1_to_2"]
    result["projection_voxceleb2"] = {
        "basis": f"{clip.name} ({result['clip']['video_seconds']} s, default config) per-core figure; "
                 "VoxCeleb2's released clips are 224x224 (cheaper per second than this 650x650 clip), "
                 "its raw YouTube sources 360p-1080p (dearer); parallel efficiency as measured 1->2 "
                 "local workers here",
        **projection(result["clip"]["pipeline"]["video_s_per_core_s"], eff)}
    result["load_average_at_end"] = [round(x, 1) for x in os.getloadavg()]
    c, s = result["clip"], result["synthetic"]
    result["summary"] = (
        f"{clip.name}: {c['pipeline']['video_s_per_core_s']} video-s per core-s, pipeline/floors "
        f"{c['pipeline_over_floors_cpu']}x CPU ({c['pipeline_over_floors_wall']}x wall); synthetic corpus: "
        f"{s['pipeline']['video_s_per_core_s']} video-s per core-s, pipeline/floors {s['pipeline_over_floors_cpu']}x; "
        f"efficiency 1->2 local workers {eff}, 1->2 Ray nodes "
        f"{result['scaling']['ray_nodes'].get('efficiency_1_to_2') if isinstance(result['scaling']['ray_nodes'], dict) else 'n/a'}"
        f" (load average {result['load_average_at_start'][0]} on {result['cpus']} CPUs)")
    return result
