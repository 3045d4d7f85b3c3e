"""ReferenceNet: SD-1.5's 2D UNet (no temporal layers) that encodes the reference image and the
motion frames once per clip.

From the reference image it keeps every self-attention's input tokens (for the backbone's
reference-attention); from the motion frames it keeps the features at each temporal module's place
(for the backbone's temporal modules). Its text cross-attention is removed (SkipAttnProcessor).
It runs at timestep 0 on clean latents.
"""
from __future__ import annotations

import torch
from diffusers import ModelMixin, UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config

from .attention_processors import RecordAttnProcessor, SkipAttnProcessor
from .bank import RecordContext, ReferenceBank


class ReferenceNet(ModelMixin, ConfigMixin):

    @register_to_config
    def __init__(self, unet_config: dict):
        super().__init__()
        self.unet = UNet2DConditionModel.from_config(unet_config)
        self.record = RecordContext()
        procs = {}
        for name in self.unet.attn_processors:
            layer = name[: -len(".processor")]
            procs[name] = RecordAttnProcessor(layer, self.record) if layer.endswith("attn1") else SkipAttnProcessor()
        self.unet.set_attn_processor(procs)

    def unused_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters whose output never reaches a feature EMO uses (text attention, output head)."""
        names = ("attn2.", "conv_norm_out.", "conv_out.")
        return [p for n, p in self.unet.named_parameters() if any(s in n for s in names)]

    def forward(self, ref_latents: torch.Tensor, motion_latents: torch.Tensor | None = None,
                motion_points: dict[str, str] | None = None, num_motion_frames: int = 0) -> ReferenceBank:
        """ref_latents (B, C, h, w); motion_latents (B, n, C, h, w) or None (first clip: zero features).

        motion_points: temporal module name -> the module of this UNet whose output sits at its
        place; None or {} -> no motion features (stage 1).
        """
        b = ref_latents.shape[0]
        if motion_latents is not None and motion_latents.shape[0] != b:
            raise ValueError(f"motion latents batch {motion_latents.shape[0]} != reference batch {b}")
        want_motion = bool(motion_points)
        x = ref_latents
        if want_motion and motion_latents is not None:
            n = motion_latents.shape[1]
            x = torch.cat([ref_latents, motion_latents.reshape(b * n, *motion_latents.shape[2:])], 0)
        else:
            n = num_motion_frames
        captured: dict[str, torch.Tensor] = {}
        handles = []
        for mname, point in (motion_points or {}).items():
            def hook(module, args, output, key=mname):
                captured[key] = output[0] if isinstance(output, tuple) else output
            handles.append(self.unet.get_submodule(point).register_forward_hook(hook))
        self.record.n_ref, self.record.tokens = b, {}
        try:
            t = torch.zeros(x.shape[0], device=x.device, dtype=torch.long)
            dummy = x.new_zeros(x.shape[0], 1, self.unet.config.cross_attention_dim)
            self.unet(x, t, encoder_hidden_states=dummy, return_dict=False)
        finally:
            for h in handles:
                h.remove()
            tokens, self.record.tokens, self.record.n_ref = self.record.tokens, {}, 0
        motion = None
        if want_motion:
            motion = {}
            for key, feat in captured.items():
                if motion_latents is not None:
                    motion[key] = feat[b:].reshape(b, n, *feat.shape[1:])
                else:   # first clip: the motion frames are zero maps
                    motion[key] = feat.new_zeros(b, n, *feat.shape[1:])
        return ReferenceBank(tokens=tokens, motion=motion)
