"""EMO's temporal modules: AnimateDiff motion modules (diffusers' UNetMotionModel layout) with
(1) the n motion frames concatenated before the current frames along time, (2) a speed
cross-attention (TemporalSpeedAttnProcessor), (3) an on/off switch for stage 1 (image training).

(1) and (3) are forward hooks on each AnimateDiffTransformer3D, so the modules keep their classes
and key names and load AnimateDiff weights unchanged.
"""
from __future__ import annotations

import torch
from torch import nn

from .bank import ForwardContext


def motion_module_names(unet_motion: nn.Module) -> list[str]:
    """Names such as 'down_blocks.0.motion_modules.1' in forward order of the UNet."""
    names = []
    for prefix, blocks in (("down_blocks", unet_motion.down_blocks), ("up_blocks", unet_motion.up_blocks)):
        for i, block in enumerate(blocks):
            names += [f"{prefix}.{i}.motion_modules.{j}" for j in range(len(block.motion_modules))]
    mid = getattr(unet_motion, "mid_block", None)
    if mid is not None and hasattr(mid, "motion_modules"):
        names += [f"mid_block.motion_modules.{j}" for j in range(len(mid.motion_modules))]
    return names


def reference_feature_name(motion_name: str, unet2d: nn.Module) -> str:
    """The module of a plain 2D UNet whose output has the place (and shape) of a temporal module's
    input: in every Motion block a temporal module follows the j-th attention if the block has
    attentions, else the j-th resnet."""
    prefix, _, j = motion_name.rpartition(".motion_modules.")
    block = unet2d.get_submodule(prefix)
    if getattr(block, "attentions", None) is not None and len(block.attentions) > int(j):
        return f"{prefix}.attentions.{j}"
    return f"{prefix}.resnets.{j}"


def zero_init_temporal_outputs(unet_motion: nn.Module) -> None:
    """Fresh temporal modules start as identities (AnimateDiff's zero_initialize): proj_out = 0."""
    for name in motion_module_names(unet_motion):
        proj = unet_motion.get_submodule(name).proj_out
        nn.init.zeros_(proj.weight)
        nn.init.zeros_(proj.bias)


class MotionFrameHooks:
    """Forward hooks on one temporal module: concatenate the motion frames' features before the
    current frames, run the module on n + F frames, keep the last F. Off (stage 1): identity, and
    the module is not run at all (its forward is wrapped), since its output would be thrown away."""

    def __init__(self, name: str, module: nn.Module, ctx: ForwardContext):
        self.name, self.ctx = name, ctx
        self._split: tuple[int, int, int] | None = None
        self.handles = [module.register_forward_pre_hook(self.before, with_kwargs=True),
                        module.register_forward_hook(self.after, with_kwargs=True)]
        module._emo_ctx = ctx
        module.__class__ = _skippable(type(module))


    def before(self, module, args, kwargs):
        self._split = None
        feats = self.ctx.motion.get(self.name) if (self.ctx.motion and self.ctx.temporal_enabled) else None
        if feats is None:
            return None
        # UNetMotionModel calls motion modules as m(h, num_frames=F) or m(h, None, None, None, F, None).
        positional = len(args) > 4
        frames = args[4] if positional else kwargs.get("num_frames", 1)
        hs = args[0]
        b = hs.shape[0] // frames
        n = feats.shape[1]
        if feats.shape[0] != b or feats.shape[2:] != hs.shape[1:]:
            raise ValueError(f"motion features {tuple(feats.shape)} do not fit {self.name} input "
                             f"{tuple(hs.shape)} with {frames} frames")
        cat = torch.cat([feats.to(hs.dtype), hs.reshape(b, frames, *hs.shape[1:])], 1)
        cat = cat.reshape(b * (n + frames), *hs.shape[1:])
        self._split = (b, n, frames)
        if positional:
            return (cat, *args[1:4], n + frames, *args[5:]), kwargs
        return (cat, *args[1:]), {**kwargs, "num_frames": n + frames}

    def after(self, module, args, kwargs, output):
        if not self.ctx.temporal_enabled:
            return args[0]          # module switched off: pass the input through
        if self._split is None:
            return None
        b, n, frames = self._split
        self._split = None
        out = output.reshape(b, n + frames, *output.shape[1:])[:, n:]
        return out.reshape(b * frames, *output.shape[1:])

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


_SKIPPABLE: dict[type, type] = {}


def _skippable(cls: type) -> type:
    """`cls` with a forward that returns its input unchanged while the temporal layers are off (a
    subclass rather than a wrapped bound method, so copies of the model keep their own context)."""
    if cls in _SKIPPABLE.values():
        return cls
    if cls not in _SKIPPABLE:
        def forward(self, *args, **kwargs):
            if not self._emo_ctx.temporal_enabled:
                return args[0] if args else kwargs["hidden_states"]
            return cls.forward(self, *args, **kwargs)
        _SKIPPABLE[cls] = type(cls.__name__, (cls,), {"forward": forward, "__module__": __name__,
                                                       "__qualname__": f"_skippable.{cls.__name__}"})
    return _SKIPPABLE[cls]


def load_motion_state_dict(unet_motion: nn.Module, state_dict: dict[str, torch.Tensor]) -> int:
    """Load AnimateDiff motion-module weights (diffusers MotionAdapter key names, e.g.
    'down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q.weight') into the temporal
    modules. Every adapter key must land; returns how many tensors were loaded."""
    motion = {k: v for k, v in state_dict.items() if ".motion_modules." in k}
    if not motion:
        raise ValueError("no motion-module weights found (expected keys containing '.motion_modules.')")
    own = unet_motion.state_dict()
    unknown = [k for k in motion if k not in own]
    wrong = [k for k in motion if k in own and own[k].shape != motion[k].shape]
    if unknown or wrong:
        raise ValueError(f"motion-module weights do not fit this backbone: {len(unknown)} unknown keys "
                         f"(e.g. {unknown[:2]}), {len(wrong)} shape mismatches (e.g. {wrong[:2]})")
    unet_motion.load_state_dict(motion, strict=False)
    return len(motion)
