"""F-SIM: ArcFace identity similarity between the reference image and the generated frames.

Faces are aligned the way insightface aligns them for ArcFace: a similarity transform (Umeyama,
no reflection) from five points (eye centres, nose tip, mouth corners; here taken from
MediaPipe's landmarks instead of RetinaFace's) to the standard 112 x 112 ArcFace template, then
embeddings compared by cosine similarity, averaged over frames.

`f_sim` is the mean similarity of the generated frames to the reference (higher = identity kept;
a frozen copy of the reference scores highest, which is why EMO reads it beside the motion
metrics). `f_sim_gap` = |f_sim(generated) - f_sim(ground truth)|: how far the system's identity
drift is from the real video's own (lower is better).
"""
from __future__ import annotations

import numpy as np
import torch

from .base import ClipSample, Metric, device_of, faces_cover, finite_mean, sample_landmarks

# insightface face_align.arcface_dst: image-left eye, image-right eye, nose, mouth left, mouth right.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], np.float64)
EYE_A, EYE_B = (33, 133), (263, 362)     # MediaPipe eye corners (one pair per eye)
NOSE_TIP, MOUTH_CORNERS = 1, (61, 291)


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """(478, >=2) pixel landmarks -> (5, 2) in ArcFace's order (sorted left/right in the image)."""
    eyes = sorted([landmarks[list(EYE_A), :2].mean(0), landmarks[list(EYE_B), :2].mean(0)], key=lambda p: p[0])
    mouth = sorted([landmarks[MOUTH_CORNERS[0], :2], landmarks[MOUTH_CORNERS[1], :2]], key=lambda p: p[0])
    return np.array([eyes[0], eyes[1], landmarks[NOSE_TIP, :2], mouth[0], mouth[1]], np.float64)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) src -> dst: 2 x 3 matrix."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ sign @ vt
    scale = np.trace(np.diag(sig) @ sign) / s.var(0).sum()
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    from skimage.transform import AffineTransform, warp
    m = similarity_transform(five_points(landmarks), ARCFACE_TEMPLATE)
    tform = AffineTransform(matrix=np.vstack([m, [0, 0, 1]]))
    out = warp(image, tform.inverse, output_shape=(size, size), order=1, preserve_range=True)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def embed(net, faces: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        e = net(net.preprocess(torch.from_numpy(np.ascontiguousarray(faces))).to(device_of(net))).double()
    return torch.nn.functional.normalize(e, dim=1).cpu().numpy()


def reference_landmarks(sample: ClipSample) -> np.ndarray | None:
    if "reference_landmarks" not in sample.cache:
        from emo.media.face import FaceAnalyser
        with FaceAnalyser(max_faces=1, video=False) as analyser:
            faces = analyser.analyse(sample.reference)
        sample.cache["reference_landmarks"] = faces[0].landmarks if faces else None
    return sample.cache["reference_landmarks"]


class FSIM(Metric):
    name = "f_sim"
    direction = "higher"
    directions = {"f_sim": "higher", "f_sim_gap": "lower"}
    weights = ("arcface_r100",)
    needs_mediapipe = True
    description = "ArcFace cosine similarity of generated frames to the reference image (mean over frames)"

    def __init__(self, weights_dir=None, device="cpu", frame_stride: int = 2):
        super().__init__(weights_dir, device)
        self.frame_stride = max(1, int(frame_stride))

    protocol_fields = {"network": "ArcFace iresnet (insightface arcface_torch backbone)",
                       "crop": "5-point similarity alignment to the 112 x 112 ArcFace template (MediaPipe landmarks)",
                       "frames": "every frame_stride-th frame with a face; reference = the clip's first frame",
                       "missing face": "a clip counts only if the generated face is found in >= 90% of the frames "
                                       "where the ground truth has one"}

    def settings(self) -> dict:
        return {"frame_stride": self.frame_stride}

    def _similarity(self, net, ref_emb, sample, which) -> float:
        frames, track = getattr(sample, which), sample_landmarks(sample, which)
        idx = [i for i in range(0, len(frames), self.frame_stride) if track.found[i]]
        if not idx:
            return float("nan")
        faces = np.stack([align_face(frames[i], track.landmarks[i]) for i in idx])
        return finite_mean(embed(net, faces) @ ref_emb)

    def score_clip(self, sample: ClipSample) -> dict:
        self.require_available()
        from eval.networks import load_network
        net = load_network("arcface", self.weights_dir).to(self.device)
        ref = reference_landmarks(sample)
        if ref is None or not faces_cover(sample):
            return {"f_sim": float("nan"), "f_sim_gap": float("nan")}
        ref_emb = embed(net, align_face(sample.reference, ref)[None])[0]
        gen = self._similarity(net, ref_emb, sample, "generated")
        gt = self._similarity(net, ref_emb, sample, "ground_truth")
        return {"f_sim": gen, "f_sim_gap": abs(gen - gt)}
