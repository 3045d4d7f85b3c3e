"""The evaluation harness: held-out clips + generated videos -> one results JSON per system.

The held-out set is the test split of a dataprep manifest. A system is either a directory of
`<clip_id>.mp4` (any method's output) or an EMO checkpoint that `emo.generate.generate_batch`
renders for every held-out clip (reference = the clip's first frame, audio = the clip's audio).
A checkpoint argument may also be a folder of step checkpoints (`step-000100/`, ...): each is
scored as its own system with `system.step` set. The baselines of eval.baselines are scored in
every run unless switched off.

Clips are the outer loop and systems the inner one, so each ground-truth clip is decoded once and
its MediaPipe analysis is shared by every system; only one clip's frames are in memory at a time.
Every system is scored against the audio of the clip (a generated file's own audio track is
ignored), cut with the frames by the rule in eval.alignment.
"""
from __future__ import annotations

import json
import os
import platform
import re
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from emo.fileio import atomic_path, atomic_write
from emo.manifest import load_labels, manifest_hash, read_manifest
from emo.weights import weights_hashes
from emo.media import MediaError, load_audio, probe_video, read_frames, save_wav, write_video
from eval.alignment import ALIGNMENT_RULE, AlignmentRecord, align_pair, cut_audio, summarise
from eval.baselines import CALIBRATION, DEFAULT_SHIFT_FRAMES, Baseline, default_baselines, identity_halves
from eval.metrics.base import ClipSample, Metric
from eval.results import SCHEMA, clean_number, relative_or_absolute, write_results
from eval.scoring import DEGENERATE, BootstrapConfig, MetricClipResult, MetricRunner, output_directions

AUDIO_RATE = 16000
PACKAGES = ("emo-toolkit", "numpy", "torch", "torchmetrics", "diffusers", "transformers", "mediapipe",
            "av", "opencv-python", "opencv-contrib-python", "scikit-image", "scipy", "pandas")
# Cache entries that depend only on the ground-truth frames, so they can be shared between systems.
_GT_CACHE_KEYS = (("face_track", "ground_truth"),)


class HarnessError(RuntimeError):
    pass


@dataclass
class HeldOutClip:
    clip_id: str
    video: Path
    fps: float
    row: dict


@dataclass
class SystemSpec:
    """One thing to score. `videos` maps clip_id -> mp4 (None for baselines, which are computed)."""
    name: str
    kind: str                                   # checkpoint | directory | baseline
    path: str | None = None
    videos: dict[str, Path] | None = None
    baseline: Baseline | None = None
    config: dict | None = None
    step: int | None = None
    generation: dict = field(default_factory=dict)
    meta: dict | None = None                    # a checkpoint's meta.json (step, stage, training data hash)


@dataclass
class ScoreConfig:
    split: str = "test"
    max_clips: int | None = None                # score only the first N held-out clips (smoke runs)
    baselines: bool = True
    shift_frames: int = DEFAULT_SHIFT_FRAMES
    write_baseline_videos: bool = True          # so the report can show and play the baselines
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)


# --- inputs -------------------------------------------------------------------------------------

def load_heldout(dataset: str | os.PathLike, split: str = "test", max_clips: int | None = None) -> list[HeldOutClip]:
    """The held-out clips of a dataset folder (Contract 1), in manifest order."""
    dataset = Path(dataset)
    df = read_manifest(dataset, split=split)
    if df.empty:
        raise HarnessError(f"{dataset}: the manifest has no clips in split {split!r}")
    rows = df.to_dict("records")[: max_clips or None]
    return [HeldOutClip(r["clip_id"], dataset / r["clip_path"], float(r["fps"]), r) for r in rows]


def directory_system(gen_dir: str | os.PathLike, clips: list[HeldOutClip], name: str | None = None) -> SystemSpec:
    """A folder of <clip_id>.mp4; every held-out clip must be there (else nothing is scored)."""
    gen_dir = Path(gen_dir)
    if not gen_dir.is_dir():
        raise HarnessError(f"generated-video folder {gen_dir} does not exist")
    videos = {c.clip_id: gen_dir / f"{c.clip_id}.mp4" for c in clips}
    missing = sorted(cid for cid, p in videos.items() if not p.is_file())
    if missing:
        raise HarnessError(f"{gen_dir}: {len(missing)} of {len(clips)} held-out clips have no <clip_id>.mp4, "
                           f"e.g. {missing[:5]}; systems scored on different clips are not comparable")
    check_videos(videos, str(gen_dir))
    return SystemSpec(name=name or gen_dir.name, kind="directory", path=str(gen_dir.resolve()), videos=videos)


