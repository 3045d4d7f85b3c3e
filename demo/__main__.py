"""`python -m demo [--root DIR] [--quick]`: the whole loop on the embedded synthetic sample."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import click


NOTE = ("What this run is: a tiny EMO model (about 2.5 M parameters, 64x64 pixels) trained for minutes "
        "on CPU on synthetic drawn faces; it says nothing about what EMO can do. Metrics whose pretrained "
        "networks are not installed are shown as unavailable with the command that fetches them. "
        "What each checkpoint has learned to use, measured by `python -m emo diagnose` (reference and "
        "audio swapped for another held-out clip's, or dropped; <checkpoint>/diagnose.json and the "
        "report's section on it): ")


def sensitivity_note(ckpt: Path) -> str:
    """The report's note: the fixed text plus one measured sentence per checkpoint (the report's
    sensitivity section has the figures)."""
    from eval.report.sensitivity import load, sentence

    results = load(sorted(ckpt.glob("step-*")))
    if not results:
        return NOTE + "not measured (no diagnose.json found)."
    return NOTE + " ".join(sentence(r) for r in results)


def _steps(root: Path, quick: bool, workers: int) -> list[tuple[str, list, Path]]:
    """(title, command(s), product): a step whose product exists is reused, not redone.

    `--quick` (the test suite's demo) trains 3 + 3 steps (the second call resumes the first),
    renders 2 DDIM steps and scores 2 held-out clips; the full demo trains the tiny config's
    240 steps and renders with 10 DDIM steps.
    """
    py = sys.executable
    raw, dataset = root / "data/sample/raw", root / "manifests/sample"
    ckpt, results, report = root / "checkpoints/tiny", root / "results/sample", root / "reports/sample"
    train = [py, "-m", "emo", "train", "--config", "emo/configs/tiny.yaml", "--dataset", str(dataset),
             "--out", str(ckpt), "--no-log"]
    trains = ([train + ["--max-steps", "3", "--vae-fit-steps", "20"], train + ["--resume", str(ckpt), "--max-steps", "3"]]
              if quick else [train])
    score = [py, "-m", "eval", "score", "--dataset", str(dataset), "--checkpoint", str(ckpt),
             "--out", str(results), "--gen", f"steps={2 if quick else 10}"]
    if quick:
        score += ["--max-clips", "2", "--n-bootstrap", "200"]
    return [
        ("render the synthetic sample corpus",
         [[py, "-m", "dataprep", "synth", "--out", str(raw), "--seed", "0"]], raw / "corpus.json"),
        ("prepare the dataset: cuts, faces, diarization, sync, filters, manifests",
         [[py, "-m", "emo", "fetch-mediapipe"],     # a no-op when the model files are found
         [py, "-m", "dataprep", "run", "--raw", str(raw), "--out", str(dataset), "--workers", str(workers)]],
         dataset / "manifest.parquet"),
        ("train the tiny EMO model on CPU (stages 1-3, an early and a final checkpoint)", trains, ckpt / "latest"),
        ("measure what each checkpoint uses: reference and audio swapped or dropped (emo diagnose)",
         [[py, "-m", "demo.diagnose_all", str(ckpt), "--dataset", str(dataset), "--steps", str(2 if quick else 10),
           "--clips", str(2 if quick else 4)]], ckpt / "diagnosed"),
        ("evaluate the checkpoints and the baselines on the held-out split",
         [[py, "-m", "eval", "weights", "fetch", "--optional"], score],   # offline: skipped, metrics unavailable
         results / "baseline_ground_truth.json"),
        ("write the comparison report", [[py, "-m", "eval", "report", "--out", str(report), "--note", "{note}",
                                          "--title", "EMO demo: tiny model on the synthetic sample"]],
         report / "index.html"),
    ]


@click.command()
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Where data/, manifests/, checkpoints/, results/ and reports/ go.")
@click.option("--quick", is_flag=True, help="Fewer training steps and generation steps (the test suite's demo).")
@click.option("--workers", default=2, show_default=True)
def main(root: Path, quick: bool, workers: int) -> None:
    repo = Path(__file__).resolve().parents[1]
    root = root.resolve()
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYANNOTE_METRICS_ENABLED="0")
    timings = {}
    steps = _steps(root, quick, workers)
    t_all = time.time()
    for i, (title, cmds, product) in enumerate(steps, 1):
        head = f"[{i}/{len(steps)}] {title}"
        if product.exists():
            click.secho(f"{head}: already built ({product.relative_to(root)}), reused", fg="cyan")
            timings[title] = 0.0
            continue
        click.secho(head, fg="green", bold=True)
        t0 = time.time()
        for cmd in cmds:
            if cmd[2:4] == ["eval", "report"]:   # the report reads every results file written above
                cmd = cmd + sorted(str(p) for p in (root / "results/sample").glob("*.json"))
                # ... and its note states what the checkpoints were measured to use
                note = sensitivity_note(root / "checkpoints/tiny")
                cmd = [note if c == "{note}" else c for c in cmd]
            proc = subprocess.run(cmd, cwd=repo, env=env)
            if proc.returncode != 0:
                raise click.ClickException(f"step {i} failed (exit {proc.returncode}): {' '.join(cmd)}")
        timings[title] = round(time.time() - t0, 1)
        click.echo(f"    done in {timings[title]:.0f} s")
    total = round(time.time() - t_all, 1)
    report = steps[-1][2]
    (report.parent / "demo_timing.json").write_text(json.dumps({"total_s": total, "steps_s": timings}, indent=1))
    click.secho(f"\nDemo finished in {total:.0f} s. Report: {report}", fg="green", bold=True)
    click.echo("It shows a tiny model trained for minutes on synthetic faces, not what EMO can do; "
               "what each checkpoint uses (reference, audio) is the report's section 'What each checkpoint uses'.")


if __name__ == "__main__":
    main()
