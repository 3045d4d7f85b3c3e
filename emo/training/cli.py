"""`python -m emo train`: the click command that emo/cli.py registers (`cli.add_command(train_command)`)."""
from __future__ import annotations

import logging

import click


@click.command("train")
@click.option("--config", required=True, help="EMO config YAML (or a bare name: tiny, sd15).")
@click.option("--dataset", required=True, type=click.Path(file_okay=False), help="Dataset folder with manifest.parquet.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder: step-NNNNNN checkpoints, latest, logs.")
@click.option("--stage", type=click.IntRange(1, 3), default=None, help="Train one stage only (default: 1, 2, 3 in sequence).")
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Stop after this many optimizer steps (a checkpoint is saved).")
@click.option("--resume", default=None, help="Checkpoint folder, or run folder with a `latest` file, to continue exactly "
              "(default: --out itself when it holds a `latest` checkpoint; a complete run is left as it is).")
@click.option("--mixed-precision", type=click.Choice(["no", "fp16", "bf16"]), default=None, help="Overrides train.mixed_precision.")
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=None, help="Overrides train.gradient_checkpointing.")
@click.option("--no-log", is_flag=True, help="No TensorBoard tracker.")
@click.option("--vae-fit-steps", type=click.IntRange(min=0), default=None,
              help="Overrides train.vae_fit_steps (fitting a VAE that has no pretrained weights; 0: off).")
def train_command(config, dataset, out, stage, max_steps, resume, mixed_precision, gradient_checkpointing, no_log,
                  vae_fit_steps):
    """Train EMO (stages 1 -> 2 -> 3) on a dataset folder; checkpoints follow Contract 2."""
    from emo.manifest import ManifestError
    from emo.typed_config import ConfigError

    from .train import main

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        result = main(config, dataset, out, stage=stage, max_steps=max_steps, resume=resume,
                      mixed_precision=mixed_precision, log_with=None if no_log else "config",
                      gradient_checkpointing=gradient_checkpointing, vae_fit_steps=vae_fit_steps)
    except (FileNotFoundError, ManifestError, ConfigError) as exc:   # PretrainedMissing too
        raise click.ClickException(str(exc)) from None
    if not result.is_main_process:
        return
    if result.already_complete:
        click.echo(f"{out}: the run is already complete at step {result.step} ({result.resumed_from}); "
                   f"nothing trained, nothing overwritten (train into a new --out to start again)")
        return
    if result.resumed_from is not None:
        click.echo(f"continued from {result.resumed_from}")
    last = result.checkpoints[-1] if result.checkpoints else None
    click.echo(f"trained to step {result.step} in {result.seconds:.1f} s; last checkpoint: {last}")
    if result.losses:
        click.echo(f"loss: first {result.losses[0][2]:.4f}, last {result.losses[-1][2]:.4f}")