def check_videos(videos: dict[str, Path], where: str) -> None:
    """Probe every video before any scoring, so a bad file stops the run at once, named."""
    bad = {}
    for cid, path in videos.items():
        try:
            info = probe_video(path)
            if info.n_frames <= 0:
                bad[cid] = "no frames"
        except MediaError as exc:
            bad[cid] = str(exc)
    if bad:
        shown = "; ".join(f"{cid}: {why}" for cid, why in list(bad.items())[:5])
        raise HarnessError(f"{where}: {len(bad)} unusable generated videos ({shown})")


def checkpoint_dirs(path: str | os.PathLike) -> list[tuple[Path, int | None]]:
    """A checkpoint folder itself, or the step checkpoints inside it, ordered by step."""
    path = Path(path)
    if (path / "config.yaml").is_file():
        return [(path, _checkpoint_step(path))]
    subs = [p for p in sorted(path.iterdir()) if (p / "config.yaml").is_file()] if path.is_dir() else []
    if not subs:
        raise HarnessError(f"{path} is neither a checkpoint (no config.yaml) nor a folder of step checkpoints")
    found = [(p, _checkpoint_step(p)) for p in subs]
    return sorted(found, key=lambda ps: (ps[1] is None, ps[1] or 0, ps[0].name))


def _checkpoint_step(ckpt: Path) -> int | None:
    meta = ckpt / "meta.json"
    if meta.is_file():
        try:
            step = json.loads(meta.read_text()).get("step")
            if step is not None:
                return int(step)
        except (ValueError, TypeError, AttributeError):
            pass
    m = re.search(r"(\d+)$", ckpt.name)
    return int(m.group(1)) if m else None


def _checkpoint_meta(ckpt: Path) -> dict | None:
    try:
        return json.loads((ckpt / "meta.json").read_text())
    except (OSError, ValueError):
        return None


