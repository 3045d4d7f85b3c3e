"""Writing and finding checkpoint folders (Contract 2) during training.

A checkpoint is written under a hidden temporary name and moved into place when complete
(`emo.fileio.replace_folder`), so a killed run never leaves a half-written `step-NNNNNN`; `latest`
(a text file holding the folder name) is replaced atomically after the move. When a step is
written again (a resumed run), the old folder is renamed aside, the new one moved in, and only then
is the old one deleted; a kill between the two renames leaves the old folder under its hidden name,
and `resolve_checkpoint` puts it back, so `latest` always leads to a loadable checkpoint.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from emo.fileio import atomic_write, recover_folder, replace_folder, temp_sibling

from . import state as st

LATEST = "latest"


def step_name(step: int) -> str:
    return f"step-{step:06d}"


def write_latest(out: Path, name: str) -> None:
    atomic_write(out / LATEST, name + "\n")


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder, or a run folder holding a `latest` pointer, -> the checkpoint folder."""
    path = Path(path)
    if (path / LATEST).is_file():
        path = path / (path / LATEST).read_text().strip()
    recover_folder(path)            # a kill inside replace_folder: the old copy is put back
    if not (path / st.STATE_DIR / "state.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a resumable checkpoint (no {st.STATE_DIR}/state.json); pass a "
            f"step-NNNNNN folder written by `python -m emo train` or the run folder with a `latest` file")
    return path


def save_training_checkpoint(accelerator, out: Path, model, counters: dict, optimizer, names,
                             scheduler, generator, ema=None, manifest_sha256: str | None = None,
                             keep_last: int = 0, ema_carried: dict | None = None, meta: dict | None = None) -> Path:
    """Model (EMOModel.save_checkpoint, with the EMA weights when `ema` is given, plus
    `ema_carried`: EMA weights of earlier stages' parameters) + training_state/ + meta.json (with
    `meta` added); every process calls this (under FSDP2 all gather the sharded weights, EMA and
    optimizer state; the main process writes them whole)."""
    name = step_name(counters["step"])
    final = out / name
    tmp = out / f".{name}.tmp"         # fixed name: every process must find the same folder
    main = accelerator.is_main_process
    ema_weights = {**(ema_carried or {}), **st.ema_weights(ema, names, keep=main)} if ema is not None else None
    with st.whole_parameters(model, keep=main):
        if main:
            out.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
            model.save_checkpoint(tmp, ema_weights=ema_weights)
            (tmp / st.STATE_DIR).mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    folder = tmp / st.STATE_DIR
    st.save_rng(folder, accelerator.process_index, generator)
    st.save_optimizer(folder, optimizer, names, write=main)
    if main:
        st.save_scheduler(folder, scheduler)
        if ema is not None:
            st.save_ema(folder, ema, names)
        if getattr(accelerator, "scaler", None) is not None:     # fp16 loss scale
            st._write_json(folder / "scaler.json", accelerator.scaler.state_dict())
        st.save_counters(folder, {**counters, "world_size": accelerator.num_processes})
        meta_path = tmp / "meta.json"
        info = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        info.update(meta or {})
        info.update(step=counters["step"], stage=counters["stage"], time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    dataset_manifest_sha256=manifest_sha256, ema=ema is not None)
        st._write_json(meta_path, info)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        replace_folder(tmp, final)      # re-running the same step (a resumed run) replaces it
        write_latest(out, name)
        if keep_last > 0:
            for old in sorted(out.glob("step-*"))[:-keep_last]:
                trash = temp_sibling(old, "trash")
                os.replace(old, trash)     # gone from step-* at once, deleted after
                shutil.rmtree(trash, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
