"""The `data:` and `train:` sections of an EMO config, parsed into dataclasses.

`emo.config.EMOConfig` keeps both sections as plain dicts; their meaning lives here. They are read
with the one config mechanism, `emo.typed_config.from_mapping`: unknown keys and mistyped values are
a `ConfigError` naming the file and the key (a typo in a YAML file should not silently fall back to
a default); the range checks below (`__post_init__`) are reported the same way.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from emo.typed_config import ConfigError, from_mapping

__all__ = ["ConfigError", "DataConfig", "EMAConfig", "StagePlan", "TrainConfig", "parse_data", "parse_train"]


@dataclass
class DataConfig:
    sample_size: int = 512         # pixels; clips are resized to sample_size x sample_size
    n_motion: int = 4              # motion frames before each window (paper: n = 4)
    n_frames: int = 12             # frames denoised at once (paper: f = 12)
    fps: float = 25.0              # clips at another rate are resampled by nearest frame in time
    split: str = "train"
    audio_cache: bool = True       # wav2vec features cached per clip under <dataset>/cache/audio/
    num_workers: int = 0           # DataLoader workers

    def __post_init__(self):
        # ValueError: from_mapping re-raises it as a ConfigError naming the file and the section.
        if self.sample_size % 8:
            raise ValueError(f"sample_size must be a multiple of 8 (VAE), got {self.sample_size}")
        if self.n_frames < 1 or self.n_motion < 0:
            raise ValueError("n_frames must be >= 1 and n_motion >= 0")
        if self.fps <= 0:
            raise ValueError("fps must be > 0")


@dataclass
class StagePlan:
    steps: int = 0                 # optimizer steps in this stage (0 skips the stage)
    lr: float | None = None        # overrides train.lr for this stage
    batch_size: int | None = None  # overrides train.batch_size for this stage


@dataclass
class EMAConfig:
    enabled: bool = False
    decay: float = 0.9999


@dataclass
class TrainConfig:
    seed: int = 0
    lr: float = 1e-5                          # paper: 1e-5 in all stages
    batch_size: int = 1                       # per process
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    lr_scheduler: str = "constant_with_warmup"  # any name diffusers.optimization.get_scheduler knows
    lr_warmup_steps: int = 0
    gradient_accumulation_steps: int = 1
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    optimizer: Literal["adamw", "adamw8bit"] = "adamw"  # adamw8bit: bitsandbytes, CUDA only
    gradient_checkpointing: bool = False
    drop_reference_prob: float = 0.05         # stage 2/3: reference condition dropped (CFG)
    drop_audio_prob: float = 0.05             # stage 2/3: audio condition dropped (CFG)
    # stage 2/3: reference AND audio dropped together, as in the pipeline's unconditional pass; drawn
    # first, the single drops above apply to the remaining steps (so both are dropped in
    # p_joint + (1 - p_joint) * p_ref * p_audio of the steps, not just p_ref * p_audio).
    drop_reference_and_audio_prob: float = 0.05
    # stage 2/3: a window's motion frames replaced by zeros, as for the first clip at inference
    # (dataprep's 3-12 s clips otherwise never train that case); Hallo uses about 5 %.
    drop_motion_prob: float = 0.05
    # One random colour transform (channels permuted, per-channel gain and offset) applied to a
    # sample's reference, target and motion frames alike, in this share of the samples: the
    # frames' colours can then be known only from the reference. Trained on a few identities
    # without it, the tiny model read each identity's colours from the noisy latent and ignored
    # its reference (issue 12). 0 for real data (many identities, pretrained VAE).
    joint_colour_augment_prob: float = 0.0
    # Weight of each timestep's loss (emo.training.step.StageLoss.timestep_weight): "none" (SD's
    # plain epsilon MSE) or "truncated_snr" (x0 errors weighted max(SNR, 1): the high-noise steps
    # where a frame's colours are decided count as much as the rest; issue 12).
    loss_weighting: Literal["none", "truncated_snr"] = "none"
    save_every: int = 1000                    # checkpoint every N global steps (0: never)
    save_steps: list[int] = field(default_factory=list)  # extra global steps to checkpoint at
    keep_last: int = 0                        # 0 keeps every checkpoint
    log_every: int = 10
    log_with: str | None = "tensorboard"      # accelerate tracker name, or null
    stages: dict[int, StagePlan] = field(default_factory=dict)
    vae_fit_steps: int = 0                    # >0: fit a VAE that has no pretrained weights first (vae_fit.py)
    vae_fit_lr: float = 1e-3
    ema: EMAConfig = field(default_factory=EMAConfig)

    def __post_init__(self):
        # ValueError: from_mapping re-raises it as a ConfigError naming the file and the section.
        self.adam_betas = tuple(float(b) for b in self.adam_betas)
        bad = sorted(set(self.stages) - {1, 2, 3})
        if bad:
            raise ValueError(f"stages: stages are 1, 2, 3; got {bad}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        for name in ("drop_reference_prob", "drop_audio_prob", "drop_reference_and_audio_prob", "drop_motion_prob",
                     "joint_colour_augment_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        self.save_steps = sorted(int(s) for s in self.save_steps)

    def stage_plan(self, stage: int) -> StagePlan:
        return self.stages.get(stage, StagePlan())

    def stage_lr(self, stage: int) -> float:
        plan = self.stage_plan(stage)
        return self.lr if plan.lr is None else plan.lr

    def stage_batch_size(self, stage: int) -> int:
        plan = self.stage_plan(stage)
        return self.batch_size if plan.batch_size is None else plan.batch_size

    def schedule(self, only: int | None = None) -> list[tuple[int, int, int]]:
        """(stage, first global step, end global step) for the stages to run, in order.

        Global steps count across stages so checkpoint names never collide; a single stage run
        (`only`) starts at 0 unless resumed.
        """
        out, start = [], 0
        for stage in (1, 2, 3):
            steps = self.stage_plan(stage).steps
            if only is not None and stage != only:
                continue
            if steps > 0:
                out.append((stage, start, start + steps))
                start += steps
        return out


def parse_data(raw: dict | None, source: str | os.PathLike | None = None) -> DataConfig:
    """The `data:` section (a mapping, as read from YAML) of the config file `source`."""
    return from_mapping(DataConfig, raw, where="data", source=source)


def parse_train(raw: dict | None, source: str | os.PathLike | None = None) -> TrainConfig:
    """The `train:` section (a mapping, as read from YAML) of the config file `source`."""
    return from_mapping(TrainConfig, raw, where="train", source=source)
