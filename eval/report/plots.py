"""Report figures with matplotlib (Agg): PNG bytes, embedded as base64 in the HTML and written as
files for the Markdown twin.

- `interval_plot`: one panel per metric, each system's value with its bootstrap interval
  (baselines in grey, the arrow in the title says which way is better).
- `per_clip_plot`: one panel per per-clip metric, every clip's value per system (jittered), with
  the mean; clips are the unit the intervals resample, so this shows what they are made of.
- `step_plot`: metric vs training step with the interval as a band; baselines as dashed lines.
"""
from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from eval.report.data import ARROW, ReportData  # noqa: E402

_BASELINE_COLOUR = "#888888"
_COLOURS = plt.get_cmap("tab10").colors


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _grid(n: int, panel_w: float = 3.6, panel_h: float = 2.6, max_cols: int = 3):
    cols = min(max_cols, max(1, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(panel_w * cols, panel_h * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _colour(data: ReportData, name: str):
    names = [s.name for s in data.evaluated]
    return _COLOURS[names.index(name) % len(_COLOURS)] if name in names else _BASELINE_COLOUR


def _available_columns(data: ReportData, level: str | None = None):
    cols = [c for c in data.columns if c.name not in data.unavailable or
            any(data.cells[(s.name, c.name)].value is not None for s in data.systems)]
    return [c for c in cols if level is None or c.level == level]


def interval_plot(data: ReportData) -> bytes | None:
    cols = _available_columns(data)
    if not cols:
        return None
    fig, axes = _grid(len(cols), panel_h=0.45 * len(data.systems) + 1.2)
    for ax, col in zip(axes, cols):
        for i, s in enumerate(data.systems):
            m = s.metric(col.name)
            if not m or m["value"] is None:
                ax.text(0.02, i, "unavailable", va="center", fontsize=7, color="#a00", transform=ax.get_yaxis_transform())
                continue
            lo = m["ci_low"] if m["ci_low"] is not None else m["value"]
            hi = m["ci_high"] if m["ci_high"] is not None else m["value"]
            # drawn as a line from ci_low to ci_high plus the point: a set-level value can sit outside
            # its own bootstrap interval (resampling duplicates clips, which biases Frechet distances up)
            colour = _colour(data, s.name)
            ax.hlines(i, lo, hi, color=colour, lw=1.5)
            ax.plot([lo, hi], [i, i], "|", color=colour, ms=8)
            ax.plot(m["value"], i, "o", color=colour)
        ax.set_yticks(range(len(data.systems)))
        ax.set_yticklabels([s.name for s in data.systems], fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"{col.name} {ARROW[col.direction]}", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def per_clip_plot(data: ReportData, seed: int = 0) -> bytes | None:
    cols = [c for c in _available_columns(data, level="clip")
            if any(c.name in v for s in data.systems for v in s.doc["per_clip"].values())]
    if not cols:
        return None
    rng = np.random.default_rng(seed)
    fig, axes = _grid(len(cols), panel_w=max(3.6, 0.7 * len(data.systems) + 1.5))
    for ax, col in zip(axes, cols):
        for i, s in enumerate(data.systems):
            vals = np.array([v.get(col.name) for v in s.doc["per_clip"].values()], dtype=float)
            vals = vals[np.isfinite(vals)]
            if not vals.size:
                continue
            x = i + rng.uniform(-0.18, 0.18, vals.size)
            ax.scatter(x, vals, s=10, alpha=0.7, color=_colour(data, s.name))
            ax.hlines(vals.mean(), i - 0.3, i + 0.3, color="black", lw=1.2)
        ax.set_xticks(range(len(data.systems)))
        ax.set_xticklabels([s.name for s in data.systems], rotation=35, ha="right", fontsize=7)
        ax.set_title(f"{col.name} {ARROW[col.direction]} per clip", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def step_plot(data: ReportData) -> bytes | None:
    trainings = data.trainings
    runs = data.stepped
    cols = [c for c in _available_columns(data) if any((s.metric(c.name) or {}).get("value") is not None for s in runs)]
    if not runs or not cols:
        return None
    fig, axes = _grid(len(cols))
    for ax, col in zip(axes, cols):
        for k, (training, members) in enumerate(trainings.items()):
            pts = [(s.step, s.metric(col.name)) for s in members if (s.metric(col.name) or {}).get("value") is not None]
            if not pts:
                continue
            steps = np.array([p[0] for p in pts], float)
            vals = np.array([p[1]["value"] for p in pts], float)
            lo = np.array([p[1]["ci_low"] if p[1]["ci_low"] is not None else p[1]["value"] for p in pts], float)
            hi = np.array([p[1]["ci_high"] if p[1]["ci_high"] is not None else p[1]["value"] for p in pts], float)
            colour = _COLOURS[k % len(_COLOURS)]
            ax.fill_between(steps, lo, hi, alpha=0.25, color=colour)
            ax.plot(steps, vals, "o-", color=colour, label=training)
        for j, b in enumerate(data.baselines):
            m = b.metric(col.name)
            if m and m["value"] is not None:
                ax.axhline(m["value"], ls="--", lw=0.8, color=plt.get_cmap("Dark2").colors[j % 8], label=b.name)
        ax.set_xlabel("training step", fontsize=7)
        ax.set_title(f"{col.name} {ARROW[col.direction]} vs step", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6, loc="best")
    fig.tight_layout()
    return _png(fig)
