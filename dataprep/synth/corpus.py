"""The embedded synthetic sample corpus: raw multi-shot videos with exact ground truth.

``generate_corpus(out_dir, seed)`` writes, for each video of corpus.yaml, ``<id>.mp4`` (H.264 +
AAC 16 kHz mono), ``<id>.groundtruth.json`` (cuts, speaker turns, shots with the expected
pipeline decision) and ``<id>.groundtruth.npz`` (per-frame boxes, pose, mouth opening, blinks,
speaker), plus ``groups.csv`` (the identity group of each video) and ``corpus.json`` (what was
written, for the seed, config and code version; its presence with every listed file intact
makes a re-run a no-op). ``cached_corpus(seed)`` keeps one rendered copy per user for tests.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from pathlib import Path

import numpy as np
import yaml

from emo.fileio import atomic_write
from emo.media.video import write_video

from .face import random_style
from .shots import FACE_KINDS, SPEECH_KINDS, ShotPlan, plan_shot, render_frame
from .voice import RATE, random_voice

CONFIG_PATH = Path(__file__).with_name("corpus.yaml")
MANIFEST_NAME = "corpus.json"

# What the dataprep pipeline is expected to do with each kind of shot: (decision, stage, reason).
EXPECTED = {
    "talk": ("keep", None, None),
    "audio_shifted": ("keep", None, None),
    "silent": ("reject", "diarize", "no speech"),
    "noface_music": ("reject", "faces", "no face"),
    "noface_speech": ("reject", "faces", "no face"),
    "small_face": ("reject", "faces", "face too small"),
    "two_faces": ("reject", "faces", "multiple faces"),
}


def load_config(path: str | os.PathLike = CONFIG_PATH) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def plan_video(cfg: dict, video_index: int, seed: int) -> tuple[list[ShotPlan], list[str]]:
    """Shot plans and identity names of one video, deterministic from (seed, video_index)."""
    video = cfg["videos"][video_index]
    n_ids = cfg["identities_per_video"]
    styles, voices, names = [], [], []
    for local in range(n_ids):
        g = video_index * n_ids + local                 # global identity index
        rng = np.random.default_rng([seed, 1000 + g])
        styles.append(random_style(rng, g))
        voices.append(random_voice(rng, g))
        names.append(f"id{g:02d}")
    plans, start = [], 0
    hue0 = np.random.default_rng([seed, 2000 + video_index]).random()
    for k, spec in enumerate(video["shots"]):
        rng = np.random.default_rng([seed, video_index, k])
        # Consecutive shots differ by ~137 degrees of hue: every cut is a clear scene change.
        plan = plan_shot(rng, spec, f"s{k}", start, hue0 + 0.382 * k, styles, voices, cfg)
        plans.append(plan)
        start += plan.n_frames
    return plans, names


def _speaker_turns(plans: list[ShotPlan], names: list[str], fps: float) -> list[dict]:
    """Contiguous stretches of audible speech per speaker (phrase pauses inside a shot are kept)."""
    turns = []
    for p in plans:
        heard = np.flatnonzero(p.speaking >= 0)
        if p.speaker is None or not len(heard):
            continue
        turns.append({"speaker": f"spk_{names[p.speaker]}",
                      "start_s": round((p.start_frame + heard[0]) / fps, 3),
                      "end_s": round((p.start_frame + heard[-1] + 1) / fps, 3)})
    return turns


def _shot_record(p: ShotPlan, names: list[str], fps: float, face_small_frac: float) -> dict:
    decision, stage, reason = EXPECTED[p.kind]
    has_face = p.kind in FACE_KINDS
    identity = names[p.faces[0].identity] if has_face else None
    return {
        "id": p.id, "kind": p.kind,
        "start_frame": p.start_frame, "end_frame": p.start_frame + p.n_frames,
        "start_s": round(p.start_frame / fps, 3), "end_s": round((p.start_frame + p.n_frames) / fps, 3),
        "duration_s": round(p.n_frames / fps, 3),
        "has_face": has_face, "face_small": p.kind == "small_face",
        "num_faces": len(p.faces), "has_speech": p.kind in SPEECH_KINDS,
        "speaker": f"spk_{names[p.speaker]}" if p.speaker is not None else None,
        "identity": identity,
        "identities": [names[f.identity] for f in p.faces],
        "expected_audio_offset_frames": p.offset_frames if p.kind in SPEECH_KINDS else None,
        "expected_decision": decision, "expected_stage": stage, "expected_reason": reason,
        "face_height_frac": face_small_frac if has_face else None,
    }


def render_video(cfg: dict, video_index: int, seed: int, out_dir: Path) -> Path:
    """Render one video with its ground truth; return the mp4 path."""
    fps, W, H = cfg["fps"], cfg["width"], cfg["height"]
    vid = cfg["videos"][video_index]["id"]
    plans, names = plan_video(cfg, video_index, seed)
    T = sum(p.n_frames for p in plans)
    gt = {"boxes": np.full((T, 4), np.nan, np.float32), "pose": np.full((T, 3), np.nan, np.float32),
          "mouth_open": np.zeros(T, np.float32), "blink": np.zeros(T, np.float32),
          "speaking": np.full(T, -1, np.int64)}

    def frames():
        for p in plans:
            for i in range(p.n_frames):
                t = p.start_frame + i
                frame, box, pose = render_frame(p, i)
                if box is not None:
                    gt["boxes"][t], gt["pose"][t] = box, pose
                    gt["mouth_open"][t] = p.faces[0].mouth[i]
                    gt["blink"][t] = p.faces[0].blink[i]
                yield frame

    audio = np.concatenate([p.audio for p in plans])
    for p in plans:
        gt["speaking"][p.start_frame:p.start_frame + p.n_frames] = p.speaking
    path = out_dir / f"{vid}.mp4"
    write_video(path, frames(), fps, audio=audio, audio_rate=RATE)
    # Boxes are clipped to the frame, as a detector's would be.
    gt["boxes"][:, [0, 2]] = np.clip(gt["boxes"][:, [0, 2]], 0, W)
    gt["boxes"][:, [1, 3]] = np.clip(gt["boxes"][:, [1, 3]], 0, H)

    shots = []
    for p in plans:
        rows = gt["boxes"][p.start_frame:p.start_frame + p.n_frames]
        frac = float(np.nanmedian(rows[:, 3] - rows[:, 1]) / H) if p.faces else None
        shots.append(_shot_record(p, names, fps, round(frac, 4) if frac is not None else None))
    cut_frames = [p.start_frame for p in plans[1:]]
    meta = {
        "file": path.name, "fps": fps, "width": W, "height": H, "n_frames": T,
        "duration_s": round(T / fps, 3), "seed": seed,
        "audio": {"codec": "aac", "sample_rate": RATE, "channels": 1},
        "offset_convention": "expected_audio_offset_frames > 0: the audio is LATE relative to the "
                             "video by that many frames. In the npz, mouth_open/boxes/pose/blink are in "
                             "video time; speaking is in audio time (who is heard).",
        "box_convention": "x0,y0,x1,y1 pixels: extent of the face region MediaPipe's mesh covers "
                          "(forehead to chin, cheek to cheek) of the labelled face (the speaker's in "
                          "two_faces shots); NaN where no face",
        "pose_convention": "yaw, pitch, roll degrees in emo.media.pose's convention (MediaPipe's)",
        "identities": names,
        "speakers": [f"spk_{n}" for n in names],   # npz `speaking` indexes this list
        "cuts_s": [round(f / fps, 3) for f in cut_frames], "cut_frames": cut_frames,
        "speaker_turns": _speaker_turns(plans, names, fps),
        "shots": shots,
    }
    buf = io.BytesIO()
    np.savez_compressed(buf, **gt)
    atomic_write(out_dir / f"{vid}.groundtruth.npz", buf.getvalue())
    atomic_write(out_dir / f"{vid}.groundtruth.json", json.dumps(meta, indent=1).encode())
    return path


def code_fingerprint() -> str:
    """sha256 of this package's source and config: a corpus rendered by other code is stale."""
    h = hashlib.sha256()
    here = Path(__file__).parent
    for f in sorted([*here.glob("*.py"), *here.glob("*.yaml")]):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _complete(out_dir: Path, seed: int, cfg: dict) -> list[Path] | None:
    """The video paths if a finished corpus for this seed, config and code is already there."""
    try:
        manifest = json.loads((out_dir / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    if (manifest.get("seed"), manifest.get("config"), manifest.get("code")) != (seed, cfg, code_fingerprint()):
        return None
    for name, size in manifest.get("files", {}).items():
        f = out_dir / name
        if not f.is_file() or f.stat().st_size != size:
            return None
    return [out_dir / v for v in manifest["videos"]]


def generate_corpus(out_dir: str | os.PathLike, seed: int = 0,
                    config: str | os.PathLike | dict | None = None) -> list[Path]:
    """Render the corpus into out_dir (skipped when already complete for this seed); mp4 paths."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"corpus output {out_dir} exists and is not a directory")
    cfg = config if isinstance(config, dict) else load_config(config or CONFIG_PATH)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    seed = int(seed)
    done = _complete(out_dir, seed, cfg)
    if done is not None:
        return done
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)   # incomplete until rewritten below
    t0 = time.time()
    videos = [render_video(cfg, i, seed, out_dir) for i in range(len(cfg["videos"]))]
    groups = io.StringIO()
    writer = csv.writer(groups, lineterminator="\n")
    writer.writerow(["source_video", "group"])
    for i, v in enumerate(videos):
        ids = [f"id{i * cfg['identities_per_video'] + k:02d}" for k in range(cfg["identities_per_video"])]
        writer.writerow([v.name, "-".join(ids)])
    atomic_write(out_dir / "groups.csv", groups.getvalue().encode())
    names = [v.name for v in videos]
    names += [f"{v.stem}.groundtruth.{ext}" for v in videos for ext in ("json", "npz")]
    names.append("groups.csv")
    manifest = {"seed": seed, "config": cfg, "code": code_fingerprint(), "videos": [v.name for v in videos],
                "files": {n: (out_dir / n).stat().st_size for n in names},
                "render_seconds": round(time.time() - t0, 2)}
    atomic_write(out_dir / MANIFEST_NAME, json.dumps(manifest, indent=1).encode())
    return videos



def cached_corpus(seed: int = 0) -> list[Path]:
    """The default corpus in a per-user cache ($EMO_SYNTH_CACHE or ~/.cache/emo/synth/seed<N>),
    rendered on first use: lets every test module share one render."""
    root = Path(os.environ.get("EMO_SYNTH_CACHE", Path.home() / ".cache" / "emo" / "synth"))
    return generate_corpus(root / f"seed{seed}", seed=seed)
