"""The standard evaluation networks, rebuilt with the official files' own state-dict key names,
and loaders that take those files from the weights registry (eval.weights) strictly: a file that
does not fit raises, nothing is renamed by hand and nothing is left randomly initialised.

Loaded networks are cached per (name, weights folder) in the process: metrics share them.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from emo.media.syncnet import SyncNet, load_syncnet
from emo.weights import load_strict as _strict

from .arcface import IResNet
from .deep3d import ReconNet, unwrap_checkpoint
from .i3d import InceptionI3d
from .inception import FIDInceptionV3
from .lpips import LPIPSAlex
from .s3fd import S3FDNet

__all__ = ["FIDInceptionV3", "InceptionI3d", "SyncNet", "IResNet", "LPIPSAlex", "S3FDNet", "ReconNet", "load_network"]


def arcface_arch_of(state: dict) -> str:
    """iresnet50 or iresnet100, from the number of blocks in layer2 (4 vs 13)."""
    n = len({k.split(".")[1] for k in state if k.startswith("layer2.")})
    return {4: "iresnet50", 13: "iresnet100"}.get(n) or f"unknown ({n} blocks in layer2)"


@lru_cache(maxsize=None)
def load_network(name: str, weights_dir: str | None = None) -> torch.nn.Module:
    """name: inception_fid | i3d_fvd | syncnet | arcface | lpips | s3fd | deep3dfacerecon."""
    from eval.weights import load_state_dict

    if name == "inception_fid":
        return _strict(FIDInceptionV3(), load_state_dict("inception_fid", weights_dir), name)
    if name == "i3d_fvd":
        return _strict(InceptionI3d(), load_state_dict("i3d_fvd", weights_dir), name)
    if name == "syncnet":
        return load_syncnet(weights_dir)
    if name == "arcface":
        state = load_state_dict("arcface_r100", weights_dir)
        arch = arcface_arch_of(state)
        if arch.startswith("unknown"):
            raise ValueError(f"arcface backbone: {arch}; expected an insightface iresnet50/100 backbone.pth")
        return _strict(IResNet(arch), state, f"arcface {arch}")
    if name == "lpips":
        net = LPIPSAlex()
        net.load_official(load_state_dict("alexnet", weights_dir), load_state_dict("lpips_alex", weights_dir))
        return net.eval()
    if name == "s3fd":
        return _strict(S3FDNet(), load_state_dict("s3fd", weights_dir), name)
    if name == "deep3dfacerecon":
        return _strict(ReconNet(), unwrap_checkpoint(load_state_dict("deep3dfacerecon", weights_dir)), name)
    raise KeyError(f"unknown network {name!r}")
