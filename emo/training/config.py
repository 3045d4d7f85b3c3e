"""The `data:` and `train:` sections of an EMO config, parsed into dataclasses.

`emo.config.EMOConfig` keeps both sections as plain dicts; their meaning lives here. Unknown keys
are an error (a typo in a YAML file should not silently fall back to a default).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


class TrainConfigError(ValueError):
    pass


def _from_dict(cls, raw: dict | None, where: str):
    raw = dict(raw or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise TrainConfigError(f"{where}: unknown keys {unknown}; known keys are {sorted(known)}")
    return cls(**raw)


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
        if self.sample_size % 8:
            raise TrainConfigError(f"data.sample_size must be a multiple of 8 (VAE), got {self.sample_size}")
        if self.n_frames < 1 or self.n_motion < 0:
            raise TrainConfigError("data.n_frames must be >= 1 and data.n_motion >= 0")
        if self.fps <= 0:
            raise TrainConfigError("data.fps must be > 0")


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
    mixed_precision: str = "no"               # no | fp16 | bf16
    optimizer: str = "adamw"                  # adamw (torch) | adamw8bit (bitsandbytes, CUDA only)
    gradient_checkpointing: bool = False
    drop_reference_prob: float = 0.05         # stage 2/3: reference condition dropped (CFG)
    drop_audio_prob: float = 0.05             # stage 2/3: audio condition dropped (CFG)
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
        self.adam_betas = tuple(float(b) for b in self.adam_betas)
        self.stages = {int(k): (v if isinstance(v, StagePlan) else _from_dict(StagePlan, v, f"train.stages.{k}"))
                       for k, v in (self.stages or {}).items()}
        bad = sorted(set(self.stages) - {1, 2, 3})
        if bad:
            raise TrainConfigError(f"train.stages: stages are 1, 2, 3; got {bad}")
        if not isinstance(self.ema, EMAConfig):
            self.ema = _from_dict(EMAConfig, self.ema, "train.ema")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise TrainConfigError(f"train.mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        if self.optimizer not in ("adamw", "adamw8bit"):
            raise TrainConfigError(f"train.optimizer must be adamw or adamw8bit, got {self.optimizer!r}")
        for name in ("drop_reference_prob", "drop_audio_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise TrainConfigError(f"train.{name} must be in [0, 1]")
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


def parse_data(raw: dict | None) -> DataConfig:
    return _from_dict(DataConfig, raw, "data")


def parse_train(raw: dict | None) -> TrainConfig:
    return _from_dict(TrainConfig, raw, "train")


def to_plain(obj: Any) -> Any:
    """A dataclass config as YAML-friendly plain types (tuples -> lists, int keys kept)."""
    if hasattr(obj, "__dataclass_fields__"):
        return to_plain(asdict(obj))
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj
