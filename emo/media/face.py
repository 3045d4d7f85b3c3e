"""The face analyser: MediaPipe Tasks FaceLandmarker (478 landmarks, 52 blendshapes, head pose)
and FaceDetector, behind one small class.

MediaPipe's model files are not in its wheel. They are looked up, in order, in the directory
named by ``$EMO_MEDIAPIPE_DIR``, ``./models/mediapipe`` and ``~/.cache/emo/mediapipe``; a missing
file raises ``ModelFileMissing`` naming the file, where it was looked for and its official URL.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fileio import atomic_path, sha256_file
from .pose import rotation_to_euler

# Official MediaPipe model files (Apache-2.0). Several names are accepted for the landmarker:
# the official one and the one older projects ship ("..._v2_with_blendshapes").
MEDIAPIPE_MODELS = {
    "face_landmarker": {
        "files": ["face_landmarker.task", "face_landmarker_v2_with_blendshapes.task"],
        "url": "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task",
        "sha256": ["64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"],
    },
    "face_detector": {
        "files": ["blaze_face_short_range.tflite"],
        "url": "https://storage.googleapis.com/mediapipe-models/face_detector/blaze_face_short_range/float16/1/blaze_face_short_range.tflite",
        "sha256": ["b4578f35940bf5a1a655214a1cce5cab13eba73c1297cd78e1a04c2380b0152f"],
    },
}

# Landmark indices (MediaPipe face mesh) used across the toolkit.
UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14
MOUTH_LEFT, MOUTH_RIGHT = 61, 291
LEFT_EYE_OUTER, RIGHT_EYE_OUTER = 263, 33
FOREHEAD, CHIN = 10, 152


class ModelFileMissing(FileNotFoundError):
    pass


@contextlib.contextmanager
def _quiet_native_logs():
    """Silence the C++ start-up chatter (TFLite/XNNPACK, LiteRT) MediaPipe prints on fd 2.

    Python exceptions are unaffected: their text travels with the exception, not through fd 2.
    """
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def mediapipe_search_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("EMO_MEDIAPIPE_DIR"):
        dirs.append(Path(os.environ["EMO_MEDIAPIPE_DIR"]))
    dirs += [Path("models/mediapipe"), Path.home() / ".cache" / "emo" / "mediapipe"]
    return dirs


def resolve_mediapipe_model(name: str, model_dir: str | os.PathLike | None = None) -> Path:
    spec = MEDIAPIPE_MODELS[name]
    dirs = [Path(model_dir)] if model_dir else mediapipe_search_dirs()
    for d in dirs:
        for fname in spec["files"]:
            if (d / fname).is_file():
                return d / fname
    raise ModelFileMissing(
        f"MediaPipe model '{spec['files'][0]}' not found in {', '.join(map(str, dirs))}. "
        f"Download it from {spec['url']} into one of these directories "
        f"(or set EMO_MEDIAPIPE_DIR)."
    )


class ModelChecksumMismatch(ValueError):
    pass


def fetch_mediapipe_models(dest: str | os.PathLike | None = None) -> list[Path]:
    """Download the MediaPipe model files that cannot be found (needs internet), atomically.

    Files go to `dest` (default: ~/.cache/emo/mediapipe, searched automatically). A download whose
    sha256 is not one recorded here is refused before it is moved into place (nothing lands, the
    error gives the digest): a truncated or substituted file must not be used silently. If Google
    updates the official file, add its digest to MEDIAPIPE_MODELS after checking it.
    """
    import urllib.request

    dest = Path(dest) if dest else Path.home() / ".cache" / "emo" / "mediapipe"
    paths = []
    for name, spec in MEDIAPIPE_MODELS.items():
        try:
            paths.append(resolve_mediapipe_model(name))
            continue
        except ModelFileMissing:
            pass
        target = dest / spec["files"][0]

        def download(tmp: Path, url=spec["url"]) -> None:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
                while block := response.read(1 << 20):
                    f.write(block)

        def verify(tmp: Path, spec=spec, target=target) -> None:
            digest = sha256_file(tmp)
            if digest not in spec["sha256"]:
                raise ModelChecksumMismatch(
                    f"the download of {target.name} from {spec['url']} has sha256 {digest}, not one recorded "
                    f"in emo.media.face.MEDIAPIPE_MODELS ({', '.join(spec['sha256'])}); refused, nothing written")

        with atomic_path(target) as tmp:     # moved into place only if the block ends normally
            download(tmp)
            verify(tmp)                       # checked BEFORE the move
        paths.append(target)
    return paths


@dataclass
class FaceObservation:
    """One face in one frame. Coordinates are in pixels of the analysed frame."""
    box: np.ndarray           # (4,) x0, y0, x1, y1 from the landmarks' extent
    landmarks: np.ndarray     # (478, 3) x, y in pixels, z in MediaPipe's relative units
    blendshapes: np.ndarray   # (52,) scores in BLENDSHAPE_NAMES order
    matrix: np.ndarray        # (4, 4) facial transformation matrix
    pose: np.ndarray          # (3,) yaw, pitch, roll in degrees

    @property
    def size(self) -> float:
        """Face height in pixels (forehead to chin extent of the landmarks)."""
        return float(self.box[3] - self.box[1])


BLENDSHAPE_NAMES = [
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft",
    "browOuterUpRight", "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft",
    "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight",
    "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft",
    "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft",
    "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper",
    "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft",
    "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
]


class FaceAnalyser:
    """Landmarks, blendshapes and pose for every face in a frame.

    ``video=True`` uses MediaPipe's VIDEO running mode (tracks between calls; timestamps must
    increase), which is faster on consecutive frames. Create one analyser per worker process:
    MediaPipe graphs are not shared across processes.
    """

    def __init__(self, max_faces: int = 2, video: bool = True, model_dir: str | None = None,
                 min_confidence: float = 0.5):
        from mediapipe.tasks import python as mpt
        from mediapipe.tasks.python import vision

        self._vision = vision
        self.video = video
        model = resolve_mediapipe_model("face_landmarker", model_dir)
        mode = vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE
        options = vision.FaceLandmarkerOptions(
            base_options=mpt.BaseOptions(model_asset_path=str(model)),
            running_mode=mode, num_faces=max_faces,
            min_face_detection_confidence=min_confidence,
            min_face_presence_confidence=min_confidence,
            min_tracking_confidence=min_confidence,
            output_face_blendshapes=True, output_facial_transformation_matrixes=True,
        )
        with _quiet_native_logs():
            self._landmarker = vision.FaceLandmarker.create_from_options(options)
        self._last_ts = -1
        self._warm = False

    def analyse(self, rgb: np.ndarray, timestamp_ms: int | None = None) -> list[FaceObservation]:
        import mediapipe as mp

        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        with contextlib.nullcontext() if self._warm else _quiet_native_logs():
            if self.video:
                ts = self._last_ts + 1 if timestamp_ms is None else max(int(timestamp_ms), self._last_ts + 1)
                self._last_ts = ts
                result = self._landmarker.detect_for_video(image, ts)
            else:
                result = self._landmarker.detect(image)
        self._warm = True
        h, w = rgb.shape[:2]
        faces = []
        for i, lms in enumerate(result.face_landmarks):
            pts = np.array([[p.x * w, p.y * h, p.z * w] for p in lms], dtype=np.float32)
            scores = np.array([c.score for c in result.face_blendshapes[i]], dtype=np.float32) \
                if result.face_blendshapes else np.zeros(52, np.float32)
            matrix = np.array(result.facial_transformation_matrixes[i], dtype=np.float32) \
                if result.facial_transformation_matrixes else np.eye(4, dtype=np.float32)
            box = np.array([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()],
                           dtype=np.float32)
            faces.append(FaceObservation(box=box, landmarks=pts, blendshapes=scores, matrix=matrix,
                                         pose=rotation_to_euler(matrix[:3, :3]).astype(np.float32)))
        # Largest face first: callers that want "the" face take faces[0].
        faces.sort(key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        return faces

    def close(self) -> None:
        if self._landmarker is not None:
            with _quiet_native_logs():
                self._landmarker.close()
            self._landmarker = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FaceDetector:
    """BlazeFace short-range boxes and scores (cheap; used to count faces and find small ones)."""

    def __init__(self, model_dir: str | None = None, min_confidence: float = 0.5):
        from mediapipe.tasks import python as mpt
        from mediapipe.tasks.python import vision

        model = resolve_mediapipe_model("face_detector", model_dir)
        options = vision.FaceDetectorOptions(
            base_options=mpt.BaseOptions(model_asset_path=str(model)),
            running_mode=vision.RunningMode.IMAGE, min_detection_confidence=min_confidence)
        with _quiet_native_logs():
            self._detector = vision.FaceDetector.create_from_options(options)

    def detect(self, rgb: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """[(box x0,y0,x1,y1 in pixels, score)], highest score first."""
        import mediapipe as mp

        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        out = []
        with _quiet_native_logs():   # the detector is cheap; its first call warns about alignment
            detections = self._detector.detect(image).detections
        for d in detections:
            b = d.bounding_box
            out.append((np.array([b.origin_x, b.origin_y, b.origin_x + b.width, b.origin_y + b.height],
                                 dtype=np.float32), float(d.categories[0].score)))
        return sorted(out, key=lambda x: -x[1])

    def close(self) -> None:
        if self._detector is not None:
            with _quiet_native_logs():
                self._detector.close()
            self._detector = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
