"""Gradient checkpointing for EMO's networks, the temporal modules included.

diffusers' `enable_gradient_checkpointing` covers the UNets' resnets and attention transformers,
but its UNetMotionModel down and up blocks call their motion modules without checkpointing (only
the mid block checkpoints them); with 16 frames those modules hold a large share of stage 2's
activations. `enable_checkpointing` switches on both.
"""
from __future__ import annotations

import torch


def checkpoint_motion_modules(unet_motion, checkpoint_func) -> int:
    """Gradient checkpointing for the temporal (motion) modules that diffusers' down and up blocks
    run without it (only its mid block checkpoints them): each module's forward is wrapped; its
    motion-frame hooks stay outside, so the recomputation sees the same inputs."""
    from emo.models.temporal import motion_module_names
    n = 0
    for name in motion_module_names(unet_motion):
        if name.startswith("mid_block."):        # diffusers checkpoints the mid block's already
            continue
        module = unet_motion.get_submodule(name)
        module._emo_checkpoint_func = checkpoint_func    # a second call replaces the function
        n += 1
        if getattr(module, "_emo_checkpointed", False):
            continue
        forward = module.forward

        def wrapped(*args, _forward=forward, _module=module, **kwargs):
            if torch.is_grad_enabled():
                return _module._emo_checkpoint_func(lambda *a: _forward(*a, **kwargs), *args)
            return _forward(*args, **kwargs)
        module.forward, module._emo_checkpointed = wrapped, True
    return n


def default_checkpoint_func(function, *args):
    return torch.utils.checkpoint.checkpoint(function, *args, use_reentrant=False)


def enable_checkpointing(model, checkpoint_func=None) -> int:
    """diffusers' gradient checkpointing on every model that supports it, plus the temporal
    modules (see checkpoint_motion_modules). Returns how many models/modules were switched."""
    n = 0
    for module in model.modules():
        if module is not model and getattr(module, "_supports_gradient_checkpointing", False):
            if checkpoint_func is None:
                module.enable_gradient_checkpointing()
            else:
                module.enable_gradient_checkpointing(
                    gradient_checkpointing_func=lambda m, *a: checkpoint_func(m.__call__, *a))
            n += 1
    backbone = getattr(model, "backbone", None)
    if backbone is not None:
        n += checkpoint_motion_modules(backbone.unet, checkpoint_func or default_checkpoint_func)
    return n
