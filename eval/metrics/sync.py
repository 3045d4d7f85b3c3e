"""Sync-C / Sync-D with SyncNet, following joonson/syncnet_python (SyncNetInstance.evaluate).

The network and the protocol (crops, MFCCs, windows, offsets) live in `emo.media.syncnet`, shared
with dataprep's sync stage; see its docstring for each step. Difference from the released code: the
face boxes come from MediaPipe's landmarks (cached per sample) instead of S3FD.
Offsets are reported in this project's convention (+ = audio late), i.e. the negated
syncnet_python AV offset; their absolute value is `sync_offset_abs`.
"""
from __future__ import annotations

from emo.media.syncnet import SyncScores, measure_sync

from .base import ClipSample, Metric, sample_landmarks


def syncnet_result(sample: ClipSample, net, which: str = "generated") -> SyncScores:
    key = ("syncnet", which)
    if key not in sample.cache:
        sample.cache[key] = measure_sync(net, getattr(sample, which), sample.fps,
                                         sample_landmarks(sample, which).boxes, sample.audio, sample.audio_rate)
    return sample.cache[key]


class _SyncNetMetric(Metric):
    weights = ("syncnet",)
    needs_mediapipe = True

    def _scores(self, sample: ClipSample) -> SyncScores:
        self.require_available()
        from eval.networks import load_network
        return syncnet_result(sample, load_network("syncnet", self.weights_dir).to(self.device))


class SyncC(_SyncNetMetric):
    name = "sync_c"
    direction = "higher"
    directions = {"sync_c": "higher", "sync_offset_abs": "lower"}
    description = "SyncNet confidence (median - min mean distance over offsets -15..15), syncnet_python protocol"

    def score_clip(self, sample: ClipSample) -> dict:
        s = self._scores(sample)
        return {"sync_c": s.confidence, "sync_offset_abs": float(abs(s.offset))}


class SyncD(_SyncNetMetric):
    name = "sync_d"
    direction = "lower"
    description = "SyncNet minimum mean embedding distance over offsets -15..15, syncnet_python protocol"

    def score_clip(self, sample: ClipSample) -> float:
        return self._scores(sample).min_dist
