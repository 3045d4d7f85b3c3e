"""The optimizer a stage trains with: AdamW (torch), or bitsandbytes' 8-bit AdamW, which keeps its
two moment estimates in one byte each (2 bytes per trained parameter instead of 8: some 13 GB less
for stage 2 of sd15; see `python -m emo plan`). bitsandbytes runs on CUDA GPUs only."""
from __future__ import annotations

import torch


class OptimizerUnavailable(RuntimeError):
    pass


def make_optimizer(name: str, params, **kwargs) -> torch.optim.Optimizer:
    """name: "adamw" | "adamw8bit"; kwargs: lr, betas, eps, weight_decay."""
    if name == "adamw":
        return torch.optim.AdamW(params, **kwargs)
    if name == "adamw8bit":
        # Built before accelerate moves the model; bitsandbytes allocates its state at the first step.
        if not torch.cuda.is_available():
            raise OptimizerUnavailable("train.optimizer: adamw8bit (bitsandbytes) runs on CUDA GPUs only and "
                                       "no CUDA device is available here; use adamw")
        try:
            import bitsandbytes as bnb
        except ImportError as exc:
            raise OptimizerUnavailable(f"train.optimizer: adamw8bit needs bitsandbytes ({exc}); "
                                       "install it with `pip install bitsandbytes` on the GPU machine, "
                                       "or use adamw") from None
        return bnb.optim.AdamW8bit(params, **kwargs)
    raise ValueError(f"unknown optimizer {name!r} (adamw, adamw8bit)")
