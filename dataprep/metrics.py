"""Diarization scoring: the diarization error rate (DER) and RTTM files.

DER = (missed speech + false alarm + speaker confusion) / total reference speech, all in
seconds, after the one-to-one mapping of hypothesis speakers onto reference speakers that
maximises their overlap (Hungarian algorithm), as in NIST md-eval and pyannote.metrics.
Overlapped speech counts once per speaker. Time is scored on a fine frame grid (10 ms).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataprep.stages.diarize import Turn
from emo.fileio import atomic_write


@dataclass
class DERResult:
    der: float
    missed: float          # seconds
    false_alarm: float
    confusion: float
    total: float           # scored reference speech (seconds, one per speaker per instant)
    mapping: dict          # hypothesis speaker -> reference speaker

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def diarization_error_rate(reference: list[Turn], hypothesis: list[Turn], collar: float = 0.0,
                           skip_overlap: bool = False, step: float = 0.01) -> DERResult:
    """Score ``hypothesis`` against ``reference`` (lists of Turn).

    ``collar``: seconds excluded on EACH side of every reference turn boundary (md-eval's
    ``-c``; pyannote.metrics' ``collar`` is the total width, i.e. twice this value).
    ``skip_overlap``: also exclude instants where the reference has several speakers.
    """
    if collar < 0 or step <= 0:
        raise ValueError("collar must be >= 0 and step > 0")
    for t in (*reference, *hypothesis):
        if not t.end >= t.start:
            raise ValueError(f"turn ends before it starts: {t}")
    if not any(t.duration > 0 for t in reference):
        raise ValueError("the reference has no speech: DER is undefined")
    end = max(t.end for t in (*reference, *hypothesis))
    n = int(np.ceil(end / step)) + 1
    times = (np.arange(n) + 0.5) * step
    ref_names, ref = _activity(reference, times)
    hyp_names, hyp = _activity(hypothesis, times)

    scored = np.ones(n, bool)
    if collar > 0:
        for t in reference:
            for b in (t.start, t.end):
                scored &= ~((times > b - collar) & (times < b + collar))
    if skip_overlap:
        scored &= ref.sum(0) <= 1
    ref, hyp = ref[:, scored], hyp[:, scored]

    mapping = {}
    correct = 0.0
    if len(ref_names) and len(hyp_names):
        from scipy.optimize import linear_sum_assignment
        overlap = ref.astype(np.float64) @ hyp.T.astype(np.float64)
        rows, cols = linear_sum_assignment(overlap, maximize=True)
        correct = float(overlap[rows, cols].sum())
        mapping = {hyp_names[c]: ref_names[r] for r, c in zip(rows, cols) if overlap[r, c] > 0}
    n_ref, n_hyp = ref.sum(0), hyp.sum(0)
    missed = float(np.maximum(n_ref - n_hyp, 0).sum()) * step
    false_alarm = float(np.maximum(n_hyp - n_ref, 0).sum()) * step
    confusion = (float(np.minimum(n_ref, n_hyp).sum()) - correct) * step
    total = float(n_ref.sum()) * step
    if total <= 0:
        raise ValueError("no reference speech left to score once the collars are removed")
    return DERResult(der=(missed + false_alarm + confusion) / total, missed=missed,
                     false_alarm=false_alarm, confusion=confusion, total=total, mapping=mapping)


def _activity(turns: list[Turn], times: np.ndarray) -> tuple[list[str], np.ndarray]:
    names = sorted({t.speaker for t in turns})
    act = np.zeros((len(names), len(times)), bool)
    index = {s: i for i, s in enumerate(names)}
    for t in turns:
        act[index[t.speaker]] |= (times >= t.start) & (times < t.end)
    return names, act


def read_rttm(path: str | os.PathLike, file_id: str | None = None) -> list[Turn]:
    """SPEAKER lines of an RTTM file as Turns sorted by start (one file id: ``file_id`` or the
    only one present)."""
    by_file: dict[str, list[Turn]] = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        fields = line.split()
        if not fields or fields[0] != "SPEAKER":
            continue
        if len(fields) < 8:
            raise ValueError(f"{path}:{lineno}: malformed RTTM line: {line!r}")
        try:
            start, dur = float(fields[3]), float(fields[4])
        except ValueError:
            raise ValueError(f"{path}:{lineno}: bad onset/duration in {line!r}") from None
        by_file.setdefault(fields[1], []).append(Turn(start, start + dur, fields[7]))
    if file_id is None:
        if len(by_file) > 1:
            raise ValueError(f"{path} holds several files {sorted(by_file)}: pass file_id")
        return sorted(next(iter(by_file.values()), []), key=lambda t: t.start)
    return sorted(by_file.get(file_id, []), key=lambda t: t.start)


def write_rttm(path: str | os.PathLike, turns: list[Turn], file_id: str) -> Path:
    """Write Turns as RTTM SPEAKER lines, atomically."""
    lines = [f"SPEAKER {file_id} 1 {t.start:.3f} {t.duration:.3f} <NA> <NA> {t.speaker} <NA> <NA>"
             for t in sorted(turns, key=lambda t: t.start)]
    return atomic_write(path, "\n".join(lines) + ("\n" if lines else ""))
