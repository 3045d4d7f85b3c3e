"""Running metrics over aligned clips, and bootstrap confidence intervals over clips.

Per-clip metrics: the value is the mean over clips (clips where the metric gave no number, e.g. no
face found, are left out and counted in `n`); the interval is the percentile bootstrap of that
mean. Set-level metrics (FID, FVD, E-FID): the value aggregates every clip's features; the
interval resamples whole clips (their feature arrays) with replacement and aggregates again, so
frames of one clip are never treated as independent.

Each metric has its own generator seeded from (seed, crc32(name)), so adding or removing a
metric never changes another metric's interval.
"""
from __future__ import annotations

import time
import traceback
import zlib
from dataclasses import dataclass, field

import numpy as np

from eval.metrics.base import ClipSample, Metric, MetricUnavailable
from eval.results import clean_number


@dataclass
class BootstrapConfig:
    n_bootstrap: int = 1000     # resamples of the clip set
    n_bootstrap_set: int | None = None   # for set-level metrics (each resample re-aggregates, e.g. a
                                         # 2048-d Frechet distance): None = n_bootstrap
    ci: float = 0.95            # central interval (percentile method)
    seed: int = 0


def metric_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def percentile_interval(stats: np.ndarray, ci: float) -> tuple[float, float]:
    stats = np.asarray(stats, np.float64)
    stats = stats[np.isfinite(stats)]
    if not stats.size:
        return float("nan"), float("nan")
    lo, hi = np.percentile(stats, [50 * (1 - ci), 50 * (1 + ci)])
    return float(lo), float(hi)


def bootstrap_mean(values, cfg: BootstrapConfig, name: str) -> tuple[float, float, float, int]:
    """(mean, ci_low, ci_high, n) over the finite per-clip values."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return float("nan"), float("nan"), float("nan"), 0
    rng = metric_rng(cfg.seed, name)
    idx = rng.integers(0, v.size, size=(cfg.n_bootstrap, v.size))
    lo, hi = percentile_interval(v[idx].mean(axis=1), cfg.ci)
    return float(v.mean()), lo, hi, int(v.size)


def bootstrap_set(metric: Metric, gen: list[np.ndarray], real: list[np.ndarray],
                  cfg: BootstrapConfig) -> tuple[float, float, float, int]:
    """(aggregate over all clips, ci_low, ci_high, n clips), resampling clips' feature arrays."""
    n = len(gen)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    value = float(metric.aggregate(gen, real))
    # A metric may offer a faster routine giving the same number (tested on its side) for resamples.
    resample_fn = getattr(metric, "bootstrap_aggregate", None) or metric.aggregate
    rng = metric_rng(cfg.seed, metric.name)
    n_boot = cfg.n_bootstrap_set or cfg.n_bootstrap
    stats = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, n, size=n)
        try:
            stats[b] = resample_fn([gen[i] for i in idx], [real[i] for i in idx])
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            stats[b] = np.nan   # a degenerate resample (e.g. one clip drawn n times) is left out
    lo, hi = percentile_interval(stats, cfg.ci)
    return value, lo, hi, n


def _directions(metric: Metric) -> dict:
    return dict(getattr(metric, "directions", None) or {})


