"""EMOModel: the thin wrapper that owns EMO's networks and the calls training and inference make.

Trained (ModelMixin + ConfigMixin, saved with save_pretrained): backbone, reference_net,
face_locator, speed_encoder, audio_projection. Frozen: vae (AutoencoderKL), audio_encoder (wav2vec2).
Checkpoint layout: docs/INTERFACES.md, Contract 2 (this class writes everything but training_state/),
plus `ema.safetensors` (EMA values of the parameters training averaged, by parameter name) when
training kept an EMA: `from_checkpoint(path, weights="ema" | "raw")` picks which weights to use.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import EMOConfig, load_config
from ..fileio import atomic_write, replace_folder, temp_sibling
from . import pretrained as pt
from .audio_encoder import AudioEncoder, AudioProjection
from .backbone import EMOBackbone, motion_unet_config
from .bank import ReferenceBank
from .face_locator import FaceLocator
from .reference_net import ReferenceNet
from .speed_encoder import SpeedEncoder
from .temporal import load_motion_state_dict, reference_feature_name

TRAINED = ("backbone", "reference_net", "face_locator", "speed_encoder", "audio_projection")
EMA_FILE = "ema.safetensors"


@dataclass(frozen=True)
class StagePolicy:
    """What one training stage runs and trains. The one definition: `EMOModel.set_stage` applies
    it, the training loop (emo.training.step / stages) reads it, and the tests check it."""
    temporal: bool              # temporal modules run (with motion frames); off: skipped entirely
    audio: bool                 # audio-attention runs on the audio tokens
    speed: bool                 # speed layers run
    trains: frozenset[str]      # parameter groups (`EMOModel.parameter_groups`) that learn


# EMO paper, section 3.3 / 4.1. 1 image pretraining: single frames, no temporal/audio/speed layers;
# 2 video training: + temporal modules (with motion frames) and audio layers; 3 speed: + speed
# layers, and ONLY the temporal modules and speed layers learn. Groups never listed (vae,
# audio_encoder, the ReferenceNet's "unused" layers) are frozen in every stage.
STAGES = {
    1: StagePolicy(temporal=False, audio=False, speed=False,
                   trains=frozenset({"backbone_spatial", "reference_net", "face_locator"})),
    2: StagePolicy(temporal=True, audio=True, speed=False,
                   trains=frozenset({"backbone_spatial", "reference_net", "face_locator", "temporal", "audio_layers"})),
    3: StagePolicy(temporal=True, audio=True, speed=True, trains=frozenset({"temporal", "speed"})),
}
# The group of a parameter of each top-level network unless its structure says otherwise.
_DEFAULT_GROUP = {"backbone": "backbone_spatial", "reference_net": "reference_net", "face_locator": "face_locator",
                  "speed_encoder": "speed", "audio_projection": "audio_layers", "vae": "vae",
                  "audio_encoder": "audio_encoder"}

SD15_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                      beta_schedule="scaled_linear", prediction_type="epsilon", clip_sample=False,
                      set_alpha_to_one=False, steps_offset=1)


def unet2d_config(cfg: EMOConfig) -> dict:
    m = cfg.model
    return dict(sample_size=m.sample_size // 8, in_channels=m.latent_channels, out_channels=m.latent_channels,
                block_out_channels=list(m.block_out_channels), down_block_types=list(m.down_block_types),
                up_block_types=list(m.up_block_types), layers_per_block=m.layers_per_block,
                attention_head_dim=m.attention_head_dim, cross_attention_dim=m.cross_attention_dim,
                norm_num_groups=m.norm_num_groups)


def tiny_vae(cfg: EMOConfig) -> AutoencoderKL:
    m = cfg.model
    n = len(m.vae_block_out_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=m.latent_channels,
                         down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                         block_out_channels=tuple(m.vae_block_out_channels), layers_per_block=1,
                         norm_num_groups=m.vae_norm_num_groups, sample_size=m.sample_size,
                         scaling_factor=m.vae_scaling_factor)


def _own_memory(module: nn.Module) -> None:
    """Copy loaded tensors into fresh allocations. safetensors hands out (memory-mapped) storage
    whose alignment differs from torch's own, and CPU kernels pick different code paths by
    alignment, so without this a reloaded model differs from the saved one by ~1e-6 and an exact
    resume of training is impossible."""
    with torch.no_grad():
        for p in module.parameters():
            p.data = p.data.clone()
        for sub in module.modules():
            for name, b in list(sub._buffers.items()):
                if b is not None:
                    sub._buffers[name] = b.clone()


class EMOModel(nn.Module):

    def __init__(self, cfg: EMOConfig, backbone: EMOBackbone, reference_net: ReferenceNet, face_locator: FaceLocator,
                 speed_encoder: SpeedEncoder, audio_projection: AudioProjection, vae: AutoencoderKL,
                 audio_encoder: AudioEncoder):
        super().__init__()
        self.cfg = cfg
        self.backbone, self.reference_net = backbone, reference_net
        self.face_locator, self.speed_encoder, self.audio_projection = face_locator, speed_encoder, audio_projection
        self.vae = vae.eval().requires_grad_(False)
        self.audio_encoder = audio_encoder
        # SD-1.5's noise schedule; what the network predicts is the config's (training, sampling and
        # diagnostics all build their schedulers from this dict, and the checkpoint saves the config).
        self.noise_scheduler_config = dict(SD15_SCHEDULER, prediction_type=cfg.model.prediction_type)
        # Temporal module -> the ReferenceNet module whose output is at its place (motion frames).
        self.motion_points = {n: reference_feature_name(n, reference_net.unet) for n in backbone.motion_names}
        self.weights = "raw"        # "ema" when from_checkpoint loaded the EMA weights
        self.face_mask_scale = None  # {"x", "y"}: the face mask's training/inference box ratio
        self.stage = 3
        self.set_stage(3)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: EMOConfig | str | os.PathLike, seed: int = 0) -> "EMOModel":
        """Pretrained files where the config names them (missing -> PretrainedMissing naming each),
        random networks elsewhere; new layers zero-initialised."""
        if not isinstance(cfg, EMOConfig):
            cfg = load_config(cfg)
        pre = cfg.model.pretrained
        problems = pt.check_all(pre)
        if problems:
            raise pt.PretrainedMissing("missing pretrained weights:\n  " + "\n  ".join(problems))
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            sd_unet = pt.load_sd_unet(pre.unet) if pre.unet else UNet2DConditionModel(**unet2d_config(cfg))
            ucfg = {k: v for k, v in dict(sd_unet.config).items() if not k.startswith("_")}
            m = cfg.model
            backbone = EMOBackbone(unet_config=motion_unet_config(ucfg, m.motion_num_attention_heads,
                                                           m.motion_max_seq_length, m.use_motion_mid_block),
                                   speed_dim=cfg.speed.embed_dim)
            reference_net = ReferenceNet(unet_config=ucfg)
            # Backbone and ReferenceNet start from the same 2D weights (SD-1.5, or the same random draw).
            weights = sd_unet.state_dict()
            backbone.load_sd_unet_state_dict(weights)
            reference_net.unet.load_state_dict(weights)
            del sd_unet, weights
            if pre.motion_module:
                load_motion_state_dict(backbone.unet, pt.load_motion_module_state_dict(pre.motion_module))
            vae = pt.load_vae(pre.vae) if pre.vae else tiny_vae(cfg)
            a = cfg.audio
            audio_encoder = pt.load_wav2vec2(pre.wav2vec2, a.context) if pre.wav2vec2 else \
                AudioEncoder.tiny(a.tiny_hidden_size, a.tiny_num_layers, a.tiny_conv_dim, a.context, seed=seed)
            face_locator = FaceLocator(channels=tuple(m.face_locator_channels), latent_channels=m.latent_channels)
            s = cfg.speed
            speed_encoder = SpeedEncoder(centres=tuple(s.centres), radii=tuple(s.radii), context=s.context,
                                         hidden=s.hidden, embed_dim=s.embed_dim)
            audio_projection = AudioProjection(in_dim=audio_encoder.feature_dim, out_dim=ucfg["cross_attention_dim"],
                                               hidden=a.projection_hidden, num_tokens=2 * a.context + 1)
        return cls(cfg, backbone, reference_net, face_locator, speed_encoder, audio_projection, vae, audio_encoder)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, weights: str | None = None) -> "EMOModel":
        """weights: "ema" (the EMA training kept, in ema.safetensors), "raw" (the optimizer's
        weights, what resuming training needs) or None: EMA when the checkpoint has it."""
        path = Path(path)
        if weights not in (None, "ema", "raw"):
            raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
        if not (path / "config.yaml").is_file():
            raise FileNotFoundError(f"{path} is not an EMO checkpoint (no config.yaml)")
        cfg = load_config(path / "config.yaml")
        cfg.model.pretrained = pt.anchored(cfg.model.pretrained, path)   # relative to the checkpoint
        missing = [n for n in TRAINED if not (path / n / "config.json").is_file()]
        if missing:
            raise FileNotFoundError(f"checkpoint {path} lacks {', '.join(missing)}")
        nets = {"backbone": EMOBackbone, "reference_net": ReferenceNet, "face_locator": FaceLocator,
                "speed_encoder": SpeedEncoder, "audio_projection": AudioProjection}
        loaded = {n: c.from_pretrained(path / n, low_cpu_mem_usage=False) for n, c in nets.items()}
        pre = cfg.model.pretrained
        vae = AutoencoderKL.from_pretrained(path / "vae") if (path / "vae").is_dir() else pt.load_vae(pre.vae)
        audio_encoder = AudioEncoder.from_pretrained(str(path / "audio_encoder"), cfg.audio.context) \
            if (path / "audio_encoder").is_dir() else pt.load_wav2vec2(pre.wav2vec2, cfg.audio.context)
        model = cls(cfg, vae=vae, audio_encoder=audio_encoder, **loaded)
        _own_memory(model)
        if weights is None:
            weights = "ema" if (path / EMA_FILE).is_file() else "raw"
        if weights == "ema":
            if not (path / EMA_FILE).is_file():
                raise FileNotFoundError(f"checkpoint {path} has no EMA weights ({EMA_FILE}; training "
                                        f"writes it when train.ema.enabled is true); use weights='raw'")
            model.load_weights(load_file(str(path / EMA_FILE)))
        model.weights = weights
        meta = json.loads((path / "meta.json").read_text()) if (path / "meta.json").is_file() else {}
        # Union-to-single face box ratio measured on the training set (emo.face_mask).
        model.face_mask_scale = meta.get("face_mask_scale")
        model.set_stage(int(meta.get("stage", 3)))
        return model.eval()

    def load_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy {parameter name: tensor} (e.g. the EMA weights) over this model's parameters."""
        params = dict(self.named_parameters())
        unknown = sorted(set(tensors) - set(params))
        if unknown:
            raise ValueError(f"weights for parameters this model does not have: {unknown[:3]}")
        with torch.no_grad():
            for name, t in tensors.items():
                if t.shape != params[name].shape:
                    raise ValueError(f"{name}: weights of shape {tuple(t.shape)}, parameter {tuple(params[name].shape)}")
                params[name].copy_(t.to(params[name].dtype))

    def save_checkpoint(self, path: str | os.PathLike, meta: dict | None = None,
                        ema_weights: dict[str, torch.Tensor] | None = None) -> Path:
        """Write the five trained networks, the VAE / wav2vec2 when they are not named pretrained
        files, config.yaml, ema.safetensors when `ema_weights` ({parameter name: EMA value}) is
        given, and meta.json last. Network folders are written in a hidden folder beside and moved
        into place with `emo.fileio.replace_folder` (an old one is deleted only after the new one
        is in place); files go through `emo.fileio.atomic_write`. Other files in `path` are kept."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        folders = {name: getattr(self, name) for name in TRAINED}
        if not self.cfg.model.pretrained.vae:
            folders["vae"] = self.vae
        if not self.cfg.model.pretrained.wav2vec2:
            folders["audio_encoder"] = self.audio_encoder
        tmp = temp_sibling(path / "entries")
        tmp.mkdir()
        try:
            for name, net in folders.items():
                if name == "audio_encoder":
                    net.save_pretrained(tmp / name)
                else:
                    net.save_pretrained(tmp / name, safe_serialization=True)
                replace_folder(tmp / name, path / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        # Pretrained paths are stored relative to the checkpoint (generation from any directory).
        stored = dataclasses.replace(self.cfg, model=dataclasses.replace(
            self.cfg.model, pretrained=pt.relative_to(self.cfg.model.pretrained, path)))
        stored.to_yaml(path / "config.yaml")                   # atomic_write
        if ema_weights:
            plain = {k: v.detach().cpu().contiguous() for k, v in ema_weights.items()}
            atomic_write(path / EMA_FILE, lambda t: save_file(plain, str(t)))
        else:
            (path / EMA_FILE).unlink(missing_ok=True)          # stale EMA of an earlier save
        info = {"stage": self.stage, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "ema": bool(ema_weights), **(meta or {})}
        atomic_write(path / "meta.json", json.dumps(info, indent=2))
        return path

    def parameter_groups(self) -> dict[str, str]:
        """Parameter name -> stage group (the groups `STAGES` names), from the networks' structure:
        the backbone's temporal modules, audio-attention layers and speed layers (the speed
        cross-attention inside the temporal modules), the ReferenceNet's unused layers."""
        groups, by_id = {}, {}
        for top, default in _DEFAULT_GROUP.items():
            for n, p in getattr(self, top).named_parameters():
                groups[f"{top}.{n}"] = default
                by_id[id(p)] = f"{top}.{n}"
        bb = self.backbone
        for module in bb.temporal_modules():
            for p in module.parameters():
                groups[by_id[id(p)]] = "temporal"
        for module in bb.audio_attention_layers():
            for p in module.parameters():
                groups[by_id[id(p)]] = "audio_layers"
        for p in bb.speed_parameters():
            groups[by_id[id(p)]] = "speed"
        for p in self.reference_net.unused_parameters():   # never reach the backbone
            groups[by_id[id(p)]] = "unused"
        return groups

    def set_stage(self, stage: int) -> None:
        """Switch which layers run and which learn (requires_grad), as `STAGES[stage]` says."""
        if stage not in STAGES:
            raise ValueError(f"stage must be 1, 2 or 3, got {stage}")
        policy = STAGES[stage]
        self.stage = stage
        self.active = dict(temporal=policy.temporal, audio=policy.audio, speed=policy.speed)
        groups = self.parameter_groups()
        for name, p in self.named_parameters():
            p.requires_grad_(groups[name] in policy.trains)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for n in TRAINED for p in getattr(self, n).parameters() if p.requires_grad]

    def train(self, mode: bool = True):
        super().train(mode)
        self.vae.eval()
        self.audio_encoder.eval()
        return self

    def parameter_counts(self) -> dict[str, int]:
        counts = {n: sum(p.numel() for p in getattr(self, n).parameters()) for n in TRAINED + ("vae", "audio_encoder")}
        bb = self.backbone
        counts["backbone.temporal"] = sum(p.numel() for m in bb.temporal_modules() for p in m.parameters())
        counts["backbone.speed_attention"] = sum(p.numel() for p in bb.speed_parameters())
        counts["backbone.audio_attention"] = sum(p.numel() for m in bb.audio_attention_layers() for p in m.parameters())
        return counts

    # -- the calls training and inference make -------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.backbone.parameters()).dtype

    @torch.no_grad()
    def encode_frames(self, pixels: torch.Tensor, sample: bool = False, chunk: int = 16,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, F, 3, H, W) in [-1, 1] -> (B, F, C, H/8, W/8) latents times the VAE scaling factor."""
        if pixels.ndim == 4:
            return self.encode_frames(pixels[:, None], sample, chunk, generator)[:, 0]
        b, f = pixels.shape[:2]
        flat = pixels.reshape(b * f, *pixels.shape[2:]).to(self.vae.device, self.vae.dtype)
        outs = []
        for x in flat.split(chunk):
            dist = self.vae.encode(x).latent_dist
            outs.append(dist.sample(generator) if sample else dist.mode())
        lat = torch.cat(outs) * self.vae.config.scaling_factor
        return lat.reshape(b, f, *lat.shape[1:])

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, chunk: int = 8) -> torch.Tensor:
        """(B, F, C, h, w) -> (B, F, 3, 8h, 8w) in [-1, 1]."""
        b, f = latents.shape[:2]
        flat = latents.reshape(b * f, *latents.shape[2:]).to(self.vae.device, self.vae.dtype)
        flat = flat / self.vae.config.scaling_factor
        pix = torch.cat([self.vae.decode(x).sample for x in flat.split(chunk)]).clamp(-1, 1)
        return pix.reshape(b, f, *pix.shape[1:])

    def audio_features(self, waveform_16k: np.ndarray | torch.Tensor, n_frames: int, fps: float) -> torch.Tensor:
        """(n_frames, 2m+1, D_audio), frozen wav2vec2; compute once per clip or per whole audio."""
        return self.audio_encoder(waveform_16k, n_frames, fps)

    def reference_bank(self, ref_latents: torch.Tensor, motion_latents: torch.Tensor | None = None) -> ReferenceBank:
        """ONE ReferenceNet pass for a clip: reference tokens + motion-frame features (zeros if None)."""
        points = self.motion_points if self.active["temporal"] else None
        return self.reference_net(ref_latents.to(self.dtype),
                                  None if motion_latents is None else motion_latents.to(self.dtype),
                                  motion_points=points, num_motion_frames=self.cfg.model.num_motion_frames)

    def predict_noise(self, noisy: torch.Tensor, timesteps: torch.Tensor, bank: ReferenceBank | None,
                      audio: torch.Tensor | None = None, face_mask: torch.Tensor | None = None,
                      speed: torch.Tensor | None = None, audio_mask: torch.Tensor | None = None) -> torch.Tensor:
        """noisy (B, F, C, h, w); timesteps (B,); audio (B, F, 2m+1, D_audio) or None (dropped);
        face_mask (B, 1, H, W) in {0, 1} or None; speed (B, F) deg/frame or None -> (B, F, C, h, w):
        the noise, or v where cfg.model.prediction_type is "v_prediction" (the schedulers built from
        noise_scheduler_config read it either way). audio_mask (B,) bool: the samples whose audio is
        used (None: all; guidance batches both)."""
        if noisy.ndim != 5:
            raise ValueError(f"noisy latents must be (B, F, C, h, w), got {tuple(noisy.shape)}")
        x = noisy.to(self.dtype)
        if face_mask is not None:
            loc = self.face_locator(face_mask.to(self.device))
            if loc.shape[-2:] != x.shape[-2:]:
                raise ValueError(f"face mask {tuple(face_mask.shape)} does not map onto latents {tuple(x.shape)}")
            x = x + loc[:, None]
        act = self.active
        audio_tokens = self.audio_projection(audio.to(self.device)) if (audio is not None and act["audio"]) else None
        speed_tokens = self.speed_encoder(speed.to(self.device)) if (speed is not None and act["speed"]) else None
        return self.backbone(x, timesteps.to(self.device), bank=bank, audio_tokens=audio_tokens,
                             speed_tokens=speed_tokens, temporal=act["temporal"], audio=act["audio"],
                             speed=act["speed"], audio_mask=audio_mask)
