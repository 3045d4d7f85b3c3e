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

from emo.manifest import load_labels, manifest_hash, read_manifest
from emo.weights import weights_hashes
from emo.media import MediaError, load_audio, probe_video, read_frames, save_wav, write_video
from eval.alignment import ALIGNMENT_RULE, align_pair, cut_audio, summarise
from eval.baselines import DEFAULT_SHIFT_FRAMES, Baseline, default_baselines
from eval.metrics.base import ClipSample, Metric
from eval.results import SCHEMA, relative_or_absolute, write_results
from eval.scoring import BootstrapConfig, MetricRunner

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
    """Render every held-out clip with each checkpoint (lazy import of emo.generate)."""
    # Held-out clips are already face crops in the training framing: cropping their first frame
    # again would zoom in and make every generated frame disagree with the ground truth.
    settings = {"crop": False, **(settings or {})}
    found = checkpoint_dirs(path)
    base = name or Path(path).name
    systems = []
    for ckpt, step in found:
        sys_name = base if len(found) == 1 else f"{base}/{ckpt.name}"
        out_dir = work_dir / "generated" / safe_name(sys_name)
        videos = generate_videos(ckpt, clips, out_dir, settings)
        systems.append(SystemSpec(name=sys_name, kind="checkpoint", path=str(ckpt.resolve()), videos=videos,
                                  config=_checkpoint_config(ckpt), step=step, generation=settings,
                                  meta=_checkpoint_meta(ckpt)))
    return systems


def generate_videos(ckpt: Path, clips: list[HeldOutClip], out_dir: Path, settings: dict) -> dict[str, Path]:
    """Inputs per clip (first frame PNG + 16 kHz wav) -> emo.generate.generate_batch -> <clip_id>.mp4."""
    from PIL import Image

    try:
        from emo.generate import generate_batch
    except ImportError as exc:
        raise HarnessError(f"cannot score a checkpoint: emo.generate is not importable ({exc})") from None
    inputs = out_dir / "_inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    items = []
    for c in clips:
        image, wav = inputs / f"{c.clip_id}.png", inputs / f"{c.clip_id}.wav"
        if not image.is_file():
            Image.fromarray(read_frames(c.video, end=1.5 / c.fps)[0]).save(image)
        if not wav.is_file():
            save_wav(wav, load_audio(c.video, rate=AUDIO_RATE), AUDIO_RATE)
        items.append({"id": c.clip_id, "image": str(image), "audio": str(wav), "fps": c.fps,
                      "out": str(out_dir / f"{c.clip_id}.mp4")})
    try:
        generate_batch(str(ckpt), items, str(out_dir), **settings)
    except Exception as exc:  # reported with the checkpoint named; the inputs stay for a rerun
        raise HarnessError(f"generation with {ckpt} failed: {type(exc).__name__}: {exc}") from exc
    videos = {c.clip_id: out_dir / f"{c.clip_id}.mp4" for c in clips}
    missing = [cid for cid, p in videos.items() if not p.is_file()]
    if missing:
        raise HarnessError(f"emo.generate.generate_batch({ckpt}) wrote no video for {missing[:5]} in {out_dir}")
    check_videos(videos, f"videos generated by {ckpt}")
    return videos


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


def score(dataset: str | os.PathLike, systems: list[SystemSpec], out_dir: str | os.PathLike,
          metrics: list[Metric] | None = None, cfg: ScoreConfig | None = None,
          clips: list[HeldOutClip] | None = None, weights_dir: str | None = None,
          device: str = "cpu") -> list[Path]:
    """Score every system (and the baselines) on the held-out clips; write one JSON each."""
    cfg = cfg or ScoreConfig()
    dataset, out_dir = Path(dataset), Path(out_dir)
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
    runners = {s.name: MetricRunner(metrics, cfg.bootstrap) for s in systems}
    records = {s.name: [] for s in systems}
    for clip in clips:
        gt, audio, labels = _load_gt(dataset, clip)
        gt_cache: dict = {}
        for spec in systems:
            frames, fps, sys_audio = _system_frames(spec, clip, gt, audio)
            same_as_gt = spec.baseline is not None and spec.baseline.name != "reference_repeated"
            sample, record, shared = build_sample(clip, frames, fps, gt, sys_audio, labels, gt_cache, same_as_gt)
            runners[spec.name].add(sample)
            records[spec.name].append(record)
            for key in _GT_CACHE_KEYS:  # keep what this system computed about the ground truth
                if key in sample.cache:
                    shared[key] = sample.cache[key]
            if spec.kind == "baseline" and cfg.write_baseline_videos:
                path = out_dir / "videos" / safe_name(spec.name) / f"{clip.clip_id}.mp4"
                write_video(path, frames, clip.fps, audio=sys_audio, audio_rate=AUDIO_RATE, crf=28)
                spec.videos = {**(spec.videos or {}), clip.clip_id: path}
    env = environment(metrics, weights_dir)
    common = {"dataset": {"path": str(dataset.resolve()), "manifest_sha256": manifest_hash(dataset),
                          "split": cfg.split, "n_clips": len(clips)},
              "env": env}
    written = []
    for spec in systems:
        metric_entries, per_clip = runners[spec.name].results()
        prefix = "baseline_" if spec.kind == "baseline" else ""
        path = out_dir / f"{prefix}{safe_name(spec.name)}.json"
        doc = {
            "schema": SCHEMA,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "system": {"name": spec.name, "kind": spec.kind, "path": spec.path, "config": spec.config,
                       "step": spec.step, "meta": spec.meta,
                       "description": spec.baseline.description if spec.baseline else None},
            "settings": {"generation": spec.generation,
                         "scoring": {**asdict(cfg.bootstrap), "split": cfg.split, "max_clips": cfg.max_clips,
                                     "shift_frames": cfg.shift_frames, "audio_rate": AUDIO_RATE}},
            **common,
            "alignment": {"rule": ALIGNMENT_RULE, "summary": summarise(records[spec.name]),
                          "clips": {r.clip_id: r.to_dict() for r in records[spec.name]}},
            "metrics": metric_entries,
            "per_clip": per_clip,
            "videos": {cid: relative_or_absolute(p, out_dir) for cid, p in (spec.videos or {}).items()},
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
