"""Fit a VAE that has no pretrained weights (the tiny config's) before the three stages.

EMO freezes SD's pretrained VAE. A model built without one has a random, frozen autoencoder whose
decoder turns any latent into noise, so nothing the UNet learns could ever be seen in a generated
frame. This step trains such a VAE as an autoencoder on the training frames (reconstruction MSE
plus a small KL term, as for SD's VAE), then sets its latent scaling factor to 1 / std of the
latents, the rule SD used to pick 0.18215, and freezes it again. It runs only on a fresh run and
only when `train.vae_fit_steps` > 0 and the config names no pretrained VAE; the fitted VAE is
saved in every checkpoint, so a resumed run never refits it.
"""
from __future__ import annotations

import logging
import os

import torch

from .colour import colour_augment
from .config import DataConfig
from .dataset import ClipDataset

log = logging.getLogger(__name__)

KL_WEIGHT = 1e-6          # small, as in SD's autoencoder training: latents stay close to a Gaussian


def _batch(ds: ClipDataset, indices: torch.Tensor) -> torch.Tensor:
    """Single frames in [-1, 1]: one target frame and the reference of each sampled window."""
    frames = []
    for g in indices.tolist():
        item = ds[g]
        frames += [item["frames"][-1], item["reference"]]
    return torch.stack(frames)


def fit_vae(vae, dataset: str | os.PathLike, data: DataConfig, steps: int, lr: float = 1e-3,
            batch: int = 8, bank_windows: int = 96, seed: int = 0) -> dict:
    """Train `vae` in place for `steps` steps; return the first and last losses and the scaling factor.

    Frames are decoded once into a bank (2 per sampled window) and minibatches drawn from it:
    decoding video, not the small autoencoder, would otherwise dominate the time.
    """
    ds = ClipDataset(dataset, data, stage=1, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    device = next(vae.parameters()).device
    bank = _batch(ds, torch.randint(0, 1 << 30, (bank_windows,), generator=generator)).to(device)
    vae.train().requires_grad_(True)
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        x = colour_augment(bank[torch.randint(0, len(bank), (batch,), generator=generator)], generator)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        loss = torch.nn.functional.mse_loss(recon, x) + KL_WEIGHT * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        std = float(vae.encode(bank[:32]).latent_dist.mode().std())
    scaling = 1.0 / max(std, 1e-6)
    vae.register_to_config(scaling_factor=scaling)
    log.info("VAE fitted for %d steps: loss %.4f -> %.4f, latent scaling factor %.4f",
             steps, losses[0], losses[-1], scaling)
    return {"first_loss": losses[0], "last_loss": losses[-1], "scaling_factor": scaling}
