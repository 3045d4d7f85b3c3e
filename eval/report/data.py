"""What a report shows, computed from results JSONs before any HTML: systems, the metric table
with the best value per metric, comparisons between systems, protocols, comparability warnings.

Best per metric (★): among the evaluated systems (checkpoints and directories; baselines are
reference points, the ground truth would win everything) whose metric is complete, i.e. has a
value on every shared clip: a partial metric (no face on some clips, say) is shown with its count
and never starred. A system that the paired comparison cannot separate from the best one ("not
separable": the interval of the difference includes zero) is marked "≈", so a reader does not
over-read a ranking the clips cannot support.

Metrics unavailable for every system are not table rows: they are listed once, grouped by reason,
one line each (a run without pretrained networks stays readable).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from eval.results import read_results

ARROW = {"higher": "↑", "lower": "↓"}
BASELINE_ORDER = ("ground_truth_halves", "ground_truth", "reference_repeated", "audio_shifted")


@dataclass
class System:
    name: str
    kind: str
    step: int | None
    doc: dict
    json_path: Path

    @property
    def is_baseline(self) -> bool:
        return self.kind == "baseline"

    def metric(self, name: str) -> dict | None:
        return self.doc["metrics"].get(name)


@dataclass
class Cell:
    text: str                      # what a reader sees: "12.3 [11.0, 13.9]" or "unavailable"
    value: float | None
    best: bool = False
    tied: bool = False             # interval overlaps the best one's
    title: str = ""                # hover text: status line or n


@dataclass
class MetricColumn:
    name: str
    direction: str
    description: str
    level: str


@dataclass
class ReportData:
    systems: list[System]
    columns: list[MetricColumn]
    cells: dict[tuple[str, str], Cell]          # (system name, metric name) -> cell
    unavailable: dict[str, dict[str, list[str]]]  # metric -> {status line: [systems it applies to]}
    warnings: list[str] = field(default_factory=list)
    dataset: dict = field(default_factory=dict)
    hidden: list[str] = field(default_factory=list)   # metrics unavailable for every system (no table row)
    alignment: dict = field(default_factory=dict)   # system name -> alignment summary

    @property
    def evaluated(self) -> list[System]:
        return [s for s in self.systems if not s.is_baseline]

    @property
    def baselines(self) -> list[System]:
        return [s for s in self.systems if s.is_baseline]

    @property
    def trainings(self) -> dict[str, list[System]]:
        """Checkpoints grouped by training (the folder holding the step checkpoints), each group
        with at least two steps, ordered by step: what a metric-vs-step plot draws as one line."""
        groups: dict[str, list[System]] = {}
        for s in self.evaluated:
            if s.step is not None:
                folder = Path(s.doc["system"].get("path") or s.name).parent
                groups.setdefault(folder.name or str(folder), []).append(s)
        return {k: sorted(v, key=lambda s: s.step) for k, v in groups.items() if len(v) >= 2}

    @property
    def stepped(self) -> list[System]:
        return [s for runs in self.trainings.values() for s in runs]


def fmt(x: float | None) -> str:
    if x is None:
        return "–"
    ax = abs(x)
    if ax != 0 and (ax >= 1e5 or ax < 1e-3):
        return f"{x:.2e}"
    return f"{x:.1f}" if ax >= 100 else f"{x:.3g}"


def _baseline_rank(s: System) -> tuple:
    for prefix, rank in zip(BASELINE_ORDER, (9, 0, 1, 2)):
        if s.name.startswith(prefix):
            return (1, rank, s.name)
    return (1, 5, s.name)


def load_systems(paths: list[str | Path], notes: list[str] | None = None) -> list[System]:
    """Read the results; a baseline given twice (every run writes its own) is shown once, from
    the first file, when both were scored on the same manifest; two systems with one name are an error."""
    systems: list[System] = []
    by_name: dict[str, System] = {}
    for p in paths:
        doc = read_results(p)
        sys_ = doc["system"]
        s = System(sys_["name"], sys_["kind"], sys_.get("step"), doc, Path(p))
        first = by_name.get(s.name)
        if first is not None:
            same_set = first.doc["dataset"]["manifest_sha256"] == doc["dataset"]["manifest_sha256"]
            if s.is_baseline and first.is_baseline and same_set:
                if notes is not None:
                    notes.append(f"baseline {s.name} was given more than once; shown from {first.json_path}")
                continue
            raise ValueError(f"{p} and {first.json_path} both name the system {s.name!r}: "
                             "score them with distinct --name values")
        by_name[s.name] = s
        systems.append(s)
    evaluated = [s for s in systems if not s.is_baseline]
    evaluated.sort(key=lambda s: (s.step is None, s.step or 0))  # stable: given order otherwise
    return evaluated + sorted((s for s in systems if s.is_baseline), key=_baseline_rank)


def _columns(systems: list[System]) -> list[MetricColumn]:
    cols: dict[str, MetricColumn] = {}
    for s in systems:
        for name, m in s.doc["metrics"].items():
            if name not in cols:
                cols[name] = MetricColumn(name, m["direction"], m.get("description", "") or "", m.get("level", "clip"))
    return list(cols.values())


def _overlaps(a: dict, b: dict) -> bool:
    if None in (a.get("ci_low"), a.get("ci_high"), b.get("ci_low"), b.get("ci_high")):
        return False
    return a["ci_low"] <= b["ci_high"] and b["ci_low"] <= a["ci_high"]


CALIBRATION_ONLY = "unavailable: set-level calibration only"


def _is_partial(s: System, m: dict) -> bool:
    if "partial" in m:
        return bool(m["partial"])
    return m["n"] < s.doc["dataset"].get("n_shared", s.doc["dataset"]["n_clips"])


def build_report_data(paths: list[str | Path]) -> ReportData:
    notes: list[str] = []
    systems = load_systems(paths, notes)
    columns = _columns(systems)
    cells, unavailable = {}, {}
    for col in columns:
        for s in systems:
            m = s.metric(col.name)
            if m is None:
                cells[(s.name, col.name)] = Cell("not scored", None, title="this results file has no such metric")
            elif m["status"].startswith(CALIBRATION_ONLY):
                cells[(s.name, col.name)] = Cell("n/a", None, title=m["status"])
            elif m["status"] != "ok":
                cells[(s.name, col.name)] = Cell("unavailable", None, title=m["status"])
                unavailable.setdefault(col.name, {}).setdefault(m["status"], []).append(s.name)
            else:
                ci = f" [{fmt(m['ci_low'])}, {fmt(m['ci_high'])}]" if m.get("ci_low") is not None else ""
                n_all = m.get("n_shared", s.doc["dataset"].get("n_shared", s.doc["dataset"]["n_clips"]))
                partial = f" (partial: {m['n']}/{n_all} clips)" if _is_partial(s, m) else ""   # e.g. no face in some
                cells[(s.name, col.name)] = Cell(fmt(m["value"]) + ci + partial, m["value"],
                                                 title=f"n = {m['n']} of {n_all} shared clips")
        _mark_best(col, systems, cells)
    hidden = [c.name for c in columns
              if all(cells[(s.name, c.name)].value is None for s in systems)]
    columns = [c for c in columns if c.name not in hidden]
    data = ReportData(systems, columns, cells, unavailable)
    data.hidden = hidden
    data.warnings = comparability_warnings(systems) + notes
    data.dataset = dict(systems[0].doc["dataset"]) if systems else {}
    data.alignment = {s.name: s.doc["alignment"]["summary"] for s in systems}
    return data


def metric_errors(data: ReportData) -> list[tuple[str, str, int, str]]:
    """[(system, metric, clips failed, first message)] for metrics that failed on some clips."""
    out = []
    for s in data.systems:
        for name, m in s.doc["metrics"].items():
            errors = m.get("errors") or {}
            if errors:
                clip, msg = next(iter(errors.items()))
                out.append((s.name, name, len(errors), f"{clip}: {msg}"))
    return out


def grouped_unavailable(data: ReportData) -> list[tuple[str, list[str], str]]:
    """[(reason, [metric names], which systems)]: metrics sharing a reason (a missing file) are
    listed together, one line per reason; "all systems" unless the reason applies to some of them
    only (the calibration baseline, which has no per-clip metrics, does not count)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for name, reasons in data.unavailable.items():
        applicable = [s.name for s in data.systems if (data.cells.get((s.name, name)) or Cell("", None)).text != "n/a"]
        for why, systems in reasons.items():
            who = "all systems" if list(systems) == applicable else ", ".join(systems)
            groups.setdefault((why, who), []).append(name)
    return [(why, names, who) for (why, who), names in groups.items()]


