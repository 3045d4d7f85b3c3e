"""Running metrics over aligned clips, and the statistics that make their numbers comparable.

The rules (issue 9, section 1):
- Every system is compared on the same clips: the clips every system could be scored on (its
  video existed and was read). A metric with a value on fewer of those clips than that (e.g. no
  face found on some) is `partial`: the entry says how many, and the report never stars it.
- Per-clip metrics: the value is the mean over those shared clips that gave a number; the interval
  is the percentile bootstrap of that mean.
- Set-level metrics (FID, KID, FVD, E-FID): the value aggregates every shared clip's features. The
  interval resamples whole clips with replacement, but a Frechet distance of a resample is biased
  upward (a resample holds about 63 % distinct clips, so covariances are estimated from fewer of
  them), which made the plain percentile interval sit above, and sometimes exclude, the estimate
  itself. The interval is therefore bias-corrected: the bootstrap distribution is shifted by its
  own bias (mean of the resamples - the full-set value) before its percentiles are taken. It is an
  interval for what the metric gives at this set size; the floor of a Frechet distance at this set
  size is what the ground-truth-halves calibration baseline shows.
- A metric whose aggregate is degenerate (too few features, a covariance that is not valid)
  becomes "unavailable: <reason>", never a crash of the whole run.
- Comparisons: for each pair of systems, a paired bootstrap over the shared clips of the difference
  in each metric (both systems resampled with the same clips); "A better than B" only when the
  interval of the difference excludes zero.

Each metric has its own generator seeded from (seed, crc32(name)), so adding or removing a
metric never changes another metric's interval.
"""
from __future__ import annotations

import contextlib
import time
import traceback
import zlib
from dataclasses import dataclass, field

import numpy as np

from eval.metrics.base import ClipSample, Metric, MetricUnavailable
from eval.results import clean_number

# Exceptions that mean "this aggregate cannot be computed from these features" (a reason, not a bug).
DEGENERATE = (ValueError, FloatingPointError, ZeroDivisionError, np.linalg.LinAlgError)


@dataclass
class BootstrapConfig:
    n_bootstrap: int = 1000     # resamples of the clip set
    n_bootstrap_set: int | None = None   # for set-level metrics (each resample re-aggregates, e.g. a
                                         # 2048-d Frechet distance): None = n_bootstrap
    ci: float = 0.95            # central interval
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


def bias_corrected_interval(stats: np.ndarray, value: float, ci: float) -> tuple[float, float]:
    """Percentile interval of bootstrap `stats` after removing their bias (mean(stats) - value)."""
    stats = np.asarray(stats, np.float64)
    stats = stats[np.isfinite(stats)]
    if not stats.size or not np.isfinite(value):
        return float("nan"), float("nan")
    lo, hi = percentile_interval(stats - (stats.mean() - value), ci)
    return lo, hi


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


# Resamples re-aggregate small matrices (a 52-d blendshape covariance, say) thousands of times. A
# multi-threaded BLAS on such matrices spends its time waking threads: on the 2-core development
# machine under load one 52 x 52 eigh took 0.37 s with 2 threads and 0.0002 s with one. Below this
# feature dimension the resampling loops run single-threaded; larger ones (FID's 2048) keep BLAS's threads.
SINGLE_THREAD_MAX_DIM = 256


def _blas_for(features: list) -> contextlib.AbstractContextManager:
    dim = next((np.asarray(f).shape[-1] for f in features if np.asarray(f).ndim == 2 and np.asarray(f).size), 0)
    if dim and dim <= SINGLE_THREAD_MAX_DIM:
        from threadpoolctl import threadpool_limits
        return threadpool_limits(1, user_api="blas")
    return contextlib.nullcontext()


def _resample_fn(metric):
    # A metric may offer a faster routine giving the same number (tested on its side) for resamples.
    return getattr(metric, "bootstrap_aggregate", None) or metric.aggregate


def _safe(fn, *args) -> float:
    try:
        return float(fn(*args))
    except DEGENERATE:
        return float("nan")   # a degenerate resample (e.g. one clip drawn n times) is left out


