"""Face locator: a few strided convolutions encoding the face-region mask into latent space; the
result is added to every frame's noisy latents. The last layer starts at zero (a no-op)."""
from __future__ import annotations

import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn


class FaceLocator(ModelMixin, ConfigMixin):

    @register_to_config
    def __init__(self, channels: tuple[int, ...] = (16, 32, 64), latent_channels: int = 4):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, channels[0], 3, padding=1), nn.SiLU()]
        # Three stride-2 convolutions take the image-space mask to the VAE's 1/8 resolution.
        widths = list(channels) + [channels[-1]] * max(0, 4 - len(channels))
        for i in range(3):
            layers += [nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(widths[3], latent_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """mask (B, 1, H, W) in {0, 1} -> (B, latent_channels, H/8, W/8)."""
        if mask.ndim != 4 or mask.shape[1] != 1:
            raise ValueError(f"face mask must be (B, 1, H, W), got {tuple(mask.shape)}")
        return self.out(self.body(mask.to(self.out.weight.dtype)))


def box_mask(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 4) boxes x0 y0 x1 y1 in [0, 1] of the crop -> (B, 1, size, size) masks in {0, 1}."""
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    grid = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    x_in = (grid[None] >= boxes[:, 0:1]) & (grid[None] <= boxes[:, 2:3])   # (B, W)
    y_in = (grid[None] >= boxes[:, 1:2]) & (grid[None] <= boxes[:, 3:4])   # (B, H)
    return (y_in[:, :, None] & x_in[:, None, :]).float()[:, None]