def _mark_best(col: MetricColumn, systems: list[System], cells: dict) -> None:
    pool = [s for s in systems if not s.is_baseline]   # baselines-only runs rank nothing
    scored = [(s, s.metric(col.name)) for s in pool]
    scored = [(s, m) for s, m in scored if m and m["status"] == "ok" and m["value"] is not None]
    complete = [(s, m) for s, m in scored if not _is_partial(s, m)]   # a partial metric is never starred
    if not complete:
        return
    pick = max if col.direction == "higher" else min
    best_sys, best_m = pick(complete, key=lambda sm: sm[1]["value"])
    cells[(best_sys.name, col.name)].best = True
    for s, m in scored:
        if s is best_sys:
            continue
        verdict = (best_sys.doc.get("comparisons", {}).get(s.name, {}).get(col.name) or {}).get("verdict")
        if verdict == "not separable" or (verdict is None and _overlaps(m, best_m)):
            cells[(s.name, col.name)].tied = True


VERDICT_MARK = {"better": "▲", "worse": "▼", "not separable": "·"}


def comparison_matrices(data: ReportData) -> list[dict]:
    """Per metric in the table: {metric, direction, rows: [(system, [(other, mark, title)])], columns}.
    Rows are the evaluated systems (or the baselines when there are none), columns every system that
    has comparisons; ▲ = the row is better than the column (interval of the difference excludes
    zero), ▼ = worse, · = not separable."""
    with_cmp = [s for s in data.systems if s.doc.get("comparisons")]
    rows = [s for s in with_cmp if not s.is_baseline] or with_cmp
    out = []
    for col in data.columns:
        table = []
        for a in rows:
            line = []
            for b in with_cmp:
                if a is b:
                    line.append((b.name, "", ""))
                    continue
                c = (a.doc["comparisons"].get(b.name) or {}).get(col.name)
                if not c:
                    line.append((b.name, "–", "no comparison"))
                    continue
                mark = VERDICT_MARK.get(c["verdict"], "–")
                title = (f"{a.name} - {b.name} = {fmt(c['difference'])} [{fmt(c['ci_low'])}, {fmt(c['ci_high'])}], "
                         f"{c['n']} clips: {c['verdict']}")
                line.append((b.name, mark, title))
            table.append((a.name, line))
        if any(mark in ("▲", "▼", "·") for _, line in table for _, mark, _ in line):
            out.append({"metric": col.name, "direction": col.direction, "columns": [b.name for b in with_cmp],
                        "rows": table})
    return out


