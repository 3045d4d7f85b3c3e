"""The Markdown twin of the HTML report: the same table, warnings and figures; images and videos
are written as files under `assets/` and linked relatively (Markdown viewers rarely show data URIs)."""
from __future__ import annotations

from pathlib import Path

from emo.fileio import atomic_write
from eval.alignment import ALIGNMENT_RULE
from eval.report.data import ARROW, ReportData, comparison_matrices, grouped_unavailable, metric_errors, protocols


def _write_asset(folder: Path, name: str, data: bytes) -> str:
    atomic_write(folder / name, data)
    return f"{folder.name}/{name}"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _cell_md(cell) -> str:
    text = cell.text.replace("|", "\\|")
    if cell.best:
        return f"**{text}** ★"
    if cell.tied:
        return f"{text} ≈"
    return text


def render_markdown(data: ReportData, title: str, note: str | None, created: str, ci_text: str, plots: list[dict],
                    strips, videos, assets: Path, extra_sections: list | None = None) -> str:
    ds = data.dataset
    lines = [f"# {title}", ""] + ([note, ""] if note else []) + [
             f"Created {created} · dataset `{ds.get('path')}` · split **{ds.get('split')}** · "
             f"{ds.get('n_clips')} clips · manifest sha256 `{(ds.get('manifest_sha256') or '')[:12]}`", ""]
    if data.warnings:
        lines += ["> **Read with care:**"] + [f"> - {w}" for w in data.warnings] + [""]
    header = ["metric"] + [f"*{s.name}* (baseline)" if s.is_baseline else
                           s.name + (f" (step {s.step})" if s.step is not None else "") for s in data.systems]
    lines += ["## Metrics", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in data.columns:
        cells = [_cell_md(data.cells[(s.name, c.name)]) for s in data.systems]
        lines.append("| " + " | ".join([f"{c.name} {ARROW[c.direction]}"] + cells) + " |")
    lines += ["", f"↑ higher is better, ↓ lower is better. ★ best among the evaluated systems with a value on every "
                  f"shared clip (baselines are not ranked; partial metrics never starred); ≈ not separable from the "
                  f"best by the paired comparison. Brackets: {ci_text}."
                  + (f" {len(data.hidden)} metrics unavailable for every system are listed below, not as rows."
                     if data.hidden else ""), ""]
    matrices = comparison_matrices(data)
    if matrices:
        lines += ["## Comparisons", "", "Paired bootstrap over the shared clips of row − column: ▲ row better, "
                  "▼ worse (interval excludes zero), · not separable.", ""]
        for mx in matrices:
            lines += [f"| {mx['metric']} {ARROW[mx['direction']]} | " + " | ".join(mx["columns"]) + " |",
                      "|" + "---|" * (len(mx["columns"]) + 1)]
            lines += ["| " + " | ".join([name] + [mark for _, mark, _ in line]) + " |" for name, line in mx["rows"]]
            lines.append("")
    for sec in extra_sections or []:
        lines += [f"## {sec['title']}", "", sec.get("markdown", ""), ""]
    errors = metric_errors(data)
    if errors:
        lines += ["## Metric errors on some clips", ""]
        lines += [f"- **{metric}** · {system}: {n} clips, e.g. {first}" for system, metric, n, first in errors] + [""]
    if data.unavailable:
        lines += ["## Unavailable metrics", ""]
        lines += [f"- **{', '.join(names)}** ({who}): {why}" for why, names, who in grouped_unavailable(data)] + [""]
    if plots:
        lines += ["## Plots", ""]
        for p in plots:
            rel = _write_asset(assets, f"plot_{p['name']}.png", p["png"])
            lines += [f"![{p['alt']}]({rel})", "", p["caption"], ""]
    if strips:
        lines += ["## Frame strips", "", "Each row is one system at the same ground-truth times.", ""]
        for st in strips:
            lines += [f"### {st.clip_id} (at {', '.join(str(t) for t in st.times_s)} s)", ""]
            for label, jpeg, note in st.rows:
                if jpeg:
                    rel = _write_asset(assets, f"strip_{_safe(st.clip_id)}_{_safe(label)}.jpg", jpeg)
                    lines.append(f"- {label}: ![{label}]({rel})")
                else:
                    lines.append(f"- {label}: *{note}*")
            lines.append("")
    if videos:
        lines += ["## Videos (with sound)", ""]
        for v in videos:
            if v.mp4:
                rel = _write_asset(assets, f"video_{_safe(v.clip_id)}_{_safe(v.system)}.mp4", v.mp4)
                lines.append(f"- [{v.system} · {v.clip_id}]({rel})")
            else:
                lines.append(f"- {v.system} · {v.clip_id}: *{v.note}*")
        lines.append("")
    lines += ["## Alignment", "", ALIGNMENT_RULE, "",
              "| system | clips | changed | resampled | resized | GT cut | generated cut | frames scored |",
              "|---|---|---|---|---|---|---|---|"]
    for name, a in data.alignment.items():
        lines.append(f"| {name} | {a.get('n_clips')} | {a.get('n_changed')} | {a.get('n_resampled')} | "
                     f"{a.get('n_resized')} | {a.get('n_truncated_gt')} | {a.get('n_truncated_generated', '–')} | "
                     f"{a.get('frames_used')} |")
    lines += ["", "## Protocols", "", "FID follows torch-fidelity (TF1 bilinear resize, no antialiasing); pytorch-fid "
              "and torchmetrics >= 1.8 (antialiased resize) give different numbers.", ""]
    lines += [f"- **{name}**: " + "; ".join(f"*{k}*: {v}" for k, v in proto.items()) for name, proto in protocols(data)]
    lines += ["", "## What the metrics mean", ""]
    lines += [f"- **{c.name}** ({c.level}-level, {c.direction} is better)" + (f": {c.description}" if c.description else "")
              for c in data.columns]
    return "\n".join(lines) + "\n"
