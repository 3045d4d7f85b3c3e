"""E-FID: Frechet distance between the expression parameters of generated and ground-truth frames.

EMO (and the papers it compares with) extract expression coefficients with Deng et al. 2019's
3DMM regressor (Deep3DFaceRecon); that variant, `e_fid_3dmm`, needs the regressor and the
licence-gated BFM basis and is not implemented here: it is always reported unavailable with
that reason. `e_fid_blendshapes` is a separately named substitute over MediaPipe's 52 blendshape
scores (frames where a face was found): same construction, different features, so its numbers
are NOT comparable with published E-FID values.
"""
from __future__ import annotations

import numpy as np

from .base import ClipSample, Metric, MetricUnavailable, sample_landmarks
from .frechet import FrechetOfFeatures


class EFIDBlendshapes(FrechetOfFeatures, Metric):
    name = "e_fid_blendshapes"
    direction = "lower"
    level = "set"
    needs_mediapipe = True
    description = ("Frechet distance of MediaPipe's 52 blendshapes, generated vs ground-truth frames "
                   "(not the 3DMM E-FID of the papers)")

    def features(self, sample: ClipSample) -> tuple[np.ndarray, np.ndarray]:
        gen, gt = sample_landmarks(sample, "generated"), sample_landmarks(sample, "ground_truth")
        return gen.blendshapes[gen.found].astype(np.float64), gt.blendshapes[gt.found].astype(np.float64)



class EFID3DMM(Metric):
    name = "e_fid_3dmm"
    direction = "lower"
    level = "set"
    weights = ("deep3dfacerecon",)
    description = "E-FID over Deng et al. 2019 3DMM expression coefficients (as in EMO's paper)"
    REASON = ("unavailable: E-FID(3DMM) needs Deng et al.'s Deep3DFaceRecon regressor (epoch_20.pth) and the "
              "licence-gated BFM 2009 basis; this toolkit does not implement that network, so no number is "
              "given (see e_fid_blendshapes for the MediaPipe substitute, not comparable with published values)")

    def status(self) -> str:
        return self.REASON

    def features(self, sample):
        raise MetricUnavailable(self.REASON.removeprefix("unavailable: "))

    def aggregate(self, gen, real):
        raise MetricUnavailable(self.REASON.removeprefix("unavailable: "))