def protocols(data: ReportData) -> list[tuple[str, dict]]:
    """[(metric, protocol fields)] for the metrics in the table, from the first system that has them."""
    out = []
    for col in data.columns:
        for s in data.systems:
            proto = (s.metric(col.name) or {}).get("protocol")
            if proto:
                out.append((col.name, proto))
                break
    return out


def comparability_warnings(systems: list[System]) -> list[str]:
    """Results scored on different held-out sets or clip subsets are not comparable: say so."""
    out = []
    hashes = {s.doc["dataset"]["manifest_sha256"] for s in systems}
    if len(hashes) > 1:
        out.append(f"results come from {len(hashes)} different manifests (dataset.manifest_sha256): "
                   "numbers are NOT comparable across them")
    splits = {s.doc["dataset"]["split"] for s in systems}
    if len(splits) > 1:
        out.append(f"results come from different splits {sorted(splits)}")
    ds = systems[0].doc["dataset"] if systems else {}
    if ds.get("n_shared") is not None and ds["n_shared"] < ds["n_clips"]:
        out.append(f"only {ds['n_shared']} of {ds['n_clips']} held-out clips could be scored for every system; "
                   "every number here is over those shared clips")
    clip_sets = {frozenset(s.doc["per_clip"]) for s in systems}
    if len(clip_sets) > 1:
        out.append("systems were scored on different clip sets (see dataset.n_clips): intervals are not paired")
    for s in systems:
        summary = s.doc["alignment"]["summary"]
        if summary.get("n_changed"):
            out.append(f"{s.name}: the alignment rule changed {summary['n_changed']} of {summary['n_clips']} clips "
                       f"(resampled {summary.get('n_resampled', 0)}, resized {summary.get('n_resized', 0)}, "
                       f"ground truth cut in {summary.get('n_truncated_gt', 0)}, generated video cut in "
                       f"{summary.get('n_truncated_generated', 0)})")
    return out
