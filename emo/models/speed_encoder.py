"""Speed layers: head rotation speed per frame -> tokens the temporal layers cross-attend.

Each speed w (degrees per frame) is spread over d buckets with centres c_i and radii r_i as
s_i = tanh((w - c_i) / r_i * 3) (a soft thermometer code: +1 well above c_i, -1 well below; the
radii make neighbouring ramps overlap, so every speed excites at least two buckets);
the codes of the m frames on each side are stacked with the frame's own (edges replicated), and an
MLP maps the (2m+1) * d values to one token per frame, to which a sinusoidal frame-position code
is added so the temporal layers can tell frames apart.
"""
from __future__ import annotations

import math

import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn

from .audio_encoder import stack_neighbours


def sinusoidal(positions: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device) / max(half, 1))
    ang = positions.float()[..., None] * freqs
    emb = torch.cat([ang.sin(), ang.cos()], -1)
    return emb if dim % 2 == 0 else torch.cat([emb, emb.new_zeros(*emb.shape[:-1], 1)], -1)


class SpeedEncoder(ModelMixin, ConfigMixin):

    @register_to_config
    # Default radii: 2.5 x the larger gap to a neighbouring centre (see emo.config.SpeedConfig).
    def __init__(self, centres: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0), radii: tuple[float, ...] = (1.25, 1.25, 2.5, 2.5),
                 context: int = 2, hidden: int = 64, embed_dim: int = 32):
        super().__init__()
        if len(centres) != len(radii):
            raise ValueError("centres and radii must have the same length")
        self.register_buffer("bucket_centres", torch.tensor(centres, dtype=torch.float32), persistent=False)
        self.register_buffer("bucket_radii", torch.tensor(radii, dtype=torch.float32), persistent=False)
        self.n_context = context
        self.mlp = nn.Sequential(nn.Linear((2 * context + 1) * len(centres), hidden), nn.SiLU(),
                                 nn.Linear(hidden, embed_dim))

    def buckets(self, speed: torch.Tensor) -> torch.Tensor:
        """(B, F) deg/frame -> (B, F, d)."""
        return torch.tanh((speed[..., None].float() - self.bucket_centres) / self.bucket_radii * 3.0)

    def forward(self, speed: torch.Tensor) -> torch.Tensor:
        """(B, F) rotation speed in degrees per frame -> (B, F, embed_dim)."""
        if speed.ndim != 2:
            raise ValueError(f"speed must be (B, F), got {tuple(speed.shape)}")
        codes = stack_neighbours(self.buckets(speed), self.n_context, dim=1)   # (B, F, 2m+1, d)
        tokens = self.mlp(codes.flatten(2).to(self.mlp[0].weight.dtype))
        pos = sinusoidal(torch.arange(speed.shape[1], device=speed.device), tokens.shape[-1])
        return tokens + pos.to(tokens.dtype)