def _short_error(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" ({frame.filename.rsplit('/', 1)[-1]}:{frame.lineno})" if frame else ""
    return f"{type(exc).__name__}: {exc}{where}"[:500]


@dataclass
class _MetricState:
    metric: Metric
    status: str
    values: dict = field(default_factory=dict)      # output name -> {clip_id: value}
    gen_feats: list = field(default_factory=list)
    real_feats: list = field(default_factory=list)
    errors: dict = field(default_factory=dict)      # clip_id -> message
    seconds: float = 0.0
    frames: int = 0


class MetricRunner:
    """Scores one system: feed it aligned samples one by one, then ask for the results."""

    def __init__(self, metrics: list[Metric], cfg: BootstrapConfig | None = None):
        self.cfg = cfg or BootstrapConfig()
        self.states = [_MetricState(m, _safe_status(m)) for m in metrics]
        self.clip_ids: list[str] = []

    def add(self, sample: ClipSample) -> None:
        self.clip_ids.append(sample.clip_id)
        for st in self.states:
            if st.status != "ok":
                continue
            t0 = time.perf_counter()
            try:
                self._run_one(st, sample)
            except MetricUnavailable as exc:
                st.status = f"unavailable: {exc}"
            except Exception as exc:  # one clip failing must not lose the others; recorded below
                st.errors[sample.clip_id] = _short_error(exc)
            st.seconds += time.perf_counter() - t0
            st.frames += sample.n_frames

    def _run_one(self, st: _MetricState, sample: ClipSample) -> None:
        m = st.metric
        if m.level == "set":
            gen, real = m.features(sample)
            st.gen_feats.append(np.asarray(gen))
            st.real_feats.append(np.asarray(real))
            return
        out = m.score_clip(sample)
        outputs = out if isinstance(out, dict) else {m.name: out}
        for key, value in outputs.items():
            st.values.setdefault(key, {})[sample.clip_id] = value

    def results(self) -> tuple[dict, dict]:
        """(metrics {name: entry}, per_clip {clip_id: {name: value}}) in the Contract 3 layout."""
        metrics: dict = {}
        per_clip: dict = {cid: {} for cid in self.clip_ids}
        for st in self.states:
            m = st.metric
            common = {"level": m.level, "description": getattr(m, "description", ""),
                      "weights": list(m.weights), "seconds": round(st.seconds, 3),
                      "frames_per_second": round(st.frames / st.seconds, 2) if st.seconds > 0 else None}
            if st.errors:
                common["errors"] = st.errors
            dirs = _directions(m)
            if st.status != "ok":   # one entry per output the metric would have given
                for key in dirs or [m.name]:
                    metrics[key] = _unavailable(dirs.get(key, m.direction), st.status, common)
                continue
            if m.level == "set":
                metrics[m.name] = self._set_entry(st, common)
                continue
            if not st.values:
                for key in dirs or [m.name]:
                    metrics[key] = _unavailable(dirs.get(key, m.direction), _all_failed(st), common)
                continue
            for key, by_clip in st.values.items():
                vals = [_as_float(by_clip.get(cid)) for cid in self.clip_ids]
                value, lo, hi, n = bootstrap_mean(vals, self.cfg, key)
                direction = dirs.get(key, m.direction)
                if n == 0:
                    why = ("unavailable: infinite on every clip (frames identical to the ground truth: PSNR = inf, the ceiling)"
                           if any(np.isinf(v) for v in vals) else
                           "unavailable: no clip gave a value (e.g. no face found in any clip)")
                    metrics[key] = _unavailable(direction, why, common)
                else:
                    metrics[key] = {"value": clean_number(value), "ci_low": clean_number(lo),
                                    "ci_high": clean_number(hi), "direction": direction, "status": "ok",
                                    "n": n, "n_bootstrap": self.cfg.n_bootstrap, **common}
                for cid, v in zip(self.clip_ids, vals):
                    per_clip[cid][key] = clean_number(v)
        return metrics, per_clip

    def _set_entry(self, st: _MetricState, common: dict) -> dict:
        m = st.metric
        if not st.gen_feats:
            return _unavailable(m.direction, _all_failed(st), common)
        t0 = time.perf_counter()
        try:
            value, lo, hi, n = bootstrap_set(m, st.gen_feats, st.real_feats, self.cfg)
        except MetricUnavailable as exc:
            return _unavailable(m.direction, f"unavailable: {exc}", common)
        common = {**common, "aggregate_seconds": round(time.perf_counter() - t0, 3)}
        if not np.isfinite(value):
            return _unavailable(m.direction, "unavailable: the aggregate was not finite "
                                "(too few features for a covariance?)", common)
        return {"value": clean_number(value), "ci_low": clean_number(lo), "ci_high": clean_number(hi),
                "direction": m.direction, "status": "ok", "n": n,
                "n_bootstrap": self.cfg.n_bootstrap_set or self.cfg.n_bootstrap,
                **common}


def _as_float(x) -> float:
    try:
        return float("nan") if x is None else float(x)
    except (TypeError, ValueError):
        return float("nan")


def _safe_status(metric: Metric) -> str:
    try:
        status = metric.status()
    except Exception as exc:  # a broken status() must not stop the run; it says why instead
        return f"unavailable: status check failed: {_short_error(exc)}"
    if status != "ok" and not status.startswith("unavailable: "):
        status = f"unavailable: {status}"
    return status


def _all_failed(st: _MetricState) -> str:
    if st.errors:
        first_clip, first = next(iter(st.errors.items()))
        return f"unavailable: failed on all {len(st.errors)} clips, e.g. {first_clip}: {first}"
    return "unavailable: no clips were scored"


def _unavailable(direction: str, status: str, common: dict) -> dict:
    return {"value": None, "ci_low": None, "ci_high": None, "direction": direction,
            "status": status, "n": 0, **common}
