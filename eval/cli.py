"""`python -m eval` (also `emo-eval`): score systems, build reports, manage metric weights.

    python -m eval score --dataset D [--generated DIR ...] [--checkpoint CKPT ...] --out RESULTS
    python -m eval report A.json B.json ... --out reports/NAME/
    python -m eval weights [fetch | convert]
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click
import yaml


def _parse_settings(pairs: tuple[str, ...]) -> dict:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--gen")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)  # numbers and booleans typed as YAML reads them
    return out


@click.group()
def main() -> None:
    """Evaluation of generated portrait videos against a held-out set."""


@main.command()
@click.option("--dataset", required=True, type=click.Path(exists=True, file_okay=False),
              help="dataset folder (Contract 1); its test split is the held-out set")
@click.option("--generated", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="folder of <clip_id>.mp4 from any system (repeatable)")
@click.option("--checkpoint", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="EMO checkpoint, or a folder of step checkpoints (each scored with its step) (repeatable)")
@click.option("--name", multiple=True, help="system name, one per --generated/--checkpoint in that order")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="results folder (one JSON per system)")
@click.option("--split", default="test", show_default=True)
@click.option("--max-clips", type=int, default=None, help="score only the first N held-out clips")
@click.option("--baselines/--no-baselines", default=True, show_default=True)
@click.option("--shift-frames", type=int, default=5, show_default=True, help="audio delay of the shifted baseline")
@click.option("--n-bootstrap", type=int, default=1000, show_default=True, help="resamples of the clips")
@click.option("--n-bootstrap-set", type=int, default=None,
              help="resamples for set-level metrics (FID, FVD, E-FID), each a full re-aggregation [default: --n-bootstrap]")
@click.option("--ci", type=float, default=0.95, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--gen", "gen_settings", multiple=True, metavar="KEY=VALUE",
              help="generation setting passed to emo.generate.generate_batch (repeatable)")
@click.option("--weights-dir", default=None, help="metric weights folder (default $EMO_EVAL_WEIGHTS or ~/.cache/emo/eval)")
@click.option("--metric", "only_metrics", multiple=True, help="score only these metrics (by name; repeatable)")
@click.option("--metric-setting", "metric_settings", multiple=True, metavar="SECTION.KEY=VALUE",
              help="override eval/metrics/metrics.yaml, e.g. fvd.route=all_segments, sync.route=mediapipe (repeatable)")
@click.option("--device", default="cpu", show_default=True, help="torch device for the metric networks")
def score(dataset, generated, checkpoint, name, out, split, max_clips, baselines, shift_frames, n_bootstrap,
          n_bootstrap_set, ci, seed, gen_settings, weights_dir, only_metrics, metric_settings, device):
    """Score generated videos and/or checkpoints (and the baselines) on the held-out clips."""
    from eval.harness import (HarnessError, ScoreConfig, checkpoint_systems, directory_system, load_heldout,
                              score as run_score)
    from eval.scoring import BootstrapConfig

    if not 0 < ci < 1:
        raise click.BadParameter("must be between 0 and 1", param_hint="--ci")
    if name and len(name) != len(generated) + len(checkpoint):
        raise click.BadParameter(f"{len(name)} names for {len(generated) + len(checkpoint)} systems "
                                 "(give one per --generated then per --checkpoint, or none)", param_hint="--name")
    cfg = ScoreConfig(split=split, max_clips=max_clips, baselines=baselines, shift_frames=shift_frames,
                      bootstrap=BootstrapConfig(n_bootstrap=n_bootstrap, n_bootstrap_set=n_bootstrap_set,
                                                ci=ci, seed=seed))
    names = list(name) or [None] * (len(generated) + len(checkpoint))
    out = Path(out)
    if device == "cuda" and int(os.environ.get("WORLD_SIZE", 1)) > 1:   # accelerate launch: one GPU per process
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    try:
        clips = load_heldout(dataset, split, max_clips)
        systems = [directory_system(d, clips, n) for d, n in zip(generated, names)]
        settings = _parse_settings(gen_settings)
        for ckpt, n in zip(checkpoint, names[len(generated):]):
            systems += checkpoint_systems(ckpt, clips, out, settings, n)
        from eval.metrics import all_metrics
        overrides: dict = {}
        for key, value in _parse_settings(metric_settings).items():
            section, _, field = key.partition(".")
            if not field:
                raise click.BadParameter(f"{key!r} is not SECTION.KEY", param_hint="--metric-setting")
            overrides.setdefault(section, {})[field] = value
        metrics = all_metrics(weights_dir, device=device, settings=overrides)
        if only_metrics:
            unknown = set(only_metrics) - {m.name for m in metrics}
            metrics = [m for m in metrics if m.name in only_metrics]
            if unknown:
                raise click.BadParameter(f"unknown metrics {sorted(unknown)}", param_hint="--metric")
        written = run_score(dataset, systems, out, metrics=metrics, cfg=cfg, clips=clips, weights_dir=weights_dir,
                            device=device)
    except (HarnessError, FileNotFoundError, ValueError) as exc:   # ConfigError is a ValueError
        raise click.ClickException(str(exc)) from None
    for path in written:
        click.echo(str(path))


@main.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="report folder")
@click.option("--title", default=None)
@click.option("--note", default=None, help="a paragraph shown under the title (what this run is)")
@click.option("--clips", "n_clips", type=int, default=3, show_default=True, help="clips shown in frame strips")
@click.option("--videos/--no-videos", default=True, show_default=True, help="embed short videos with sound")
def report(results, out, title, note, n_clips, videos):
    """Build an HTML page (self-contained) and its Markdown twin from results JSONs."""
    from eval.report import ReportOptions, build_report
    from eval.results import ResultsError

    try:
        html, md = build_report(list(results), out, ReportOptions(title=title, note=note, strip_clips=n_clips, videos=videos))
    except (ResultsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(str(html))
    click.echo(str(md))


@main.group(invoke_without_command=True)
@click.option("--weights-dir", default=None, help="default $EMO_EVAL_WEIGHTS or ~/.cache/emo/eval")
@click.pass_context
def weights(ctx, weights_dir):
    """Show which metric weights are present (subcommands: fetch, convert)."""
    ctx.obj = {"weights_dir": weights_dir}
    if ctx.invoked_subcommand is None:
        from eval.weights import status_table, weights_dir as resolve
        click.echo(f"weights folder: {resolve(weights_dir)}")
        for row in status_table(weights_dir):
            mark = "ok     " if row["status"] == "ok" else "MISSING" if not row["present"] else "BAD    "
            click.echo(f"{mark} {row['name']:<16} {row['file']:<44} used by: {row['used_by'] or '-'}")
            if row["status"] != "ok":
                click.echo(f"        {row['status']}")


@weights.command()
@click.argument("names", nargs=-1)
@click.option("--optional", is_flag=True,
              help="a machine without internet is not an error: say so and exit 0 (the metrics stay unavailable)")
@click.option("--convert/--no-convert", "do_convert", default=True, show_default=True,
              help="also convert what needs it (StyleGAN-V's TorchScript I3D) once it is fetched")
@click.pass_context
def fetch(ctx, names, optional, do_convert):
    """Download the missing weights that have an official direct URL (checksum checked before a file lands)."""
    from eval.weights import convert_i3d_torchscript, find_weights
    from eval.weights import fetch as do_fetch

    report_ = do_fetch(list(names) or None, ctx.obj["weights_dir"], log=click.echo)
    for name, what in report_.items():
        click.echo(f"{name:<16} {what}")
    if do_convert and find_weights("i3d_torchscript", ctx.obj["weights_dir"]) and not find_weights("i3d_fvd", ctx.obj["weights_dir"]):
        try:
            click.echo(f"i3d_fvd          converted: {convert_i3d_torchscript(ctx.obj['weights_dir'])}")
        except (ValueError, FileNotFoundError, RuntimeError) as exc:
            click.echo(f"i3d_fvd          conversion failed: {exc}")
            report_["i3d_fvd"] = "failed: conversion"
    failed = {n: v for n, v in report_.items() if v.startswith("failed")}
    offline = failed and all("URLError" in v or "timed out" in v for v in failed.values())
    if offline and optional:
        click.echo(f"no internet: {len(failed)} weights not fetched; their metrics are reported unavailable")
        return
    if failed:
        sys.exit(1)


@weights.command()
@click.pass_context
def convert(ctx):
    """Convert fetched files that need it (StyleGAN-V's TorchScript I3D -> safetensors)."""
    from eval import weights as registry

    fn = getattr(registry, "convert_i3d_torchscript", None)
    if fn is None:
        raise click.ClickException("eval.weights has no convert_i3d_torchscript")
    click.echo(str(fn(ctx.obj["weights_dir"])))


if __name__ == "__main__":
    main()
