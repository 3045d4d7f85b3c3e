"""The contract between the metrics and the harness: one aligned clip (`ClipSample`) and one
metric (`Metric`).

A metric is either per-clip (`level = "clip"`: `score_clip(sample)` gives a float or a dict of
named floats) or set-level (`level = "set"`: FID, FVD, E-FID). Set-level metrics split into
`features(sample)` per clip and `aggregate(gen_list, real_list)` so the harness can bootstrap over
clips by resampling the per-clip feature arrays.

A metric whose pretrained weights are missing says so in `status()` ("unavailable: ...", naming
the file, where it was looked for and the command that fetches it) and raises
`MetricUnavailable` if asked for a number anyway: never a number from random weights.

Things several metrics need from the same clip (MediaPipe landmarks of the generated and of the
ground-truth frames, face crops) are computed once and kept in `sample.cache`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np


class MetricUnavailable(RuntimeError):
    """Raised when a metric is asked for a number it cannot honestly give (weights missing...)."""


@dataclass
class ClipSample:
    """One held-out clip with its generated counterpart, after the harness's alignment rule."""
    clip_id: str
    fps: float
    generated: np.ndarray             # (T, H, W, 3) uint8, after the alignment rule
    ground_truth: np.ndarray          # (T, H, W, 3) uint8, same T, H, W
    reference: np.ndarray             # (H, W, 3) uint8: the clip's first frame
    audio: np.ndarray                 # float32 mono: the audio the generated video should follow
    audio_rate: int = 16000
    gt_labels: dict = field(default_factory=dict)   # emo.manifest.load_labels of the clip
    cache: dict = field(default_factory=dict)       # lazily computed, shared by metrics

    def __post_init__(self):
        for name in ("generated", "ground_truth"):
            arr = getattr(self, name)
            if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
                raise ValueError(f"ClipSample {self.clip_id}: {name} must be (T,H,W,3) uint8, "
                                 f"got {arr.shape} {arr.dtype}")
        if self.generated.shape != self.ground_truth.shape:
            raise ValueError(f"ClipSample {self.clip_id}: generated {self.generated.shape} and ground "
                             f"truth {self.ground_truth.shape} differ: apply the alignment rule first")
        if self.reference.ndim != 3 or self.reference.dtype != np.uint8:
            raise ValueError(f"ClipSample {self.clip_id}: reference must be (H,W,3) uint8")

    @property
    def n_frames(self) -> int:
        return int(self.generated.shape[0])


class Metric:
    """Base class; subclasses set the class attributes and implement one of the two levels."""
    name: str = ""
    direction: Literal["higher", "lower"] = "lower"
    level: Literal["clip", "set"] = "clip"
    weights: tuple[str, ...] = ()     # names in eval.weights.REGISTRY this metric needs
    description: str = ""             # one line for reports: what the number means
    needs_mediapipe: bool = False     # uses MediaPipe face landmarks (model file checked in status)
    directions: dict = {}             # when score_clip returns a dict: direction per output name
    # How the number is made, recorded in every results JSON and shown in the report: detector,
    # crop, frame sampling, resize, what is compared. `protocol()` adds the instance's settings.
    protocol_fields: dict = {}

    def __init__(self, weights_dir: str | Path | None = None, device: str = "cpu"):
        # device: where the networks run ("cpu", "cuda"); MediaPipe always runs on the CPU.
        self.weights_dir = weights_dir
        self.device = device

    def settings(self) -> dict:
        """The cost/route settings this instance was built with (metrics.yaml), for the protocol."""
        return {}

    def protocol(self) -> dict:
        return {**self.protocol_fields, **self.settings()}

    # -- availability -------------------------------------------------------------------------
    def status(self) -> str:
        """"ok", or "unavailable: <missing file, where expected, the command that gets it>"."""
        from eval.weights import weights_status_line
        problems = [p for p in (weights_status_line(w, self.weights_dir) for w in self.weights) if p]
        if self.needs_mediapipe:
            problems += [p for p in [mediapipe_problem()] if p]
        return "ok" if not problems else "unavailable: " + "; ".join(problems)

    def require_available(self) -> None:
        status = self.status()
        if status != "ok":
            raise MetricUnavailable(status.removeprefix("unavailable: "))

    # -- per-clip metrics ---------------------------------------------------------------------
    def score_clip(self, sample: ClipSample) -> float | dict[str, float]:
        raise NotImplementedError(f"{self.name} is a {self.level}-level metric")

    # -- set-level metrics --------------------------------------------------------------------
    def features(self, sample: ClipSample) -> tuple[np.ndarray, np.ndarray]:
        """(generated features (n, d), real features (m, d)) of one clip."""
        raise NotImplementedError(f"{self.name} is a {self.level}-level metric")

    def aggregate(self, gen: list[np.ndarray], real: list[np.ndarray]) -> float:
        raise NotImplementedError(f"{self.name} is a {self.level}-level metric")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} ({self.level}, {self.direction} is better)>"


