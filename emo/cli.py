"""`python -m emo ...`: init (untrained checkpoint), generate (image + audio -> mp4), train, plan
(memory per GPU of a training stage), diagnose (how much a checkpoint uses its reference and audio)."""
from __future__ import annotations

import logging
import sys

import click


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="log progress")
def main(verbose: bool) -> None:
    """EMO: audio-driven portrait video."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@main.command()
@click.option("--config", required=True, help="YAML config (or a bare name: tiny, sd15)")
@click.option("--out", required=True, type=click.Path(), help="checkpoint folder to write")
@click.option("--seed", default=0, show_default=True, help="seed of the random initialisation")
def init(config: str, out: str, seed: int) -> None:
    """Write an untrained checkpoint (pretrained files where the config names them)."""
    from .models.emo_model import EMOModel
    from .models.pretrained import PretrainedMissing
    try:
        model = EMOModel.from_config(config, seed=seed)
    except PretrainedMissing as exc:
        raise click.ClickException(str(exc))
    model.save_checkpoint(out, meta={"step": 0, "init_seed": seed})
    click.echo(f"wrote {out}")


@main.command()
@click.option("--image", required=True, type=click.Path(exists=True, dir_okay=False), help="portrait image")
@click.option("--audio", required=True, type=click.Path(exists=True, dir_okay=False), help="speech or song (any format)")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="output .mp4")
@click.option("--steps", default=40, show_default=True, help="DDIM steps")
@click.option("--guidance", default=3.5, show_default=True, help="classifier-free guidance scale")
@click.option("--speed", default=None, type=float, help="head rotation speed, deg/frame (default: the config's)")
@click.option("--seed", default=0, show_default=True)
@click.option("--fps", default=25.0, show_default=True)
@click.option("--no-crop", is_flag=True, help="the image is already a face crop: do not detect and crop")
@click.option("--device", default=None, help="torch device [default: cuda when available, else cpu]")
@click.option("--dtype", default=None, type=click.Choice(["bf16", "fp16", "fp32"]),
              help="precision of the networks [default: bf16 on CUDA, fp32 on the CPU]")
@click.option("--weights", type=click.Choice(["ema", "raw"]), default=None,
              help="EMA or raw trained weights [default: EMA when the checkpoint has them]")
def generate(image, audio, checkpoint, out, steps, guidance, speed, seed, fps, no_crop, device, dtype, weights) -> None:
    """Animate IMAGE with AUDIO; the mp4 lasts as long as the audio and carries it."""
    from .generate import generate_video
    from .media.face import ModelFileMissing
    from .media.video import MediaError
    from .pipeline import PortraitError
    try:
        path = generate_video(checkpoint, image, audio, out, fps=fps, steps=steps, guidance=guidance,
                              speed=speed, seed=seed, crop=not no_crop, device=device, dtype=dtype,
                              weights=weights)
    except (PortraitError, ModelFileMissing, MediaError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc))
    click.echo(f"wrote {path}")


@main.command()
@click.option("--config", required=True, help="YAML config (or a bare name: tiny, sd15)")
@click.option("--stage", required=True, type=click.IntRange(1, 3))
@click.option("--weights", default="fp32", show_default=True, type=click.Choice(["fp32", "bf16"]),
              help="fp32: fp32 weights + bf16 autocast (accelerate mixed precision); bf16: bf16 weights and "
                   "gradients, fp32 master copy in the optimizer (a what-if: the training loop keeps fp32 weights)")
@click.option("--optimizer", default="adamw", show_default=True, type=click.Choice(["adamw", "adamw8bit"]))
@click.option("--zero", default=0, show_default=True, type=click.Choice(["0", "2", "3"]),
              help="2: gradients and optimizer state sharded over --gpus (ZeRO-2 level; stage2_fsdp.yaml); 3: weights too")
@click.option("--gpus", default=1, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=None, type=click.IntRange(1), help="per GPU [default: the config's for the stage]")
@click.option("--checkpointing/--no-checkpointing", default=True, show_default=True, help="gradient checkpointing")
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False), help="also write the plan as JSON")
def plan(config, stage, weights, optimizer, zero, gpus, batch_size, checkpointing, json_out) -> None:
    """Memory per GPU of a training stage: parameters, weights, gradients, optimizer state and
    activations (counted at reduced sizes on this CPU and scaled; minutes for sd15)."""
    import dataclasses
    import json

    from .config import load_config
    from .fileio import atomic_write
    from .plan import Precision, format_plan, make_plan
    cfg = load_config(config)
    precision = Precision(weights=weights, optimizer=optimizer, zero=int(zero), gpus=gpus)
    result = make_plan(cfg, stage, precision, batch_size=batch_size, checkpointing=checkpointing)
    click.echo(format_plan(config, result, precision))
    if json_out:
        atomic_write(json_out, json.dumps({"config": config, "precision": dataclasses.asdict(precision),
                                           **dataclasses.asdict(result)}, indent=1, default=str))


@main.command("fetch-mediapipe")
@click.option("--dest", default=None, type=click.Path(file_okay=False),
              help="where to put the files (default ~/.cache/emo/mediapipe, searched automatically)")
def fetch_mediapipe(dest) -> None:
    """Download MediaPipe's face detector and landmarker model files (not shipped in its wheel)."""
    from .media.face import fetch_mediapipe_models

    for path in fetch_mediapipe_models(dest):
        click.echo(str(path))


@main.command()
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False))
@click.option("--dataset", required=True, type=click.Path(exists=True, file_okay=False),
              help="dataset folder (manifest.parquet) whose held-out clips are used")
@click.option("--split", default="test", show_default=True, help="manifest split of the held-out clips")
@click.option("--clips", default=4, show_default=True, help="number of held-out clips (the first by clip id)")
@click.option("--steps", default=10, show_default=True, help="DDIM steps of the generated frames")
@click.option("--guidance", default=None, type=float, help="guidance scale (default: the config's)")
@click.option("--seed", default=0, show_default=True, help="seed of the fixed noise")
@click.option("--no-frames", is_flag=True, help="noise-prediction figures only (no generation)")
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False),
              help="write the figures as JSON here ('-': stdout; default: CHECKPOINT/diagnose.json)")
def diagnose(checkpoint, dataset, split, clips, steps, guidance, seed, no_frames, json_out) -> None:
    """How much CHECKPOINT depends on its reference image and its audio (swapped, dropped)."""
    import json

    from .diagnose import diagnose as run, summary_lines, write_json
    try:
        result = run(checkpoint, dataset, split=split, n_clips=clips, steps=steps, guidance=guidance,
                     seed=seed, generate=not no_frames)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc))
    if json_out == "-":
        click.echo(json.dumps(result, indent=1))
        return
    path = write_json(result, json_out or f"{checkpoint}/diagnose.json")
    for line in summary_lines(result):
        click.echo(line)
    click.echo(f"wrote {path}")


# `train` lives with the training code (options: --stage, --max-steps, --resume, --mixed-precision, ...).
from .training.cli import train_command  # noqa: E402

main.add_command(train_command)


if __name__ == "__main__":
    sys.exit(main())
