"""Stage 4 glue: diarize the whole audio once per video, then judge each clip's speech.

The diarization itself is `dataprep.stages.diarize` (imported lazily: its models load only when
a video gets this far).
"""
from __future__ import annotations

from ..config import DataprepConfig
from .common import VideoRecord, reject_clip


def diarize_video(record: VideoRecord, cfg: DataprepConfig) -> VideoRecord:
    from . import diarize as diarize_mod

    record.turns = diarize_mod.diarize(record.audio, record.audio_rate,
                                       cfg.diarize)
    record.notes["speakers"] = sorted({t.speaker for t in record.turns})
    return record


def clip_speech(record: VideoRecord, cfg: DataprepConfig) -> VideoRecord:
    from . import diarize as diarize_mod

    dcfg = cfg.diarize
    for clip in record.live_clips():
        ratio, n_speakers, main = diarize_mod.speech_stats(record.turns or [], clip.start_s, clip.end_s, dcfg)
        margin = cfg.speech.edge_margin_s
        if n_speakers > 1 and clip.end_s - clip.start_s > 2 * margin + 1.0:
            _, n_speakers, _ = diarize_mod.speech_stats(record.turns, clip.start_s + margin,
                                                        clip.end_s - margin, dcfg)
        clip.values.update(speech_ratio=float(ratio), speaker=main or "")
        if n_speakers == 0 or main is None:
            reject_clip(record, clip, "diarize", "no speech", f"speech ratio {ratio:.2f}")
        elif n_speakers > 1:
            reject_clip(record, clip, "diarize", "multiple speakers", f"{n_speakers} speakers")
    return record
