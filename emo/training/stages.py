"""What each of the paper's three training stages trains, applied through EMOModel.set_stage and
checked parameter by parameter.

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

# Parameter groups, by where a parameter lives (see `param_group`).
FROZEN_ALWAYS = {"vae", "audio_encoder"}
STAGE_GROUPS = {
    1: {"backbone_spatial", "reference_net", "face_locator"},
    2: {"backbone_spatial", "reference_net", "face_locator", "temporal", "audio_layers"},
    3: {"temporal", "speed"},
}
# Which conditions the forward pass uses in each stage.
USES_AUDIO = {1: False, 2: True, 3: True}
USES_SPEED = {1: False, 2: False, 3: True}
USES_MOTION = {1: False, 2: True, 3: True}

_TEMPORAL_MARKERS = ("temporal", "motion_module", "motion_modules")
_AUDIO_MARKERS = ("audio_attn", "audio_attention", "attn_audio", "audio_")


def param_group(name: str) -> str:
    """The stage group of a parameter, from its name alone (EMOModel.named_parameters() names)."""
    top, _, rest = name.partition(".")
    if top in ("vae", "audio_encoder"):
        return top
    if top in ("reference_net", "face_locator"):
        return top
    if top == "speed_encoder":
        return "speed"
    if top == "audio_projection":
        return "audio_layers"
    if top == "backbone":
        parts = rest.split(".")
        if any(m in p for p in parts for m in _TEMPORAL_MARKERS):
            # Cross-attention to the speed embedding lives inside the temporal modules.
            return "speed" if any("speed" in p for p in parts) else "temporal"
        if any(p.startswith(m) or p == m.rstrip("_") for p in parts for m in _AUDIO_MARKERS):
            return "audio_layers"
        return "backbone_spatial"
    return f"other:{top}"


def group_map(model: torch.nn.Module) -> dict[str, str]:
    """Parameter name -> stage group. Where the backbone describes its own structure
    (audio_attention_layers, temporal_modules, speed_parameters), that decides; otherwise the
    parameter's name does (`param_group`)."""
    groups = {name: param_group(name) for name, _ in model.named_parameters()}
    backbone = getattr(model, "backbone", None)
    if backbone is None or not hasattr(backbone, "audio_attention_layers"):
        return groups
    by_id = {id(p): f"backbone.{n}" for n, p in backbone.named_parameters()}
    for name in by_id.values():
        groups[name] = "backbone_spatial"
    for module in backbone.temporal_modules():
        for p in module.parameters():
            groups[by_id[id(p)]] = "temporal"
    for module in backbone.audio_attention_layers():
        for p in module.parameters():
            groups[by_id[id(p)]] = "audio_layers"
    for p in backbone.speed_parameters():
        groups[by_id[id(p)]] = "speed"
    ref = getattr(model, "reference_net", None)
    if ref is not None and hasattr(ref, "unused_parameters"):
        # Layers after the ReferenceNet's last recorded feature never reach the backbone.
        ref_ids = {id(p): f"reference_net.{n}" for n, p in ref.named_parameters()}
        for p in ref.unused_parameters():
            groups[ref_ids[id(p)]] = "unused"
    return groups


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
    if stage not in STAGE_GROUPS:
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
