"""The EMO configuration: one YAML file, one dataclass per section.

`model`, `audio`, `speed` and `inference` are owned by the model code and parsed here; `data` and
`train` are kept as plain dicts whose meaning belongs to `emo.training`. Types and unknown keys are
checked when the file is loaded (`emo.typed_config`).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .fileio import atomic_write
from .typed_config import ConfigError, from_mapping, read_yaml_mapping


@dataclass
class PretrainedPaths:
    """Local paths or hub ids of pretrained weights; None builds a random network instead."""
    unet: str | None = None            # SD-1.5 UNet folder (diffusers layout) or repo id with subfolder "unet"
    vae: str | None = None             # sd-vae-ft-mse folder or repo id
    motion_module: str | None = None   # AnimateDiff mm_sd_v15_v2: MotionAdapter folder or original .ckpt
    wav2vec2: str | None = None        # facebook/wav2vec2-base folder or repo id


@dataclass
class ModelConfig:
    sample_size: int = 64                   # pixels (square); latents are sample_size / 8
    latent_channels: int = 4
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64])
    down_block_types: list[str] = field(default_factory=lambda: ["CrossAttnDownBlock2D", "DownBlock2D"])
    up_block_types: list[str] = field(default_factory=lambda: ["UpBlock2D", "CrossAttnUpBlock2D"])
    layers_per_block: int = 1
    attention_head_dim: int = 4             # diffusers' legacy name: the NUMBER of heads (SD-1.5: 8)
    cross_attention_dim: int = 32           # width of the audio tokens seen by audio-attention (SD: 768)
    norm_num_groups: int = 32
    motion_num_attention_heads: int = 4     # temporal self-attention heads (AnimateDiff: 8)
    motion_max_seq_length: int = 32         # temporal positional table; must be >= frames + motion frames
    use_motion_mid_block: bool = True
    num_frames: int = 12                    # f: frames generated per clip
    num_motion_frames: int = 4              # n: last generated frames fed back through the ReferenceNet
    face_locator_channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    # A random VAE is built from this when pretrained.vae is None (tiny config only).
    vae_block_out_channels: list[int] = field(default_factory=lambda: [8, 16, 32, 32])
    vae_norm_num_groups: int = 8
    vae_scaling_factor: float = 0.18215
    # What the denoising network predicts: the noise ("epsilon") or v = sqrt(ab) eps - sqrt(1 - ab) x0
    # ("v_prediction", Salimans & Ho 2022). One setting for the training target, the samplers and the
    # diagnostics (EMOModel.noise_scheduler_config). Pretrained SD-1.5 weights are epsilon models.
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    pretrained: PretrainedPaths = field(default_factory=PretrainedPaths)


@dataclass
class AudioConfig:
    sample_rate: int = 16000
    context: int = 2                        # m: neighbours stacked on each side (5 frames in all)
    # A random Wav2Vec2 is built from these when pretrained.wav2vec2 is None (tiny config only).
    tiny_hidden_size: int = 32
    tiny_num_layers: int = 2
    tiny_conv_dim: int = 16
    projection_hidden: int = 64             # audio_projection MLP width


@dataclass
class SpeedConfig:
    # d = 9 buckets of head rotation speed (degrees per frame), s_i = tanh((w - c_i) / r_i * 3) (the
    # paper's code). Centres are denser near 0 where most talking-head frames lie (dataset
    # mean_speed is typically 0.2-1.5 deg/frame). A bucket is excited (not saturated, |s_i| < 0.9)
    # within 0.49 r_i of its centre (atanh(0.9) / 3); radii are 2.5 x the larger gap to a
    # neighbouring centre, so each ramp reaches past its neighbours' centres, neighbouring ramps
    # overlap, and every speed from the first centre to the last excites >= 2 buckets (nearby speeds
    # such as 0.10 and 0.15 deg/frame get codes that differ by > 0.1). tests/test_speed_buckets.py.
    centres: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0])
    radii: list[float] = field(default_factory=lambda: [0.625, 0.625, 0.625, 0.625, 1.25, 1.25, 2.5, 2.5, 2.5])
    context: int = 2                        # m: neighbouring frames stacked on each side
    hidden: int = 64
    embed_dim: int = 32                     # width of the speed tokens the temporal layers attend to


@dataclass
class InferenceConfig:
    steps: int = 40
    guidance: float = 3.5
    fps: float = 25.0
    speed: float = 0.5                      # deg/frame, constant per video unless a per-frame array is given
    seed: int = 0
    eta: float = 0.0                        # DDIM eta


@dataclass
class EMOConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    data: dict[str, Any] = field(default_factory=dict)     # owned by emo.training
    train: dict[str, Any] = field(default_factory=dict)    # owned by emo.training
    source: str | None = field(default=None, metadata={"internal": True})  # where it was loaded from (not saved)

    def validate(self) -> None:
        s = self.speed
        if len(s.centres) != len(s.radii) or not s.centres:
            raise ConfigError(f"speed.centres ({len(s.centres)}) and speed.radii ({len(s.radii)}) must match")
        if any(r <= 0 for r in s.radii):
            raise ConfigError("speed.radii must be positive")
        m = self.model
        if m.num_frames + m.num_motion_frames > m.motion_max_seq_length:
            raise ConfigError("model.num_frames + model.num_motion_frames exceeds model.motion_max_seq_length")
        if m.sample_size % 8:
            raise ConfigError(f"model.sample_size must be a multiple of 8, got {m.sample_size}")
        if len(m.block_out_channels) != len(m.down_block_types) or len(m.up_block_types) != len(m.down_block_types):
            raise ConfigError("model.block_out_channels, down_block_types and up_block_types differ in length")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("source", None)
        return d

    def to_yaml(self, path: str | os.PathLike | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            atomic_write(path, text)
        return text


def config_from_dict(d: dict, source: str | None = None) -> EMOConfig:
    cfg = from_mapping(EMOConfig, d, source=source)
    cfg.source = source
    cfg.validate()
    return cfg


def load_config(path: str | os.PathLike) -> EMOConfig:
    """Read a YAML config. A bare name ("tiny", "sd15") means emo/configs/<name>.yaml."""
    p = Path(path)
    if not p.exists() and p.suffix == "" and (CONFIG_DIR / f"{p.name}.yaml").exists():
        p = CONFIG_DIR / f"{p.name}.yaml"
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    return config_from_dict(read_yaml_mapping(p), source=str(p))


CONFIG_DIR = Path(__file__).parent / "configs"
