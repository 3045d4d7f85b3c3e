"""Checkpoint-comparison reports: results JSONs -> a self-contained HTML page + its Markdown twin.

`build_report(json_paths, out_dir)` writes `out_dir/index.html` (CSS, plots, frame strips and
videos all inline, so the one file can be mailed or archived) and `out_dir/report.md` (the same
content; its images and videos are files under `out_dir/assets/`).
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import jinja2

from emo.fileio import atomic_write
from emo.media.page import page_check_script
from eval.alignment import ALIGNMENT_RULE
from eval.report.data import (ARROW, ReportData, build_report_data, comparison_matrices, grouped_unavailable,
                              metric_errors, protocols)
from eval.report.markdown import render_markdown
from eval.report.media import frame_strips, system_videos
from eval.report.plots import interval_plot, per_clip_plot, step_plot
from eval.report.sensitivity import render_paths as render_sensitivity_paths

__all__ = ["ReportOptions", "build_report"]


@dataclass
class ReportOptions:
    title: str | None = None
    note: str | None = None       # a paragraph shown under the title (e.g. what this run is, and is not)
    strip_clips: int = 3          # clips shown as frame strips
    strip_times: int = 6          # ground-truth times per strip
    thumb_height: int = 96
    videos: bool = True
    video_clips: int = 1          # clips shown as videos (each system + the ground truth)
    video_height: int = 128
    video_seconds: float = 4.0
    # More sections after the comparisons: [{"id", "title", "html", "markdown"}] (e.g. per-checkpoint
    # conditioning sensitivity), rendered as given.
    extra_sections: list = field(default_factory=list)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _ci_text(data: ReportData) -> str:
    scoring = data.systems[0].doc["settings"].get("scoring", {}) if data.systems else {}
    ci = scoring.get("ci", 0.95)
    return (f"{ci:.0%} bootstrap interval over the shared clips ({scoring.get('n_bootstrap', '?')} resamples, seed "
            f"{scoring.get('seed', '?')}): percentile interval of the mean for per-clip metrics; for set-level "
            "metrics (FID, KID, FVD, E-FID) bias-corrected (the resamples' upward bias removed), an interval for "
            "the metric at this set size")


def _plots(data: ReportData) -> list[dict]:
    plots = []
    for name, fn, caption in [
        ("intervals", interval_plot, "Each metric with its bootstrap interval; baselines in grey."),
        ("per_clip", per_clip_plot, "Per-clip values (one dot per clip, bar = mean): what the intervals resample."),
        ("vs_step", step_plot, "Metric vs training step (band = interval); dashed lines are the baselines."),
    ]:
        png = fn(data)
        if png is not None:
            plots.append({"name": name, "png": png, "b64": _b64(png), "alt": f"{name} plot", "caption": caption})
    return plots


def _sensitivity_section(data: ReportData) -> list[dict]:
    """What each evaluated checkpoint was measured to use (`python -m emo diagnose` wrote
    <checkpoint>/diagnose.json); no section when no checkpoint has been diagnosed."""
    folders = [s.doc["system"].get("path") for s in data.evaluated if s.kind == "checkpoint"]
    fragment, markdown = render_sensitivity_paths([f for f in folders if f])
    if not fragment:
        return []
    return [{"id": "sensitivity", "title": "What each checkpoint uses: reference and audio (emo diagnose)",
             "html": fragment, "markdown": markdown}]


def build_report(paths: list[str | Path], out_dir: str | Path, options: ReportOptions | None = None) -> tuple[Path, Path]:
    """Write index.html and report.md under out_dir; return both paths."""
    opts = options or ReportOptions()
    out_dir = Path(out_dir)
    data = build_report_data(paths)
    title = opts.title or f"Evaluation: {', '.join(s.name for s in data.evaluated) or 'baselines only'}"
    extra_sections = [*opts.extra_sections, *_sensitivity_section(data)]
    plots = _plots(data)
    strips = frame_strips(data, opts.strip_clips, opts.strip_times, opts.thumb_height)
    videos = system_videos(data, opts.video_clips, opts.video_height, opts.video_seconds) if opts.videos else []
    rows = [{"column": c, "cells": [(s, data.cells[(s.name, c.name)]) for s in data.systems]} for c in data.columns]
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    context = dict(title=title, note=opts.note, created=created, dataset=data.dataset, warnings=data.warnings,
                   columns=data.columns, systems=data.systems, rows=rows, arrow=ARROW, ci_text=_ci_text(data),
                   unavailable=grouped_unavailable(data), errors=metric_errors(data), plots=plots, alignment=data.alignment,
                   alignment_rule=ALIGNMENT_RULE, hidden=data.hidden, matrices=comparison_matrices(data),
                   protocols=protocols(data), extra_sections=extra_sections, page_check_script=page_check_script(),
                   strips=[{"clip_id": st.clip_id, "times_s": st.times_s,
                            "rows": [(lbl, _b64(j) if j else None, note) for lbl, j, note in st.rows]}
                           for st in strips],
                   videos=[{"system": v.system, "clip_id": v.clip_id, "b64": _b64(v.mp4) if v.mp4 else None,
                            "note": v.note} for v in videos])
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent),
                             autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined)
    html = env.get_template("report.html").render(**context)
    html_path = atomic_write(out_dir / "index.html", html)
    md = render_markdown(data, title, opts.note, created, _ci_text(data), plots, strips, videos, out_dir / "assets",
                         extra_sections=extra_sections)
    md_path = atomic_write(out_dir / "report.md", md)
    return html_path, md_path