def mediapipe_problem() -> str:
    """'' when MediaPipe's face landmarker model file is found, else why not (file, dirs, URL)."""
    from emo.media.face import ModelFileMissing, resolve_mediapipe_model
    try:
        resolve_mediapipe_model("face_landmarker")
    except ModelFileMissing as exc:
        return str(exc)
    return ""


# --- shared per-sample computations ------------------------------------------------------------

@dataclass
class FaceTrack:
    """MediaPipe analysis of every frame of one video (NaN where no face was found)."""
    landmarks: np.ndarray     # (T, 478, 3) pixels (x, y), z relative
    blendshapes: np.ndarray   # (T, 52)
    pose: np.ndarray          # (T, 3) yaw, pitch, roll in degrees
    rotations: np.ndarray     # (T, 3, 3)
    boxes: np.ndarray         # (T, 4) x0, y0, x1, y1 pixels

    @property
    def found(self) -> np.ndarray:
        return ~np.isnan(self.pose[:, 0])


def analyse_frames(frames: np.ndarray, fps: float, model_dir: str | None = None) -> FaceTrack:
    """Run MediaPipe's FaceLandmarker (video mode, largest face) over (T, H, W, 3) frames."""
    from emo.media.face import FaceAnalyser

    t = len(frames)
    track = FaceTrack(landmarks=np.full((t, 478, 3), np.nan, np.float32),
                      blendshapes=np.full((t, 52), np.nan, np.float32),
                      pose=np.full((t, 3), np.nan, np.float32),
                      rotations=np.full((t, 3, 3), np.nan, np.float32),
                      boxes=np.full((t, 4), np.nan, np.float32))
    with FaceAnalyser(max_faces=1, video=True, model_dir=model_dir) as analyser:
        for i, frame in enumerate(frames):
            faces = analyser.analyse(frame, timestamp_ms=int(round(i * 1000.0 / fps)))
            if faces:
                f = faces[0]
                track.landmarks[i], track.blendshapes[i], track.pose[i] = f.landmarks, f.blendshapes, f.pose
                track.rotations[i], track.boxes[i] = f.matrix[:3, :3], f.box
    return track


def sample_landmarks(sample: ClipSample, which: Literal["generated", "ground_truth"]) -> FaceTrack:
    """The FaceTrack of the generated or ground-truth frames, computed once per sample.

    Both sides are measured with the same analyser on the same aligned frames (not taken from
    the dataset's stored labels) so that a difference between them is a difference in the
    videos, not in how they were measured.
    """
    if which not in ("generated", "ground_truth"):
        raise ValueError(f"which must be 'generated' or 'ground_truth', not {which!r}")
    key = ("face_track", which)
    other = ("face_track", "ground_truth" if which == "generated" else "generated")
    if key not in sample.cache and other in sample.cache and np.array_equal(sample.generated, sample.ground_truth):
        sample.cache[key] = sample.cache[other]      # the ground-truth baseline: same frames, analyse once
    if key not in sample.cache:
        sample.cache[key] = analyse_frames(getattr(sample, which), sample.fps)
    return sample.cache[key]


# A face metric's clip value counts only when the generated video shows a face in at least this share
# of the frames where the ground truth shows one. Both sides are measured by the same detector on
# frames of the same clip, so on real footage the share is ~1 (MediaPipe misses a few frames at
# most); 0.9 leaves that margin. Below it, averaging over the frames that kept a face would score a
# generator that destroys faces on what little it kept: the clip is missing instead (the metric is
# then `partial`) and `face_detection_rate` shows why.
MIN_FACE_COVERAGE = 0.9

FACE_PROTOCOL = {"detector": "MediaPipe FaceLandmarker (video mode, largest face), both sides",
                 "frames": "every aligned frame",
                 "missing face": f"a clip counts only if the generated video has a face in >= {MIN_FACE_COVERAGE:.0%} "
                                 "of the frames where the ground truth has one; otherwise missing (partial)"}


def face_coverage(sample: ClipSample) -> float:
    """Share of ground-truth face frames in which the generated video also has a face (NaN: no GT face)."""
    gen, gt = sample_landmarks(sample, "generated").found, sample_landmarks(sample, "ground_truth").found
    return float((gen & gt).sum() / gt.sum()) if gt.any() else float("nan")


def faces_cover(sample: ClipSample) -> bool:
    cov = face_coverage(sample)
    return bool(np.isfinite(cov) and cov >= MIN_FACE_COVERAGE)


class FaceDetectionRate(Metric):
    """Always reported, so a generator that destroys faces shows it beside its face metrics."""
    needs_mediapipe = True
    name = "face_detection_rate"
    direction = "higher"
    description = "share of generated frames in which a face is found (ground truth: see its baseline)"
    protocol_fields = {"detector": FACE_PROTOCOL["detector"], "frames": "every aligned generated frame"}

    def score_clip(self, sample: ClipSample) -> float:
        return float(sample_landmarks(sample, "generated").found.mean())


def device_of(module) -> "torch.device":
    """Where a network's parameters live (inputs are moved there, outputs brought back)."""
    return next(module.parameters()).device


def finite_mean(values) -> float:
    """Mean over finite values; NaN when there are none (a clip with no face anywhere)."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")
