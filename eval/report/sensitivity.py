"""The report's sensitivity section: what each checkpoint has learned to use, from `emo diagnose`.

Input: the JSON that `python -m emo diagnose CHECKPOINT` writes (<checkpoint>/diagnose.json,
schema "emo.diagnose/1"). Output: an HTML fragment and the same table in Markdown, one row per
checkpoint, with a plain sentence per checkpoint saying what the model uses and what it ignores.
"""
from __future__ import annotations

import html
import json
import os
from pathlib import Path

COLUMNS = [
    ("checkpoint", "checkpoint"),
    ("stage", "stage"),
    ("eps ref swap", "noise prediction: relative change, reference swapped"),
    ("eps ref drop", "noise prediction: relative change, reference dropped"),
    ("eps audio swap", "noise prediction: relative change, audio swapped"),
    ("eps audio drop", "noise prediction: relative change, audio dropped"),
    ("frames ref swap", "generated frames: mean absolute change (0-255), reference swapped"),
    ("frames audio swap", "generated frames: mean absolute change (0-255), audio swapped"),
    ("colour follow", "how far the frames' colour layout moves towards a swapped reference (1 = fully)"),
    ("mouth~audio r", "correlation of mouth brightness with the driving audio's loudness (control: other audio)"),
]


def load(paths) -> list[dict]:
    """diagnose.json files (or checkpoint folders holding one), in the order given; missing skipped."""
    out = []
    for p in paths:
        p = Path(p)
        p = p / "diagnose.json" if p.is_dir() else p
        if p.is_file():
            out.append(json.loads(p.read_text()))
    return out


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _num(v, fmt="{:.2f}") -> str:
    return "n/a" if v is None else fmt.format(v)


def row(result: dict) -> list[str]:
    eps = result["noise_prediction"]["rel_change"]
    frames = result.get("frames", {}).get("mean_abs_change", {})
    looking, listening = result.get("looking", {}), result.get("listening", {})
    corr = listening.get("mouth_audio_corr")
    ctrl = listening.get("mouth_other_audio_corr")
    audio_on = result.get("audio_path_active", True)
    return [Path(result["checkpoint"]).name, str(result["stage"]),
            _pct(eps["ref_swapped"]), _pct(eps["ref_dropped"]),
            _pct(eps["audio_swapped"]) if audio_on else "inactive", _pct(eps["audio_dropped"]) if audio_on else "inactive",
            _num(frames.get("ref_swapped"), "{:.1f}"), _num(frames.get("audio_swapped"), "{:.1f}"),
            _num(looking.get("colour_follow")),
            f"{_num(corr, '{:+.2f}')} (ctrl {_num(ctrl, '{:+.2f}')})" if listening else "n/a"]


def sentence(result: dict) -> str:
    """What this checkpoint has and has not learned, from its figures alone."""
    v = result.get("verdict", {})
    name = Path(result["checkpoint"]).name
    parts = []
    ref = v.get("reference")
    follow = result.get("looking", {}).get("colour_follow")
    if ref == "ignored":
        parts.append("ignores its reference image (swapping it barely changes the noise prediction)")
    elif v.get("frames_follow_reference"):
        parts.append(f"looks at its reference: generated frames take {follow:.0%} of a swapped reference's colour layout")
    elif follow is not None:
        parts.append(f"uses its reference in the noise prediction, but generated frames take only {follow:.0%} "
                     "of a swapped reference's colour layout")
    audio = v.get("audio", "")
    if audio.startswith("inactive"):
        parts.append("has no audio path yet (stage 1)")
    elif audio == "ignored":
        parts.append("ignores its audio")
    elif "mouth_follows_audio" in v:
        parts.append("its mouth region follows the audio" if v["mouth_follows_audio"]
                     else "its audio changes the frames but the mouth does not follow the audio's loudness")
    return f"{name}: " + "; ".join(parts) + f" ({result['n_clips']} held-out clips, split {result['split']})."


def render(results: list[dict]) -> tuple[str, str]:
    """(HTML fragment, Markdown) of the sensitivity section's body (the report adds its heading);
    empty strings when there is nothing."""
    if not results:
        return "", ""
    rows = [row(r) for r in results]
    head = "".join(f'<th title="{html.escape(t)}">{html.escape(h)}</th>' for h, t in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    notes = [sentence(r) for r in results]
    s = results[0]["settings"]
    how = (f"Each condition swapped for another held-out clip's or dropped, same noise (seed {s['seed']}); "
           f"noise prediction at t = {s['timesteps']}, frames from {s['ddim_steps']} DDIM steps at guidance "
           f"{s['guidance']}. Rerun: python -m emo diagnose CHECKPOINT --dataset DATASET.")
    frag = (f"<div class=\"sensitivity\"><p>{html.escape(how)}</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul></div>")
    md = [how, "", "| " + " | ".join(h for h, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    md += [""] + [f"- {n}" for n in notes]
    return frag, "\n".join(md) + "\n"


def render_paths(paths: list[str | os.PathLike]) -> tuple[str, str]:
    return render(load(paths))