def bootstrap_set(metric: Metric, gen: list[np.ndarray], real: list[np.ndarray],
                  cfg: BootstrapConfig) -> tuple[float, float, float, int]:
    """(aggregate over all clips, ci_low, ci_high, n clips): clips resampled with replacement,
    interval bias-corrected (see the module docstring). The full aggregate may raise (degenerate)."""
    n = len(gen)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    value = float(metric.aggregate(gen, real))
    fn = _resample_fn(metric)
    rng = metric_rng(cfg.seed, metric.name)
    n_boot = cfg.n_bootstrap_set or cfg.n_bootstrap
    stats = np.empty(n_boot)
    with _blas_for(gen):
        for b in range(n_boot):
            idx = rng.integers(0, n, size=n)
            stats[b] = _safe(fn, [gen[i] for i in idx], [real[i] for i in idx])
    lo, hi = bias_corrected_interval(stats, value, cfg.ci)
    return value, lo, hi, n


# --- paired comparisons -------------------------------------------------------------------------

@dataclass
class Difference:
    """A - B on the shared clips, with its paired-bootstrap interval and what it allows one to say."""
    difference: float
    ci_low: float
    ci_high: float
    n: int
    verdict: str          # "better" | "worse" | "not separable" | "unavailable: ..."

    def to_dict(self) -> dict:
        return {"difference": clean_number(self.difference), "ci_low": clean_number(self.ci_low),
                "ci_high": clean_number(self.ci_high), "n": self.n, "verdict": self.verdict}


def verdict(lo: float, hi: float, direction: str) -> str:
    """Whether A is better or worse than B from the interval of A - B (zero excluded) and direction."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "unavailable: no interval"
    if lo > 0 or hi < 0:
        a_higher = lo > 0
        return "better" if a_higher == (direction == "higher") else "worse"
    return "not separable"


def paired_clip_difference(a, b, direction: str, cfg: BootstrapConfig, name: str) -> Difference:
    """Per-clip metric: mean of A - B over the clips where both have a value, paired bootstrap."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    d = (a - b)[both]
    if not d.size:
        return Difference(float("nan"), float("nan"), float("nan"), 0, "unavailable: no clip with both values")
    rng = metric_rng(cfg.seed, "paired:" + name)
    idx = rng.integers(0, d.size, size=(cfg.n_bootstrap, d.size))
    lo, hi = percentile_interval(d[idx].mean(axis=1), cfg.ci)
    return Difference(float(d.mean()), lo, hi, int(d.size), verdict(lo, hi, direction))


def paired_set_difference(metric: Metric, gen_a: list, gen_b: list, real: list, cfg: BootstrapConfig) -> Difference:
    """Set-level metric: aggregate(A) - aggregate(B), both on the same resampled clips (paired),
    bias-corrected like `bootstrap_set`."""
    n = len(real)
    try:
        value = float(metric.aggregate(gen_a, real)) - float(metric.aggregate(gen_b, real))
    except DEGENERATE as exc:
        return Difference(float("nan"), float("nan"), float("nan"), n, f"unavailable: {_short_error(exc)}")
    fn = _resample_fn(metric)
    rng = metric_rng(cfg.seed, "paired:" + metric.name)
    stats = np.empty(cfg.n_bootstrap_set or cfg.n_bootstrap)
    with _blas_for(gen_a):
        for k in range(len(stats)):
            idx = rng.integers(0, n, size=n)
            r = [real[i] for i in idx]
            stats[k] = _safe(fn, [gen_a[i] for i in idx], r) - _safe(fn, [gen_b[i] for i in idx], r)
    lo, hi = bias_corrected_interval(stats, value, cfg.ci)
    return Difference(value, lo, hi, n, verdict(lo, hi, metric.direction))


def _directions(metric: Metric) -> dict:
    return dict(getattr(metric, "directions", None) or {})


def output_directions(metric: Metric) -> dict:
    """{output name: direction} of everything a metric reports."""
    return _directions(metric) or {metric.name: metric.direction}


