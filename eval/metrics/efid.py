"""E-FID: Frechet distance between the expression parameters of generated and ground-truth frames.

`e_fid_3dmm` is E-FID as EMO's paper defines it: the Frechet distance over the 64 expression
coefficients that Deng et al. 2019's 3D face reconstruction regressor (Deep3DFaceRecon, ResNet-50,
`epoch_20.pth`) predicts per frame. The regressor alone gives the coefficients: the BFM basis is
only needed to turn them into a mesh, which E-FID does not do. Input alignment uses the five
standard 3D landmarks of `similarity_Lm3D_all.mat`; image landmarks come from MediaPipe (see
eval.networks.deep3d). `e_fid_blendshapes` is a separately named substitute over MediaPipe's 52
blendshape scores: same construction, different features, NOT comparable with published E-FID.

Both use the frames where a face was found on that side (a frame without a face has no expression).
"""
from __future__ import annotations

import numpy as np

from .base import ClipSample, Metric, device_of, sample_landmarks
from .frechet import FrechetOfFeatures


class EFIDBlendshapes(FrechetOfFeatures, Metric):
    name = "e_fid_blendshapes"
    direction = "lower"
    level = "set"
    needs_mediapipe = True
    description = ("Frechet distance of MediaPipe's 52 blendshapes, generated vs ground-truth frames "
                   "(not the 3DMM E-FID of the papers)")
    protocol_fields = {"detector": "MediaPipe FaceLandmarker (video mode, largest face)",
                       "features": "52 blendshape scores per frame with a face", "frames": "every aligned frame with a face"}

    def features(self, sample: ClipSample) -> tuple[np.ndarray, np.ndarray]:
        gen, gt = sample_landmarks(sample, "generated"), sample_landmarks(sample, "ground_truth")
        return gen.blendshapes[gen.found].astype(np.float64), gt.blendshapes[gt.found].astype(np.float64)


def expression_features(net, frames: np.ndarray, landmarks: np.ndarray, found: np.ndarray, lm3d_five: np.ndarray,
                        stride: int = 1, batch: int = 16) -> np.ndarray:
    """(n, 64) expression coefficients of every `stride`-th frame with a face."""
    import torch
    from eval.networks.deep3d import align_face, five_points
    idx = [i for i in range(0, len(frames), stride) if found[i]]
    out = []
    for k in range(0, len(idx), batch):
        crops = np.stack([align_face(frames[i], five_points(landmarks[i]), lm3d_five) for i in idx[k:k + batch]])
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255.0)
        with torch.no_grad():
            out.append(net.expression(x.to(device_of(net))).double().cpu().numpy())
    return np.concatenate(out, 0) if out else np.zeros((0, 64))


class EFID3DMM(FrechetOfFeatures, Metric):
    name = "e_fid_3dmm"
    direction = "lower"
    level = "set"
    weights = ("deep3dfacerecon", "lm3d_std")
    needs_mediapipe = True
    description = "E-FID: Frechet distance of Deep3DFaceRecon's 64 expression coefficients (EMO's definition)"

    def __init__(self, weights_dir=None, device="cpu", frame_stride: int = 1):
        super().__init__(weights_dir, device)
        self.frame_stride = max(1, int(frame_stride))

    def settings(self) -> dict:
        return {"frame_stride": self.frame_stride}

    protocol_fields = {"network": "Deep3DFaceRecon_pytorch epoch_20.pth (ResNet-50 -> 257 coefficients; "
                                  "expression = coefficients 80..143)",
                       "detector": "MediaPipe FaceLandmarker -> 5 points (eye centres, nose tip, mouth corners)",
                       "crop": "align_img: POS fit to similarity_Lm3D_all.mat's 5 points, resize 102/s (bicubic), "
                               "224 x 224 crop; input RGB in [0, 1]",
                       "frames": "every frame_stride-th aligned frame with a face, each side"}

    def features(self, sample: ClipSample) -> tuple[np.ndarray, np.ndarray]:
        self.require_available()
        from emo.weights import find_weights
        from eval.networks import load_network
        from eval.networks.deep3d import load_lm3d_five
        net = load_network("deep3dfacerecon", self.weights_dir).to(self.device)
        lm3d = load_lm3d_five(find_weights("lm3d_std", self.weights_dir))
        out = []
        for which in ("generated", "ground_truth"):
            track = sample_landmarks(sample, which)
            out.append(expression_features(net, getattr(sample, which), track.landmarks, track.found, lm3d,
                                           self.frame_stride))
        return out[0], out[1]
