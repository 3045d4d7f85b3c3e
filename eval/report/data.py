"""What a report shows, computed from results JSONs before any HTML: systems, the metric table
with the best value per metric, comparability warnings.

Best per metric: among the evaluated systems (checkpoints and directories; baselines are
reference points, the ground truth would win everything). A system whose interval overlaps the
best one's is marked as not separable from it ("~"), so a reader does not over-read a ranking
that the clips cannot support.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from eval.results import read_results

ARROW = {"higher": "↑", "lower": "↓"}
BASELINE_ORDER = ("ground_truth", "reference_repeated", "audio_shifted")


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
    for i, prefix in enumerate(BASELINE_ORDER):
        if s.name.startswith(prefix):
            return (1, i, s.name)
    return (1, len(BASELINE_ORDER), s.name)


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
            elif m["status"] != "ok":
                cells[(s.name, col.name)] = Cell("unavailable", None, title=m["status"])
                unavailable.setdefault(col.name, {}).setdefault(m["status"], []).append(s.name)
            else:
                ci = f" [{fmt(m['ci_low'])}, {fmt(m['ci_high'])}]" if m.get("ci_low") is not None else ""
                n_all = s.doc["dataset"]["n_clips"]
                partial = f" ({m['n']}/{n_all} clips)" if m["n"] < n_all else ""   # e.g. no face in some
                cells[(s.name, col.name)] = Cell(fmt(m["value"]) + ci + partial, m["value"],
                                                 title=f"n = {m['n']} of {n_all} clips")
        _mark_best(col, systems, cells)
    data = ReportData(systems, columns, cells, unavailable)
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
    listed together; "all systems" unless the reason applies to some of them only."""
    everyone = [s.name for s in data.systems]
    groups: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for name, reasons in data.unavailable.items():
        for why, systems in reasons.items():
            groups.setdefault((why, tuple(systems)), []).append(name)
    return [(why, names, "all systems" if list(systems) == everyone else ", ".join(systems))
            for (why, systems), names in groups.items()]


def _mark_best(col: MetricColumn, systems: list[System], cells: dict) -> None:
    pool = [s for s in systems if not s.is_baseline]   # baselines-only runs rank nothing
    scored = [(s, s.metric(col.name)) for s in pool]
    scored = [(s, m) for s, m in scored if m and m["status"] == "ok" and m["value"] is not None]
    if not scored:
        return
    pick = max if col.direction == "higher" else min
    best_sys, best_m = pick(scored, key=lambda sm: sm[1]["value"])
    cells[(best_sys.name, col.name)].best = True
    if len(scored) > 1:
        for s, m in scored:
            if s is not best_sys and _overlaps(m, best_m):
                cells[(s.name, col.name)].tied = True


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
