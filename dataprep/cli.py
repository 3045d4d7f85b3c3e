"""`python -m dataprep run|synth|inspect`: raw videos -> clips + manifests."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .config import CONFIG_DIR, load_config


SYNTH_MARKER = "corpus.json"   # written last by dataprep.synth.generate_corpus


def is_synthetic_corpus(raw: Path) -> bool:
    """The sample corpus marks its folder with corpus.json, and its ground truth carries `seed`."""
    if (Path(raw) / SYNTH_MARKER).is_file():
        return True
    for gt in sorted(Path(raw).glob("*.groundtruth.json"))[:3]:
        try:
            if "seed" in json.loads(gt.read_text()):
                return True
        except (OSError, ValueError):
            continue
    return False


def default_config_for(raw: Path) -> Path:
    return CONFIG_DIR / ("sample.yaml" if is_synthetic_corpus(raw) else "default.yaml")


@click.group()
def main():
    """Dataset preparation for EMO: probe, cut, faces, diarize, sync, filter, manifest."""


@main.command()
@click.option("--raw", "raw", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="folder of raw videos (searched recursively)")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="dataset folder to write (clips/, manifest.parquet, rejects.parquet, stats.json)")
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML config (default: configs/default.yaml, or sample.yaml for the synthetic corpus)")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="processes of the local executor")
@click.option("--executor", "executor_name", default="local", show_default=True,
              type=click.Choice(["local", "ray"]), help="local process pool, or Ray tasks")
@click.option("--address", default=None,
              help="Ray cluster to join ('auto', host:port or ray://...); default: a local Ray instance")
@click.option("--cpus-per-video", default=1.0, show_default=True, type=click.FloatRange(min=0.01),
              help="Ray: CPUs reserved for each video's task")
@click.option("--gpus-per-video", default=0.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Ray: GPUs reserved for each video's task (for a stage that can use one)")
@click.option("--max-retries", default=2, show_default=True, type=click.IntRange(0, 100),
              help="a video whose worker process or node dies is retried this many times, then "
                   "becomes a 'runner: worker lost' reject")
@click.option("--fresh", is_flag=True,
              help="delete OUT's earlier results (clips/, .work/, tables) and start over; needed "
                   "when OUT holds a dataset of another config")
@click.option("--quiet", is_flag=True, help="no progress bar")
def run(raw: Path, out: Path, config: Path | None, workers: int, executor_name: str, address: str | None,
        cpus_per_video: float, gpus_per_video: float, max_retries: int, fresh: bool, quiet: bool):
    """Process every video under RAW into a dataset folder at OUT (resumable)."""
    from .executors import ExecutorError, make_executor
    from .runner import OutFolderConflict
    from .runner import run as run_pipeline

    config = config or default_config_for(raw)
    cfg = load_config(config)
    click.echo(f"config: {config}", err=True)
    if address and executor_name != "ray":
        raise click.UsageError("--address needs --executor ray")
    executor = make_executor(executor_name, workers=workers, max_retries=max_retries, address=address,
                             cpus_per_video=cpus_per_video, gpus_per_video=gpus_per_video)
    try:
        stats = run_pipeline(raw, out, cfg, workers=workers, progress=not quiet, executor=executor,
                             fresh=fresh)
    except (OutFolderConflict, ExecutorError, ImportError) as exc:
        raise click.ClickException(str(exc))
    _print_summary(stats)
    crashed = stats["run"]["videos_crashed"]
    if stats["videos"] and crashed == stats["videos"]:
        click.echo(f"error: every video ({crashed}) crashed or lost its worker; see rejects.parquet",
                   err=True)
        sys.exit(1)


@main.command()
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True, type=int)
def synth(out: Path, seed: int):
    """Render the synthetic sample corpus with its ground truth."""
    from .synth import generate_corpus

    paths = generate_corpus(out, seed)
    click.echo(f"{len(paths)} videos in {out}")


@main.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--html", "html", is_flag=True, help="also write the viewer page DATASET/report.html")
@click.option("--html-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="where to write the viewer page (implies --html)")
@click.option("--raw", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="raw folder for reject thumbnails (default: the one stats.json names)")
def inspect(dataset: Path, html: bool, html_out: Path | None, raw: Path | None):
    """Summarise a dataset folder: clips per split, rejects per stage and reason (--html: a page
    with charts, every kept clip playable and every reject with a source frame)."""
    from emo.manifest import read_manifest, read_rejects

    try:
        manifest = read_manifest(dataset)
        rejects = read_rejects(dataset)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc))
    click.echo(f"{dataset}: {len(manifest)} clips, "
               f"{(manifest.n_frames / manifest.fps).sum():.1f} s, {manifest.source_video.nunique()} source videos")
    if len(manifest):
        for split, part in manifest.groupby("split"):
            click.echo(f"  {split:5s} {len(part):4d} clips  {part.group.nunique():3d} groups  "
                       f"{(part.n_frames / part.fps).sum():7.1f} s")
        cols = ["face_frac", "yaw_range", "sharpness", "speech_ratio", "sync_confidence"]
        click.echo("  medians: " + ", ".join(f"{c} {manifest[c].median():.3g}" for c in cols))
    click.echo(f"{len(rejects)} rejects")
    if len(rejects):
        for (stage, reason), n in rejects.groupby(["stage", "reason"]).size().items():
            click.echo(f"  {stage:8s} {reason:22s} {n}")
    if html or html_out:
        from .viewer import build_dataset_report
        click.echo(f"viewer: {build_dataset_report(dataset, html_out, raw)}")


def _print_summary(stats: dict) -> None:
    click.echo(f"{stats['clips_kept']} clips kept ({stats['kept_seconds']:.1f} s of "
               f"{stats['source_seconds']:.1f} s), {stats['rejects']} rejects, splits {stats['clips_by_split']}")
    for k, n in stats["rejects_by_stage_reason"].items():
        click.echo(f"  {k}: {n}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
