"""Contract 3: one results JSON per evaluated system, validated when written and when read.

```
{
  "schema": "emo-eval-results/2",
  "created": ISO time (UTC),
  "system":   {name, kind: checkpoint|directory|baseline, path, config (checkpoint's config.yaml),
               step, meta (checkpoint's meta.json), description and reuses (baselines: what they take
               from the ground truth), n_scored (clips this system could be scored on),
               split (the calibration baseline's identity halves)},
  "settings": {generation: {...}, scoring: {n_bootstrap, ci, seed, shift_frames, ...}},
  "dataset":  {path, manifest_sha256, split, n_clips, n_shared, shared_clips (the clips every
               system was scored on: all numbers below are over these)},
  "alignment": {rule, summary: {counts}, clips: {clip_id: what the rule changed}},
  "metrics":  {name: {value, ci_low, ci_high, direction: higher|lower, status: "ok" | "unavailable: ...",
                      n (shared clips with a value), n_shared, partial (n < n_shared: never ranked
                      as complete), n_bootstrap, interval (how it was made), level: clip|set,
                      description, weights, protocol {detector, crop, frames, resize, route, ...},
                      samples (set-level: clips and feature rows), seconds, frames_per_second,
                      errors: {clip_id: message} (only when some failed)}},
  "comparisons": {other system: {metric: {difference (this - other), ci_low, ci_high, n,
                  verdict: better | worse | not separable | unavailable: ...}}} (paired bootstrap
                  over the shared clips; "better" only when the interval excludes zero),
  "per_clip": {clip_id: {metric: value}},
  "videos":   {clip_id: path of the scored video, relative to this JSON's folder when inside it},
  "env":      {packages: {name: version}, weights: {registry name: sha256 | null}, python, platform,
               code: {git_commit, dirty}}
}
```
Numbers that do not exist (a metric unavailable, a clip without a face) are `null`, never NaN, so
the file is strict JSON that any reader (a browser included) can parse.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from emo.fileio import atomic_write

SCHEMA = "emo-eval-results/2"
SYSTEM_KINDS = ("checkpoint", "directory", "baseline")
DIRECTIONS = ("higher", "lower")
TOP_KEYS = ("schema", "system", "settings", "dataset", "alignment", "metrics", "per_clip", "env")
METRIC_KEYS = ("value", "ci_low", "ci_high", "direction", "status", "n")


class ResultsError(ValueError):
    pass


def clean_number(x) -> float | None:
    """A JSON-safe float: None for NaN/inf/None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _need(d: dict, keys, where: str) -> None:
    if not isinstance(d, dict):
        raise ResultsError(f"{where} must be an object, got {type(d).__name__}")
    missing = [k for k in keys if k not in d]
    if missing:
        raise ResultsError(f"{where}: missing keys {missing}")


def _is_number_or_null(x) -> bool:
    return x is None or (isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x))


def validate_results(doc: dict) -> dict:
    """Check the layout above; raise ResultsError naming the first problem. Returns doc."""
    _need(doc, TOP_KEYS, "results")
    if doc["schema"] != SCHEMA:
        raise ResultsError(f"results: schema {doc['schema']!r} is not {SCHEMA!r}")
    _need(doc["system"], ("name", "kind", "path", "config", "step"), "system")
    if doc["system"]["kind"] not in SYSTEM_KINDS:
        raise ResultsError(f"system.kind {doc['system']['kind']!r} not in {SYSTEM_KINDS}")
    if not doc["system"]["name"]:
        raise ResultsError("system.name is empty")
    step = doc["system"]["step"]
    if step is not None and (not isinstance(step, int) or isinstance(step, bool)):
        raise ResultsError(f"system.step must be an integer or null, got {step!r}")
    _need(doc["dataset"], ("path", "manifest_sha256", "split", "n_clips"), "dataset")
    _need(doc["alignment"], ("rule", "summary", "clips"), "alignment")
    _need(doc["env"], ("packages", "weights"), "env")
    metrics = doc["metrics"]
    if not isinstance(metrics, dict):
        raise ResultsError("metrics must be an object")
    for name, m in metrics.items():
        _need(m, METRIC_KEYS, f"metrics[{name!r}]")
        if m["direction"] not in DIRECTIONS:
            raise ResultsError(f"metrics[{name!r}].direction {m['direction']!r} not in {DIRECTIONS}")
        status = m["status"]
        if not (status == "ok" or (isinstance(status, str) and status.startswith("unavailable: "))):
            raise ResultsError(f"metrics[{name!r}].status must be 'ok' or 'unavailable: ...', got {status!r}")
        for k in ("value", "ci_low", "ci_high"):
            if not _is_number_or_null(m[k]):
                raise ResultsError(f"metrics[{name!r}].{k} must be a finite number or null, got {m[k]!r}")
        if status == "ok" and m["value"] is None:
            raise ResultsError(f"metrics[{name!r}] is 'ok' but has no value")
        if status != "ok" and m["value"] is not None:
            raise ResultsError(f"metrics[{name!r}] is unavailable but carries a value")
    comparisons = doc.get("comparisons", {})
    if not isinstance(comparisons, dict) or not all(isinstance(v, dict) for v in comparisons.values()):
        raise ResultsError("comparisons must be an object of objects")
    for other, by_metric in comparisons.items():
        for name, c in by_metric.items():
            _need(c, ("difference", "ci_low", "ci_high", "n", "verdict"), f"comparisons[{other!r}][{name!r}]")
            if c["verdict"] not in ("better", "worse", "not separable") and not str(c["verdict"]).startswith("unavailable"):
                raise ResultsError(f"comparisons[{other!r}][{name!r}].verdict {c['verdict']!r} is not one of "
                                   "better | worse | not separable | unavailable: ...")
    per_clip = doc["per_clip"]
    if not isinstance(per_clip, dict):
        raise ResultsError("per_clip must be an object")
    for clip_id, values in per_clip.items():
        if not isinstance(values, dict):
            raise ResultsError(f"per_clip[{clip_id!r}] must be an object")
        for k, v in values.items():
            if not _is_number_or_null(v):
                raise ResultsError(f"per_clip[{clip_id!r}][{k!r}] must be a finite number or null, got {v!r}")
    if doc["dataset"]["n_clips"] != len(per_clip):
        raise ResultsError(f"dataset.n_clips is {doc['dataset']['n_clips']} but per_clip has {len(per_clip)} clips")
    return doc


def write_results(doc: dict, path: str | os.PathLike) -> Path:
    """Validate and write atomically (strict JSON: NaN is refused)."""
    validate_results(doc)
    return atomic_write(path, json.dumps(doc, indent=2, allow_nan=False, sort_keys=False) + "\n")


def read_results(path: str | os.PathLike) -> dict:
    """Read and validate one results JSON; raise ResultsError naming the file when it is not one."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not JSON ({exc})") from None
    try:
        return validate_results(doc)
    except ResultsError as exc:
        raise ResultsError(f"{path}: {exc}") from None


def resolve_video(doc: dict, json_path: str | os.PathLike, clip_id: str) -> Path | None:
    """The video scored for one clip, as an absolute path (None when not recorded or gone)."""
    rel = (doc.get("videos") or {}).get(clip_id)
    if not rel:
        return None
    p = Path(rel)
    if not p.is_absolute():
        p = Path(json_path).resolve().parent / p
    return p if p.is_file() else None


def relative_or_absolute(path: str | os.PathLike, base: str | os.PathLike) -> str:
    """`path` relative to `base` when it lies inside it (so a results folder can move), else absolute."""
    path, base = Path(path).resolve(), Path(base).resolve()
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)