def _short_error(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" ({frame.filename.rsplit('/', 1)[-1]}:{frame.lineno})" if frame else ""
    return f"{type(exc).__name__}: {exc}{where}"[:500]


# --- per-clip results ---------------------------------------------------------------------------

@dataclass
class MetricClipResult:
    """What one metric gave on one clip of one system (what the per-clip cache stores)."""
    values: dict = field(default_factory=dict)     # per-clip metrics: output name -> float (NaN = missing)
    gen: np.ndarray | None = None                  # set-level metrics: feature rows
    real: np.ndarray | None = None
    error: str | None = None                       # the clip failed (recorded, the others go on)
    unavailable: str | None = None                 # the metric turned out unavailable
    seconds: float = 0.0
    frames: int = 0


class MetricRunner:
    """Scores samples with a list of metrics; turns per-clip results into Contract 3 entries."""

    def __init__(self, metrics: list[Metric], cfg: BootstrapConfig | None = None):
        self.cfg = cfg or BootstrapConfig()
        self.metrics = list(metrics)
        self.status = {m.name: _safe_status(m) for m in self.metrics}

    def score_sample(self, sample: ClipSample, only: set[str] | None = None) -> dict[str, MetricClipResult]:
        """{metric name: result} for one aligned sample (metrics in `only`, default all available)."""
        out = {}
        for m in self.metrics:
            if (only is not None and m.name not in only) or self.status[m.name] != "ok":
                continue
            res, t0 = MetricClipResult(frames=sample.n_frames), time.perf_counter()
            try:
                if m.level == "set":
                    gen, real = m.features(sample)
                    res.gen, res.real = np.asarray(gen, np.float64), np.asarray(real, np.float64)
                else:
                    value = m.score_clip(sample)
                    res.values = {k: _as_float(v) for k, v in (value if isinstance(value, dict) else {m.name: value}).items()}
            except MetricUnavailable as exc:
                res.unavailable = f"unavailable: {exc}"
            except Exception as exc:  # one clip failing must not lose the others; recorded per clip
                res.error = _short_error(exc)
            res.seconds = time.perf_counter() - t0
            out[m.name] = res
        return out

    # -- aggregation ---------------------------------------------------------------------------
    def results(self, clip_results: dict[str, dict[str, MetricClipResult]], clip_ids: list[str],
                shared: list[str]) -> tuple[dict, dict]:
        """(metrics {name: entry}, per_clip {clip_id: {name: value}}) in the Contract 3 layout.

        clip_results: {clip_id: {metric: result}} of one system (clips it could not be scored on
        are absent); clip_ids: every held-out clip; shared: the clips every system was scored on."""
        metrics: dict = {}
        per_clip: dict = {cid: {} for cid in clip_ids}
        for m in self.metrics:
            rs = {cid: clip_results[cid][m.name] for cid in shared if m.name in clip_results.get(cid, {})}
            seconds = sum(r.seconds for r in rs.values())
            frames = sum(r.frames for r in rs.values())
            common = {"level": m.level, "description": getattr(m, "description", ""),
                      "weights": list(m.weights), "protocol": metric_protocol(m),
                      "seconds": round(seconds, 3),
                      "frames_per_second": round(frames / seconds, 2) if seconds > 0 else None,
                      "n_shared": len(shared)}
            errors = {cid: r.error for cid, r in rs.items() if r.error}
            if errors:
                common["errors"] = errors
            status = self.status[m.name]
            status = next((r.unavailable for r in rs.values() if r.unavailable), None) or status
            dirs = output_directions(m)
            if status != "ok":   # one entry per output the metric would have given
                for key, direction in dirs.items():
                    metrics[key] = _unavailable(direction, status, common)
                continue
            ok = {cid: r for cid, r in rs.items() if not r.error}
            if not ok:
                for key, direction in dirs.items():
                    metrics[key] = _unavailable(direction, _all_failed(errors, len(shared)), common)
                continue
            if m.level == "set":
                metrics[m.name] = self._set_entry(m, ok, shared, common)
                continue
            for key, direction in dirs.items():
                vals = [ok[cid].values.get(key, np.nan) if cid in ok else np.nan for cid in shared]
                value, lo, hi, n = bootstrap_mean(vals, self.cfg, key)
                if n == 0:
                    metrics[key] = _unavailable(direction, "unavailable: no shared clip gave a value "
                                                "(e.g. no face found in any clip)", common)
                else:
                    metrics[key] = {"value": clean_number(value), "ci_low": clean_number(lo),
                                    "ci_high": clean_number(hi), "direction": direction, "status": "ok",
                                    "n": n, "partial": n < len(shared), "n_bootstrap": self.cfg.n_bootstrap,
                                    "interval": "percentile bootstrap of the mean over clips", **common}
        for cid, by_metric in clip_results.items():
            for r in by_metric.values():
                for key, v in r.values.items():
                    per_clip.setdefault(cid, {})[key] = clean_number(v)
        for key, entry in metrics.items():    # every clip lists every per-clip number (null = none)
            if entry["level"] == "clip" and entry["status"] == "ok":
                for values in per_clip.values():
                    values.setdefault(key, None)
        return metrics, per_clip

    def _set_entry(self, m: Metric, ok: dict, shared: list[str], common: dict) -> dict:
        # a clip that gave no feature rows on the generated side (no face in any frame, shorter than
        # FVD's 16 frames) is missing: the metric is then partial
        cids = [cid for cid in shared if cid in ok and ok[cid].gen is not None and len(ok[cid].gen)]
        if not cids:
            return _unavailable(m.direction, "unavailable: no shared clip gave features "
                                "(e.g. no face found, or clips shorter than the metric needs)", common)
        gen, real = [ok[c].gen for c in cids], [ok[c].real for c in cids]
        t0 = time.perf_counter()
        try:
            value, lo, hi, n = bootstrap_set(m, gen, real, self.cfg)
        except MetricUnavailable as exc:
            return _unavailable(m.direction, f"unavailable: {exc}", common)
        except DEGENERATE as exc:
            return _unavailable(m.direction, f"unavailable: degenerate aggregate ({_short_error(exc)})", common)
        common = {**common, "aggregate_seconds": round(time.perf_counter() - t0, 3),
                  "samples": {"clips": n, "gen_features": int(sum(len(g) for g in gen)),
                              "real_features": int(sum(len(r) for r in real))}}
        if not np.isfinite(value):
            return _unavailable(m.direction, "unavailable: the aggregate was not finite "
                                "(too few features for a covariance?)", common)
        return {"value": clean_number(value), "ci_low": clean_number(lo), "ci_high": clean_number(hi),
                "direction": m.direction, "status": "ok", "n": n, "partial": n < len(shared),
                "n_bootstrap": self.cfg.n_bootstrap_set or self.cfg.n_bootstrap,
                "interval": "bootstrap over clips, bias-corrected percentile", **common}

    # -- comparisons ---------------------------------------------------------------------------
    def compare(self, a: dict[str, dict[str, MetricClipResult]], b: dict[str, dict[str, MetricClipResult]],
                shared: list[str]) -> dict:
        """{metric output: Difference.to_dict()} of system A - system B over the shared clips."""
        out = {}
        for m in self.metrics:
            if self.status[m.name] != "ok":
                continue
            ra = {c: a[c][m.name] for c in shared if m.name in a.get(c, {})}
            rb = {c: b[c][m.name] for c in shared if m.name in b.get(c, {})}
            good = [c for c in shared if c in ra and c in rb and not (ra[c].error or rb[c].error
                                                                       or ra[c].unavailable or rb[c].unavailable)]
            if m.level == "set":
                if not good:
                    continue
                d = paired_set_difference(m, [ra[c].gen for c in good], [rb[c].gen for c in good],
                                          [ra[c].real for c in good], self.cfg)
                out[m.name] = d.to_dict()
                continue
            for key, direction in output_directions(m).items():
                va = [ra[c].values.get(key, np.nan) for c in good]
                vb = [rb[c].values.get(key, np.nan) for c in good]
                out[key] = paired_clip_difference(va, vb, direction, self.cfg, key).to_dict()
        return out


def metric_protocol(m: Metric) -> dict:
    try:
        return dict(m.protocol())
    except Exception as exc:  # a broken description must not stop the run
        return {"error": _short_error(exc)}


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


def _all_failed(errors: dict, n_shared: int) -> str:
    if errors:
        first_clip, first = next(iter(errors.items()))
        return f"unavailable: failed on all {len(errors)} clips, e.g. {first_clip}: {first}"
    return f"unavailable: no clips were scored ({n_shared} shared clips)"


def _unavailable(direction: str, status: str, common: dict) -> dict:
    return {"value": None, "ci_low": None, "ci_high": None, "direction": direction,
            "status": status, "n": 0, "partial": False, **common}
