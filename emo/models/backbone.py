"""The EMO backbone: SD-1.5's UNet denoising F frames at once (diffusers UNetMotionModel), with
reference-attention, audio-attention, temporal modules with motion frames, and speed attention.

Identity at initialisation (tested): with no ReferenceBank, whatever the audio/speed, and with
fresh temporal modules, the backbone's prediction for each frame equals that of the plain
UNet2DConditionModel it was built from with its text cross-attention (attn2) removed, i.e. with
SkipAttnProcessor on every attn2 (`plain_unet_reference`). This holds because attn2's output
projection (now audio-attention) starts at zero, temporal proj_out starts at zero and the speed
branch's output starts at zero.
"""
from __future__ import annotations

import torch
from diffusers import ModelMixin, UNet2DConditionModel, UNetMotionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn

from .attention_processors import (AudioAttnProcessor, ReferenceAttnProcessor, SkipAttnProcessor,
                                   TemporalSpeedAttnProcessor)
from .bank import ForwardContext, ReferenceBank
from .temporal import MotionFrameHooks, motion_module_names, zero_init_temporal_outputs

_PRIVATE = ("_class_name", "_diffusers_version", "_name_or_path", "_use_default_values")


def motion_unet_config(unet2d_config: dict, motion_heads: int, max_seq: int, mid: bool) -> dict:
    """UNetMotionModel kwargs for a UNet2DConditionModel config (diffusers' from_unet2d rule)."""
    cfg = {k: v for k, v in dict(unet2d_config).items() if k not in _PRIVATE}
    cfg["down_block_types"] = ["CrossAttnDownBlockMotion" if "CrossAttn" in t else "DownBlockMotion"
                               for t in cfg["down_block_types"]]
    cfg["up_block_types"] = ["CrossAttnUpBlockMotion" if "CrossAttn" in t else "UpBlockMotion"
                             for t in cfg["up_block_types"]]
    if not cfg.get("num_attention_heads"):
        cfg["num_attention_heads"] = cfg.get("attention_head_dim")
    cfg.update(motion_num_attention_heads=motion_heads, motion_max_seq_length=max_seq,
               use_motion_mid_block=mid)
    expected, optional = UNetMotionModel._get_signature_keys(UNetMotionModel)
    return {k: v for k, v in cfg.items() if k in expected or k in optional}


class EMOBackbone(ModelMixin, ConfigMixin):
    """Owns a UNetMotionModel (`self.unet`) whose processors and hooks read a ForwardContext."""

    @register_to_config
    def __init__(self, unet_config: dict, speed_dim: int = 32):
        super().__init__()
        self.unet = UNetMotionModel.from_config(unet_config)
        self.ctx = ForwardContext()
        self.motion_names = motion_module_names(self.unet)
        processors = {}
        for name, proc in self.unet.attn_processors.items():
            layer = name[: -len(".processor")]
            if ".motion_modules." in name:
                if layer.endswith("attn1"):
                    attn = self.unet.get_submodule(layer)
                    processors[name] = TemporalSpeedAttnProcessor(self.ctx, attn.to_q.in_features, speed_dim,
                                                                  attn.heads)
                else:
                    processors[name] = proc
            elif layer.endswith("attn1"):
                processors[name] = ReferenceAttnProcessor(layer, self.ctx)
            else:
                processors[name] = AudioAttnProcessor(layer, self.ctx)
        self.unet.set_attn_processor(processors)
        self._hooks = [MotionFrameHooks(n, self.unet.get_submodule(n), self.ctx) for n in self.motion_names]
        # New layers start as no-ops.
        zero_init_temporal_outputs(self.unet)
        self.zero_audio_attention()

    # -- structure -----------------------------------------------------------------------------
    def audio_attention_layers(self) -> list[nn.Module]:
        return [m for n, m in self.unet.named_modules() if n.endswith("attn2") and ".motion_modules." not in n]

    def temporal_modules(self) -> list[nn.Module]:
        return [self.unet.get_submodule(n) for n in self.motion_names]

    def speed_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if ".processor." in n]

    def zero_audio_attention(self) -> None:
        """attn2 was SD's text cross-attention; as audio-attention its output projection restarts at 0."""
        for attn in self.audio_attention_layers():
            nn.init.zeros_(attn.to_out[0].weight)
            if attn.to_out[0].bias is not None:
                nn.init.zeros_(attn.to_out[0].bias)

    def load_sd_unet_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """SD-1.5 UNet2DConditionModel weights (its own key names) into the spatial layers; then the
        audio-attention output is re-zeroed (the text it was trained on is gone)."""
        missing, unexpected = self.unet.load_state_dict(state_dict, strict=False)
        if unexpected:
            raise ValueError(f"UNet weights with keys unknown to the backbone: {unexpected[:5]}")
        spatial_missing = [k for k in missing if ".motion_modules." not in k]
        if spatial_missing:
            raise ValueError(f"UNet weights lack backbone keys: {spatial_missing[:5]}")
        self.zero_audio_attention()

    # -- forward -------------------------------------------------------------------------------
    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, bank: ReferenceBank | None = None,
                audio_tokens: torch.Tensor | None = None, speed_tokens: torch.Tensor | None = None,
                temporal: bool = True, audio: bool = True, speed: bool = True,
                audio_mask: torch.Tensor | None = None) -> torch.Tensor:
        """noisy (B, F, C, h, w) -> predicted noise, or v (model.prediction_type), (B, F, C, h, w).

        audio_tokens (B, F, T_a, D) or None; speed_tokens (B, F, D_s) or None; audio_mask (B,) bool,
        the samples that hear their audio (None: all), as bank.reference_mask is for the reference.
        """
        b, f = noisy.shape[:2]
        ctx = self.ctx
        ctx.reference = bank.tokens if bank is not None else None
        ctx.reference_mask = bank.reference_mask if bank is not None else None
        ctx.audio_mask = audio_mask
        ctx.motion = bank.motion if (bank is not None and temporal) else None
        ctx.audio_tokens = audio_tokens.reshape(b * f, *audio_tokens.shape[2:]) if audio_tokens is not None else None
        ctx.speed_tokens = speed_tokens
        ctx.temporal_enabled, ctx.audio_enabled, ctx.speed_enabled = temporal, audio, speed
        # No text: the UNet's encoder_hidden_states slot gets one dummy token that no processor reads.
        dummy = noisy.new_zeros(b, 1, self.unet.config.cross_attention_dim)
        out = self.unet(noisy.permute(0, 2, 1, 3, 4), timesteps, encoder_hidden_states=dummy,
                        return_dict=False)[0]
        return out.permute(0, 2, 1, 3, 4)


def plain_unet_reference(unet2d: UNet2DConditionModel) -> UNet2DConditionModel:
    """The 2D UNet the identity property compares against: text cross-attention removed."""
    procs = {n: (SkipAttnProcessor() if n.endswith("attn2.processor") else p)
             for n, p in unet2d.attn_processors.items()}
    unet2d.set_attn_processor(procs)
    return unet2d
