"""Random colour transforms of training frames (issue 12).

One transform: the RGB channels permuted, then each given a gain and an offset, on frames in
[-1, 1]. The VAE fit (`vae_fit.py`) draws one per frame, so the small autoencoder learns every
colour; the training dataset (`dataset.py`, `train.joint_colour_augment_prob`) draws ONE per sample
and applies it to the sample's reference, target and motion frames alike, so a frame's colours can
be known only from its reference, never from which training identity it is.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

GAIN_LOW, GAIN_SPAN = 0.6, 0.8          # per channel gain in [0.6, 1.4], on values in [-1, 1]
OFFSET_LOW, OFFSET_SPAN = -0.4, 0.8      # per channel offset in [-0.4, 0.4] (0.4 = 51 grey levels)


@dataclass(frozen=True)
class ColourTransform:
    perm: tuple[int, int, int]        # output channel c takes input channel perm[c]
    gain: tuple[float, float, float]
    offset: tuple[float, float, float]

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "ColourTransform":
        perm = rng.permutation(3)
        gain = GAIN_LOW + GAIN_SPAN * rng.random(3)
        offset = OFFSET_LOW + OFFSET_SPAN * rng.random(3)
        return cls(tuple(int(p) for p in perm), tuple(float(v) for v in gain), tuple(float(v) for v in offset))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(..., 3, H, W) in [-1, 1] -> the same shape, transformed and clamped to [-1, 1]."""
        return apply_colour(x, torch.tensor(self.perm, device=x.device),
                            torch.tensor(self.gain, dtype=x.dtype, device=x.device),
                            torch.tensor(self.offset, dtype=x.dtype, device=x.device))


def apply_colour(x: torch.Tensor, perm: torch.Tensor, gain: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """x (..., 3, H, W) in [-1, 1]; perm (..., 3) the input channel of each output channel; gain and
    offset (..., 3) -> the transformed frames, clamped to [-1, 1] (one transform, or one per frame)."""
    x = torch.gather(x, -3, perm[..., None, None].expand_as(x).to(x.device))
    return (gain[..., None, None].to(x) * x + offset[..., None, None].to(x)).clamp(-1, 1)


def colour_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each frame of (N, 3, H, W) its own transform (channels permuted, random gain and offset).
    The VAE fit's: fitted on a few identities' colours alone, the small autoencoder decoded held-out
    frames to the training frames' average colour (issue 12); SD's VAE saw every colour."""
    perm = torch.stack([torch.randperm(3, generator=generator) for _ in range(len(x))])
    gain = GAIN_LOW + GAIN_SPAN * torch.rand(len(x), 3, generator=generator)
    offset = OFFSET_LOW + OFFSET_SPAN * torch.rand(len(x), 3, generator=generator)
    return apply_colour(x, perm, gain, offset)
