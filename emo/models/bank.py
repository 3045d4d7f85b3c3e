"""What flows between the ReferenceNet and the backbone, and the per-call context the processors read.

The ReferenceNet runs ONCE per clip and fills a ReferenceBank; every denoising step of that clip
reuses it. The backbone's attention processors and temporal hooks cannot receive extra arguments
through UNetMotionModel.forward (its motion modules get no kwargs), so the backbone puts the
conditioning of the current call in a ForwardContext that they all share by reference.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ReferenceBank:
    """ReferenceNet features for one clip.

    tokens: attn1 layer name -> (B, L, C) normalised tokens of the reference image at that layer
            (None when the reference is dropped, e.g. the unconditional pass of guidance).
    motion: temporal module name -> (B, n, C, h, w) features of the n motion frames at the
            position of that temporal module (zeros for the first clip); None when temporal layers
            are off (stage 1).
    reference_mask: (B,) bool, which samples attend to their reference tokens (None: all). Lets
            the conditional and unconditional passes of guidance run as one batch.
    """
    tokens: dict[str, torch.Tensor] | None = None
    motion: dict[str, torch.Tensor] | None = None
    reference_mask: torch.Tensor | None = None

    def without_reference(self) -> "ReferenceBank":
        """The same motion frames, no reference image (classifier-free guidance's unconditional pass)."""
        return ReferenceBank(tokens=None, motion=self.motion)

    def with_unconditional(self) -> "ReferenceBank":
        """A bank for a batch of twice the size: these samples as they are, then the same samples
        without their reference (`without_reference`), selected per sample by `reference_mask`."""
        double = lambda d: None if d is None else {k: torch.cat([v, v]) for k, v in d.items()}  # noqa: E731
        b = self.batch_size
        mask = torch.arange(2 * b) < b
        if self.reference_mask is not None:
            mask = torch.cat([self.reference_mask.cpu(), torch.zeros(b, dtype=torch.bool)])
        return ReferenceBank(tokens=double(self.tokens), motion=double(self.motion),
                             reference_mask=mask if self.tokens else None)

    def detach(self) -> "ReferenceBank":
        det = lambda d: None if d is None else {k: v.detach() for k, v in d.items()}  # noqa: E731
        return ReferenceBank(tokens=det(self.tokens), motion=det(self.motion), reference_mask=self.reference_mask)

    @property
    def batch_size(self) -> int | None:
        for d in (self.tokens, self.motion):
            if d:
                return next(iter(d.values())).shape[0]
        return None


@dataclass
class ForwardContext:
    """Conditioning of the current backbone call. Kept after the call (not cleared) so that
    gradient-checkpoint recomputation during backward sees the same values."""
    reference: dict[str, torch.Tensor] | None = None   # ReferenceBank.tokens
    reference_mask: torch.Tensor | None = None         # (B,) bool: samples that see the reference (None: all)
    motion: dict[str, torch.Tensor] | None = None      # ReferenceBank.motion
    audio_tokens: torch.Tensor | None = None           # (B*F, T_a, D) per-frame audio tokens
    audio_mask: torch.Tensor | None = None             # (B,) bool: samples that hear the audio (None: all)
    speed_tokens: torch.Tensor | None = None           # (B, F, D_s) one speed token per frame
    temporal_enabled: bool = True
    audio_enabled: bool = True
    speed_enabled: bool = True

    def __deepcopy__(self, memo):
        # A copied model gets its own, empty context (the tensors of the last call may be
        # non-leaf and are not part of the model); processors sharing it keep sharing the copy.
        return ForwardContext()


@dataclass
class RecordContext:
    """Filled by the ReferenceNet's recording processors and hooks during its single pass."""
    n_ref: int = 0                                      # first n_ref batch items are reference images
    tokens: dict[str, torch.Tensor] = field(default_factory=dict)

    def __deepcopy__(self, memo):
        return RecordContext()
