"""What each of the paper's three training stages trains: the policy is defined once, in
`emo.models.emo_model.STAGES` (which layers run, which parameter groups learn); here it is applied
through EMOModel.set_stage and checked parameter by parameter.

Stage 1 (image pre-training): backbone (spatial layers), ReferenceNet, face locator. The backbone
  sees one frame; temporal modules, audio layers and speed layers are not used.
Stage 2 (video training): stage 1's modules plus the temporal modules and the audio layers
  (audio-attention in the backbone and the audio projection). Reference and audio conditions are
  dropped at random for classifier-free guidance.
Stage 3 (speed training): ONLY the temporal modules and the speed layers; everything else,
  audio layers included, is frozen.
The VAE and wav2vec2 are frozen in every stage, and so are the ReferenceNet layers that never
reach the backbone (group "unused": its text attention and output head).
Groups are whole modules, as in the paper; a few tensors of a trained module get no gradient in a
given stage (in stage 1: norm2 before the disabled audio-attention, the ReferenceNet's layers after
its last recorded attention). They keep grad None, so AdamW leaves them untouched (no decay either).
"""
from __future__ import annotations

from collections import Counter

import torch

from emo.models.emo_model import STAGES

# Views of the one stage policy (emo.models.emo_model.STAGES), by stage.
STAGE_GROUPS = {s: set(p.trains) for s, p in STAGES.items()}     # parameter groups trained
USES_AUDIO = {s: p.audio for s, p in STAGES.items()}              # the forward pass uses audio
USES_SPEED = {s: p.speed for s, p in STAGES.items()}              # ... the speed layers
USES_MOTION = {s: p.temporal for s, p in STAGES.items()}          # ... motion frames (temporal modules)


def group_map(model: torch.nn.Module) -> dict[str, str]:
    """Parameter name -> stage group (`EMOModel.parameter_groups`)."""
    return model.parameter_groups()


def trainable_groups(model: torch.nn.Module) -> Counter:
    """Number of trainable parameter elements per group."""
    groups, out = group_map(model), Counter()
    for name, p in model.named_parameters():
        if p.requires_grad:
            out[groups[name]] += p.numel()
    return out


def all_groups(model: torch.nn.Module) -> Counter:
    groups, out = group_map(model), Counter()
    for name, p in model.named_parameters():
        out[groups[name]] += p.numel()
    return out


def verify_stage(model: torch.nn.Module, stage: int) -> None:
    """Raise if the trainable parameters do not match the paper's stage exactly."""
    want = STAGE_GROUPS[stage]
    have = all_groups(model)
    trainable = trainable_groups(model)
    problems = []
    for group, count in have.items():
        n_train = trainable.get(group, 0)
        if group in want and n_train != count:
            problems.append(f"{group}: {count - n_train} of {count} parameters frozen, should train")
        if group not in want and n_train:
            problems.append(f"{group}: {n_train} parameters trainable, should be frozen")
    missing = [g for g in want if not have.get(g)]
    if missing:
        problems.append(f"no parameters found for {missing}")
    if problems:
        raise AssertionError(f"stage {stage} trains the wrong parameters: " + "; ".join(problems))


def apply_stage(model, stage: int) -> list[tuple[str, torch.nn.Parameter]]:
    """Set the stage on the model, check it, and return the trainable (name, parameter) pairs in
    a stable order (the optimizer's order, which the saved optimizer state refers to by name)."""
    if stage not in STAGES:
        raise ValueError(f"stage must be 1, 2 or 3, got {stage}")
    model.set_stage(stage)            # also switches which layers run
    verify_stage(model, stage)
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def stage_mismatches(model: torch.nn.Module, stage: int) -> list[str]:
    """Parameters whose requires_grad differs from the stage's groups."""
    groups = group_map(model)
    return [n for n, p in model.named_parameters() if p.requires_grad != (groups[n] in STAGE_GROUPS[stage])]


def stage_summary(model: torch.nn.Module) -> dict[str, int]:
    """{group: trainable elements} plus the total: for logs and the report."""
    groups = trainable_groups(model)
    return {**dict(sorted(groups.items())), "total": sum(groups.values())}
