"""Pretrained weights EMO starts from, each resolved from a local path (or a hub id already in the
local cache) with an error that names the missing file and where it comes from.

Nothing is downloaded here: fetch the files once (commands in SOURCES, `hf download` from
huggingface_hub) and point the config at them. A checkpoint stores these paths relative to itself
(`relative_to` when saved, `anchored` when loaded), so generation works from any directory.
Weights are read only through safetensors, diffusers/transformers `from_pretrained` (safetensors
preferred) or torch.load(weights_only=True) for AnimateDiff's original .ckpt.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch


SOURCES = {
    "unet": {"what": "Stable Diffusion 1.5 UNet (diffusers layout: config.json + diffusion_pytorch_model.safetensors)",
             "hub": "stable-diffusion-v1-5/stable-diffusion-v1-5 (subfolder unet)",
             "get": "hf download stable-diffusion-v1-5/stable-diffusion-v1-5 --include 'unet/*' --local-dir models/sd15"},
    "vae": {"what": "SD VAE fine-tuned with MSE (sd-vae-ft-mse, diffusers layout)",
            "hub": "stabilityai/sd-vae-ft-mse",
            "get": "hf download stabilityai/sd-vae-ft-mse --local-dir models/sd-vae-ft-mse"},
    "motion_module": {"what": "AnimateDiff motion module mm_sd_v15_v2 (original .ckpt or diffusers MotionAdapter folder)",
                      "hub": "guoyww/animatediff (mm_sd_v15_v2.ckpt) or guoyww/animatediff-motion-adapter-v1-5-2",
                      "get": "hf download guoyww/animatediff mm_sd_v15_v2.ckpt --local-dir models/animatediff"},
    "wav2vec2": {"what": "wav2vec 2.0 base (transformers layout)",
                 "hub": "facebook/wav2vec2-base",
                 "get": "hf download facebook/wav2vec2-base --local-dir models/wav2vec2-base"},
}

class PretrainedMissing(FileNotFoundError):
    pass


def _missing(kind: str, path: str, detail: str = "") -> PretrainedMissing:
    s = SOURCES[kind]
    return PretrainedMissing(
        f"{kind}: '{path}' not found{(' (' + detail + ')') if detail else ''}. Expected: {s['what']}. "
        f"Source: {s['hub']}. Get it with: {s['get']} and set model.pretrained.{kind} in the config.")


def _hub_shaped(path: str) -> bool:
    return "/" in path and not path.startswith((".", "/", "~")) and len(path.split("/")) == 2


def anchored(pretrained, checkpoint: str | os.PathLike):
    """The pretrained paths a checkpoint's config.yaml stores, made independent of the working
    directory: a relative path is relative to the checkpoint folder (save_checkpoint writes them
    so), an absolute path stays, and a hub id ("org/name") that is no folder there stays a hub id.
    A relative path found nowhere becomes the absolute path under the checkpoint, so the error
    names where it was looked for, never a folder of whatever directory generation runs in."""
    base = Path(checkpoint).resolve()
    out = {}
    for f in dataclasses.fields(pretrained):
        value = getattr(pretrained, f.name)
        if value and not Path(value).expanduser().is_absolute():
            local = base / value
            if local.exists() or not _hub_shaped(value):
                value = str(local.resolve() if local.exists() else local)
        out[f.name] = value
    return dataclasses.replace(pretrained, **out)


def relative_to(pretrained, checkpoint: str | os.PathLike):
    """The pretrained paths as a checkpoint at `checkpoint` should store them: each existing local
    file or folder relative to the checkpoint when the two share a folder below the filesystem root
    (a project tree: it can be copied, and generation runs from any directory); otherwise (e.g.
    /shared/models vs /home/me/runs) absolute. Hub ids stay hub ids."""
    base = Path(checkpoint).resolve()
    out = {}
    for f in dataclasses.fields(pretrained):
        value = getattr(pretrained, f.name)
        local = Path(value).expanduser() if value else None
        if local is not None and local.exists():
            local = local.resolve()
            shared = Path(os.path.commonpath([local, base]))
            value = os.path.relpath(local, base) if shared != Path(shared.anchor) else str(local)
        out[f.name] = value
    return dataclasses.replace(pretrained, **out)


def resolve(kind: str, path: str | None, subfolder: str | None = None) -> Path:
    """Local file/folder for `path`: an existing path, or a hub id present in the local HF cache."""
    if not path:
        raise _missing(kind, str(path), "no path configured")
    p = Path(path).expanduser()
    if p.exists():
        if subfolder and (p / subfolder).is_dir():
            p = p / subfolder
        return p
    if _hub_shaped(path):
        try:
            from huggingface_hub import snapshot_download
            local = Path(snapshot_download(path, local_files_only=True))
            return local / subfolder if subfolder and (local / subfolder).is_dir() else local
        except Exception as exc:  # not in the cache (offline) or not a repo id
            raise _missing(kind, path, f"not a local path and not in the hub cache: {type(exc).__name__}") from None
    raise _missing(kind, path)


def _check_folder(kind: str, folder: Path, config_name: str) -> None:
    if not (folder / config_name).is_file():
        raise _missing(kind, str(folder / config_name), "folder lacks its config file")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise _missing(kind, str(folder), "folder has no weight file (*.safetensors)")


def load_sd_unet(path: str):
    from diffusers import UNet2DConditionModel
    folder = resolve("unet", path, subfolder="unet")
    _check_folder("unet", folder, "config.json")
    return UNet2DConditionModel.from_pretrained(folder, use_safetensors=any(folder.glob("*.safetensors")))


def load_vae(path: str):
    from diffusers import AutoencoderKL
    folder = resolve("vae", path, subfolder="vae")
    _check_folder("vae", folder, "config.json")
    return AutoencoderKL.from_pretrained(folder, use_safetensors=any(folder.glob("*.safetensors")))


def load_motion_module_state_dict(path: str) -> dict[str, torch.Tensor]:
    """AnimateDiff weights with diffusers MotionAdapter key names."""
    p = resolve("motion_module", path)
    if p.is_dir():
        from diffusers import MotionAdapter
        _check_folder("motion_module", p, "config.json")
        return MotionAdapter.from_pretrained(p).state_dict()
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file
        sd = load_file(str(p))
    else:
        sd = torch.load(p, map_location="cpu", weights_only=True)
        sd = sd.get("state_dict", sd)
    if any(".temporal_transformer." in k or ".attention_blocks." in k for k in sd):
        from diffusers.loaders.single_file_utils import (
            convert_animatediff_checkpoint_to_diffusers,
        )
        sd = convert_animatediff_checkpoint_to_diffusers(sd)
    return sd


def load_wav2vec2(path: str, context: int):
    from .audio_encoder import AudioEncoder
    folder = resolve("wav2vec2", path)
    _check_folder("wav2vec2", folder, "config.json")
    return AudioEncoder.from_pretrained(str(folder), context)


def check_all(pretrained) -> list[str]:
    """Every configured pretrained path that cannot be resolved, as messages (empty: all present)."""
    problems = []
    for kind in SOURCES:
        value = getattr(pretrained, kind)
        if value is None:
            continue
        try:
            resolve(kind, value)
        except PretrainedMissing as exc:
            problems.append(str(exc))
    return problems