def _checkpoint_config(ckpt: Path) -> dict | None:
    import yaml
    try:
        return yaml.safe_load((ckpt / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None


def checkpoint_systems(path: str | os.PathLike, clips: list[HeldOutClip], work_dir: Path,
                       settings: dict | None = None, name: str | None = None) -> list[SystemSpec]:
    """Render every held-out clip with each checkpoint (lazy import of emo.generate).

    Under `accelerate launch` (several processes) each process renders its share of the clips
    (clip i goes to process i mod N) and waits for the others; a clip whose video is already there
    (from this run or an interrupted one with the same settings) is not rendered again."""
    # Held-out clips are already face crops in the training framing: cropping their first frame
    # again would zoom in and make every generated frame disagree with the ground truth.
    settings = {"crop": False, **(settings or {})}
    found = checkpoint_dirs(path)
    base = name or Path(path).name
    rank, world = process_rank()
    systems = []
    for ckpt, step in found:
        sys_name = base if len(found) == 1 else f"{base}/{ckpt.name}"
        out_dir = work_dir / "generated" / safe_name(sys_name)
        generate_videos(ckpt, shard(clips, rank, world), out_dir, settings)
        wait_for_everyone(world)
        videos = {c.clip_id: out_dir / f"{c.clip_id}.mp4" for c in clips}
        systems.append(SystemSpec(name=sys_name, kind="checkpoint", path=str(ckpt.resolve()),
                                  videos={cid: p for cid, p in videos.items() if p.is_file()},
                                  config=_checkpoint_config(ckpt), step=step, generation=settings,
                                  meta=_checkpoint_meta(ckpt)))
    return systems


def process_rank() -> tuple[int, int]:
    """(this process's index, number of processes) as `accelerate launch`/torchrun set them."""
    return int(os.environ.get("RANK", 0)), max(1, int(os.environ.get("WORLD_SIZE", 1)))


def shard(items: list, rank: int, world: int) -> list:
    return items[rank::world]


def wait_for_everyone(world: int) -> None:
    if world > 1:
        from accelerate import PartialState
        PartialState().wait_for_everyone()


def _generation_stamp(ckpt: Path, settings: dict) -> str:
    weights = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in ckpt.rglob("*") if p.is_file())
    return json.dumps({"checkpoint": str(ckpt.resolve()), "files": weights, "settings": settings}, sort_keys=True,
                      default=str)


def _video_ok(path: Path) -> bool:
    try:
        return path.is_file() and probe_video(path).n_frames > 0
    except MediaError:
        return False


def generate_videos(ckpt: Path, clips: list[HeldOutClip], out_dir: Path, settings: dict) -> dict[str, Path]:
    """Inputs per clip (first frame PNG + 16 kHz wav) -> emo.generate.generate_batch -> <clip_id>.mp4.

    Resumable per clip: videos already written for the same checkpoint files and settings (the
    stamp `_generation.json`) and readable are kept; other settings start the folder afresh. A clip
    whose generation fails is left out (logged by generate_batch): the harness then scores every
    system on the clips all of them have."""
    from PIL import Image

    try:
        from emo.generate import generate_batch
    except ImportError as exc:
        raise HarnessError(f"cannot score a checkpoint: emo.generate is not importable ({exc})") from None
    stamp_path, stamp = out_dir / "_generation.json", _generation_stamp(ckpt, settings)
    if stamp_path.is_file() and stamp_path.read_text() != stamp:
        for c in clips:     # rendered with other settings or another checkpoint (only this process's clips)
            (out_dir / f"{c.clip_id}.mp4").unlink(missing_ok=True)
    atomic_write(stamp_path, stamp)
    inputs = out_dir / "_inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    items = []
    for c in clips:
        out = out_dir / f"{c.clip_id}.mp4"
        if _video_ok(out):
            continue
        image, wav = inputs / f"{c.clip_id}.png", inputs / f"{c.clip_id}.wav"
        if not image.is_file():
            Image.fromarray(read_frames(c.video, end=1.5 / c.fps)[0]).save(image)
        if not wav.is_file():
            save_wav(wav, load_audio(c.video, rate=AUDIO_RATE), AUDIO_RATE)
        items.append({"id": c.clip_id, "image": str(image), "audio": str(wav), "fps": c.fps, "out": str(out)})
    if items:
        try:
            generate_batch(str(ckpt), items, str(out_dir), **settings)
        except Exception as exc:  # reported with the checkpoint named; the inputs stay for a rerun
            raise HarnessError(f"generation with {ckpt} failed: {type(exc).__name__}: {exc}") from exc
    return {c.clip_id: out_dir / f"{c.clip_id}.mp4" for c in clips if _video_ok(out_dir / f"{c.clip_id}.mp4")}


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_") or "system"


# --- scoring ------------------------------------------------------------------------------------

def _load_gt(dataset: Path, clip: HeldOutClip) -> tuple[np.ndarray, np.ndarray, dict]:
    frames = read_frames(clip.video)
    audio = load_audio(clip.video, rate=AUDIO_RATE)
    labels = load_labels(dataset, clip.row)
    return frames, audio, labels


def _system_frames(spec: SystemSpec, clip: HeldOutClip, gt: np.ndarray, audio: np.ndarray):
    """(frames, fps, audio) a system offers for one clip, before alignment."""
    if spec.baseline is not None:
        frames, audio = spec.baseline.make(gt, gt[0], audio, AUDIO_RATE, clip.fps)
        return frames, clip.fps, audio
    video = spec.videos[clip.clip_id]
    return read_frames(video), probe_video(video).fps, audio


class _SameFramesCache(dict):
    """Sample cache for baselines whose frames ARE the ground truth: a "generated" entry is the
    "ground_truth" entry, so MediaPipe runs once for both sides."""

    @staticmethod
    def _key(key):
        # only the frame analysis is aliased: entries that mix in the audio stay per side
        return ("face_track", "ground_truth") if key == ("face_track", "generated") else key

    def __contains__(self, key):
        return super().__contains__(self._key(key))

    def __getitem__(self, key):
        return super().__getitem__(self._key(key))

    def __setitem__(self, key, value):
        super().__setitem__(self._key(key), value)

    def get(self, key, default=None):
        return super().get(self._key(key), default)


def build_sample(clip: HeldOutClip, frames: np.ndarray, fps: float, gt: np.ndarray, audio: np.ndarray,
                 labels: dict, gt_cache: dict, same_as_gt: bool):
    gen, gt_cut, record = align_pair(clip.clip_id, frames, fps, gt, clip.fps)
    n = len(gt_cut)
    shared = gt_cache.setdefault(n, {})
    cache = _SameFramesCache(shared) if same_as_gt else dict(shared)
    # per-frame labels cut with the frames (face_box is per clip and stays whole)
    labels = {k: (v[:n] if k != "face_box" else v) for k, v in labels.items()}
    sample = ClipSample(clip_id=clip.clip_id, fps=clip.fps, generated=gen, ground_truth=gt_cut,
                        reference=gt[0], audio=cut_audio(audio, AUDIO_RATE, clip.fps, n),
                        audio_rate=AUDIO_RATE, gt_labels=labels, cache=cache)
    return sample, record, shared


@dataclass
class ClipScores:
    """One system on one clip: the alignment record and each metric's result (the cached unit)."""
    record: dict
    metrics: dict[str, MetricClipResult]


class ClipStore:
    """Per-clip results on disk (`<results>/cache/<system>/<clip_id>.npz`), so a second run (one more
    system, one more metric, an interrupted run) computes only what is missing.

    An entry is reused only when everything it depends on is unchanged: the system's video (path,
    size, mtime) or the baseline's definition, the ground-truth clip file, the alignment rule, and
    per metric its class, protocol, settings and weights files (`fingerprint`)."""

    def __init__(self, root: Path, metrics: list[Metric], weights: dict):
        self.root = root
        self.fingerprints = {m.name: json.dumps({"class": type(m).__name__, "protocol": _jsonable(m.protocol()),
                                                 "weights": {w: weights.get(w) for w in m.weights}}, sort_keys=True)
                             for m in metrics}

    def path(self, spec: SystemSpec, clip_id: str) -> Path:
        return self.root / safe_name(spec.name) / f"{clip_id}.npz"

    @staticmethod
    def source_key(spec: SystemSpec, clip: HeldOutClip) -> str:
        gt = clip.video.stat()
        if spec.baseline is not None:
            src = {"baseline": repr(spec.baseline)}
        else:
            v = spec.videos[clip.clip_id]
            st = v.stat()
            src = {"video": str(v.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        return json.dumps({**src, "gt": [str(clip.video.resolve()), gt.st_size, gt.st_mtime_ns],
                           "alignment": ALIGNMENT_RULE}, sort_keys=True)

    def load(self, spec: SystemSpec, clip: HeldOutClip) -> ClipScores | None:
        path = self.path(spec, clip.clip_id)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta["source"] != self.source_key(spec, clip):
                    return None
                results = {}
                for name, m in meta["metrics"].items():
                    if self.fingerprints.get(name) != m["fingerprint"]:
                        continue
                    results[name] = MetricClipResult(
                        values={k: (np.nan if v is None else v) for k, v in m["values"].items()},
                        gen=z[f"{name}|gen"] if f"{name}|gen" in z.files else None,
                        real=z[f"{name}|real"] if f"{name}|real" in z.files else None,
                        error=m["error"], unavailable=m["unavailable"], seconds=m["seconds"], frames=m["frames"])
                return ClipScores(meta["record"], results)
        except (OSError, ValueError, KeyError):   # unreadable entry: recompute it
            return None

    def save(self, spec: SystemSpec, clip: HeldOutClip, scores: ClipScores) -> None:
        arrays, meta = {}, {"source": self.source_key(spec, clip), "record": scores.record, "metrics": {}}
        for name, r in scores.metrics.items():
            if r.unavailable:      # an unavailable metric is not a result to keep
                continue
            meta["metrics"][name] = {"fingerprint": self.fingerprints[name], "error": r.error,
                                     "unavailable": None, "seconds": r.seconds, "frames": r.frames,
                                     "values": {k: clean_number(v) for k, v in r.values.items()}}
            if r.gen is not None:
                arrays[f"{name}|gen"], arrays[f"{name}|real"] = r.gen, r.real

        with atomic_path(self.path(spec, clip.clip_id)) as tmp, open(tmp, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)


def _jsonable(x):
    return json.loads(json.dumps(x, default=str))


def check_inputs(dataset: Path, systems: list[SystemSpec], metrics: list[Metric] | None, cfg: "ScoreConfig",
                 clips: list[HeldOutClip] | None, weights_dir: str | None, device: str):
    """The held-out clips, the systems (baselines appended) and the metrics, checked before any work."""
    clips = clips if clips is not None else load_heldout(dataset, cfg.split, cfg.max_clips)
    if metrics is None:
        from eval.metrics import all_metrics
        metrics = all_metrics(weights_dir, device=device)
    systems = list(systems)
    if cfg.baselines:
        systems += [SystemSpec(name=b.name, kind="baseline", baseline=b) for b in default_baselines(cfg.shift_frames)]
    if not systems:
        raise HarnessError("nothing to score: give generated videos or a checkpoint, or keep the baselines")
    names = [safe_name(s.name) for s in systems]
    if len(set(names)) != len(names):
        raise HarnessError(f"two systems share a name: {names}; pass distinct --name values")
    return clips, systems, list(metrics)


def score_clips(dataset: Path, clips: list[HeldOutClip], systems: list[SystemSpec], runner: MetricRunner,
                store: ClipStore, cfg: "ScoreConfig", out_dir: Path) -> dict[str, dict[str, ClipScores]]:
    """{system: {clip_id: ClipScores}}: from the store where it has them, else computed and stored.

    Clips are the outer loop and systems the inner one, so each ground-truth clip is decoded once
    (and not at all when every system's results are stored) and its MediaPipe analysis is shared."""
    names = {m.name for m in runner.metrics if runner.status[m.name] == "ok"}
    out: dict[str, dict[str, ClipScores]] = {s.name: {} for s in systems}
    for clip in clips:
        todo = []
        for spec in systems:
            if spec.baseline is None and clip.clip_id not in (spec.videos or {}):
                continue                          # no video for this clip: not scored, not shared
            cached = store.load(spec, clip)
            missing = names - set(cached.metrics) if cached else names
            if cached:
                out[spec.name][clip.clip_id] = cached
            if missing or (spec.kind == "baseline" and cfg.write_baseline_videos
                           and not _baseline_video(out_dir, spec, clip).is_file()):
                todo.append((spec, missing))
        if not todo:
            continue
        gt, audio, labels = _load_gt(dataset, clip)
        gt_cache: dict = {}
        for spec, missing in todo:
            frames, fps, sys_audio = _system_frames(spec, clip, gt, audio)
            if spec.kind == "baseline" and cfg.write_baseline_videos:
                path = _baseline_video(out_dir, spec, clip)
                if not path.is_file():
                    write_video(path, frames, clip.fps, audio=sys_audio, audio_rate=AUDIO_RATE, crf=28)
            if not missing:
                continue
            same_as_gt = spec.baseline is not None and spec.baseline.reuses_gt_frames
            sample, record, shared = build_sample(clip, frames, fps, gt, sys_audio, labels, gt_cache, same_as_gt)
            results = runner.score_sample(sample, only=missing)
            for key in _GT_CACHE_KEYS:  # keep what this system computed about the ground truth
                if key in sample.cache:
                    shared[key] = sample.cache[key]
            prior = out[spec.name].get(clip.clip_id)
            scores = ClipScores(record.to_dict(), {**(prior.metrics if prior else {}), **results})
            store.save(spec, clip, scores)
            out[spec.name][clip.clip_id] = scores
    return out


def _baseline_video(out_dir: Path, spec: SystemSpec, clip: HeldOutClip) -> Path:
    return out_dir / "videos" / safe_name(spec.name) / f"{clip.clip_id}.mp4"


def shared_clips(clips: list[HeldOutClip], scored: dict[str, dict[str, ClipScores]]) -> list[str]:
    """The clips every system was scored on (in held-out order)."""
    return [c.clip_id for c in clips if all(c.clip_id in by_clip for by_clip in scored.values())]


def compare_systems(systems: list[SystemSpec], scored: dict, runner: MetricRunner, shared: list[str]) -> dict:
    """{system: {other system: {metric: difference entry}}} for every ordered pair (A - B). Each
    unordered pair is resampled once; B - A is A - B negated (same resamples, so the same verdict
    from the other side)."""
    out = {s.name: {} for s in systems}
    flip = {"better": "worse", "worse": "better"}
    for i, a in enumerate(systems):
        for b in systems[i + 1:]:
            ra = {cid: v.metrics for cid, v in scored[a.name].items()}
            rb = {cid: v.metrics for cid, v in scored[b.name].items()}
            forward = runner.compare(ra, rb, shared)
            out[a.name][b.name] = forward
            out[b.name][a.name] = {
                k: {**d, "difference": _neg(d["difference"]), "ci_low": _neg(d["ci_high"]),
                    "ci_high": _neg(d["ci_low"]), "verdict": flip.get(d["verdict"], d["verdict"])}
                for k, d in forward.items()}
    return out


def _neg(x):
    return None if x is None else -x


def calibration_entries(clips: list[HeldOutClip], scored: dict, runner: MetricRunner, shared: list[str]) -> tuple[dict, dict]:
    """The ground-truth-halves baseline: each set-level metric on one identity half of the shared
    clips' ground-truth features against the other half. Returns (metrics entries, split)."""
    a_ids, b_ids = identity_halves({c.clip_id: c.row.get("group", c.clip_id) for c in clips if c.clip_id in shared})
    split = {"by": "manifest group (identity)", "half_a": a_ids, "half_b": b_ids}
    reason = "unavailable: set-level calibration only (ground truth against ground truth)"
    entries = {}
    for m in runner.metrics:
        common = {"level": m.level, "description": getattr(m, "description", ""), "weights": list(m.weights),
                  "protocol": _jsonable(m.protocol()), "n_shared": len(shared)}
        if m.level != "set":
            for key, direction in output_directions(m).items():
                entries[key] = {"value": None, "ci_low": None, "ci_high": None, "direction": direction,
                                "status": reason, "n": 0, "partial": False, **common}
            continue
        # The real features of a clip are the same whichever system carried them: take the first.
        feats = {}
        for by_clip in scored.values():
            for cid in shared:
                r = by_clip.get(cid) and by_clip[cid].metrics.get(m.name)
                if cid not in feats and r is not None and r.real is not None and not r.error:
                    feats[cid] = r.real
        gen, real = [feats[c] for c in a_ids if c in feats], [feats[c] for c in b_ids if c in feats]
        status = runner.status[m.name]
        if status != "ok" or not gen or not real:
            why = status if status != "ok" else f"unavailable: too few clips for two identity halves ({len(a_ids)}, {len(b_ids)})"
            entries[m.name] = {"value": None, "ci_low": None, "ci_high": None, "direction": m.direction,
                               "status": why, "n": 0, "partial": False, **common}
            continue
        try:
            value = float(m.aggregate(gen, real))
        except DEGENERATE as exc:
            value, why = float("nan"), f"unavailable: degenerate aggregate ({type(exc).__name__}: {exc})"
        else:
            why = "unavailable: the aggregate was not finite (too few features for a covariance?)"
        ok = np.isfinite(value)
        entries[m.name] = {"value": clean_number(value) if ok else None, "ci_low": None, "ci_high": None,
                           "direction": m.direction, "status": "ok" if ok else why, "n": len(gen) + len(real),
                           "partial": False, "samples": {"half_a_clips": len(gen), "half_b_clips": len(real)},
                           **common}
    return entries, split


def score(dataset: str | os.PathLike, systems: list[SystemSpec], out_dir: str | os.PathLike,
          metrics: list[Metric] | None = None, cfg: ScoreConfig | None = None,
          clips: list[HeldOutClip] | None = None, weights_dir: str | None = None,
          device: str = "cpu") -> list[Path]:
    """Score every system (and the baselines) on the held-out clips; write one JSON each.

    The named steps: check_inputs -> score_clips (per clip, cached; under `accelerate launch` each
    process scores its share of the clips) -> shared_clips -> per-system entries -> compare_systems
    -> calibration_entries -> write_documents (the main process only)."""
    cfg = cfg or ScoreConfig()
    dataset, out_dir = Path(dataset), Path(out_dir)
    clips, systems, metrics = check_inputs(dataset, systems, metrics, cfg, clips, weights_dir, device)
    env = environment(metrics, weights_dir)
    runner = MetricRunner(metrics, cfg.bootstrap)
    store = ClipStore(out_dir / "cache", metrics, env["weights"])
    rank, world = process_rank()
    if world > 1:      # each process fills the store for its clips; the main one then reads them all
        score_clips(dataset, shard(clips, rank, world), systems, runner, store, cfg, out_dir)
        wait_for_everyone(world)
        if rank != 0:
            return []
    scored = score_clips(dataset, clips, systems, runner, store, cfg, out_dir)
    shared = shared_clips(clips, scored)
    clip_ids = [c.clip_id for c in clips]
    tables = {s.name: runner.results({cid: v.metrics for cid, v in scored[s.name].items()}, clip_ids, shared)
              for s in systems}
    comparisons = compare_systems(systems, scored, runner, shared)
    documents = [(spec, tables[spec.name], comparisons[spec.name], None) for spec in systems]
    if cfg.baselines:
        entries, split = calibration_entries(clips, scored, runner, shared)
        documents.append((SystemSpec(name=CALIBRATION.name, kind="baseline", baseline=CALIBRATION),
                          (entries, {cid: {} for cid in clip_ids}), {}, split))
    return write_documents(documents, dataset, clips, shared, scored, cfg, env, out_dir)


def write_documents(documents, dataset: Path, clips: list[HeldOutClip], shared: list[str], scored: dict,
                    cfg: ScoreConfig, env: dict, out_dir: Path) -> list[Path]:
    common = {"dataset": {"path": str(dataset.resolve()), "manifest_sha256": manifest_hash(dataset),
                          "split": cfg.split, "n_clips": len(clips), "n_shared": len(shared),
                          "shared_clips": shared},
              "env": env}
    written = []
    for spec, (metric_entries, per_clip), comparisons, split in documents:
        records = [v.record for v in scored.get(spec.name, {}).values()]
        prefix = "baseline_" if spec.kind == "baseline" else ""
        path = out_dir / f"{prefix}{safe_name(spec.name)}.json"
        videos = dict(spec.videos or {})
        if spec.baseline is not None and cfg.write_baseline_videos and not spec.baseline.set_level_only:
            videos = {c.clip_id: _baseline_video(out_dir, spec, c) for c in clips}
        doc = {
            "schema": SCHEMA,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "system": {"name": spec.name, "kind": spec.kind, "path": spec.path, "config": spec.config,
                       "step": spec.step, "meta": spec.meta,
                       "description": spec.baseline.description if spec.baseline else None,
                       "reuses": spec.baseline.reuses if spec.baseline else None,
                       "n_scored": len(scored.get(spec.name, {})), **({"split": split} if split else {})},
            "settings": {"generation": spec.generation,
                         "scoring": {**asdict(cfg.bootstrap), "split": cfg.split, "max_clips": cfg.max_clips,
                                     "shift_frames": cfg.shift_frames, "audio_rate": AUDIO_RATE}},
            **common,
            "alignment": {"rule": ALIGNMENT_RULE, "summary": summarise([AlignmentRecord(**{
                              **{k: v for k, v in r.items() if k != "changed"},
                              "gt_size": tuple(r["gt_size"]), "gen_size": tuple(r["gen_size"])}) for r in records]),
                          "clips": {r["clip_id"]: r for r in records}},
            "metrics": metric_entries,
            "comparisons": comparisons,
            "per_clip": per_clip,
            "videos": {cid: relative_or_absolute(p, out_dir) for cid, p in videos.items()},
        }
        written.append(write_results(doc, path))
    return written


def environment(metrics: list[Metric], weights_dir: str | None = None) -> dict:
    """Package versions and the sha256 of every weights file the metrics use (null when absent)."""
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    names = sorted({w for m in metrics for w in getattr(m, "weights", ())})
    return {"packages": packages, "weights": weights_hashes(names, weights_dir),
            "python": sys.version.split()[0], "platform": platform.platform(), "code": code_version()}


def code_version() -> dict:
    """The toolkit's git commit and whether the tree had uncommitted changes (read-only git calls)."""
    import subprocess
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "dirty": None}
    return {"git_commit": commit or None, "dirty": dirty if commit else None}
