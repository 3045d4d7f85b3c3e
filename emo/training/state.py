"""The `training_state/` folder of a checkpoint (Contract 2): everything an exact resume needs,
in safetensors (tensors) and JSON (the rest). Nothing is pickled.

  training_state/
    state.json                 step, stage, data position, seed, world size, stage bounds
    optimizer.safetensors      per-parameter optimizer tensors, keyed state/<param name>/<slot>
    optimizer.json             param groups (by parameter name) and non-tensor per-parameter state
    scheduler.json             the LR scheduler's state_dict
    rng_<rank>.safetensors     torch CPU (+ CUDA) generator states, the loop's noise generator
    rng_<rank>.json            python `random` and numpy global states
    ema.json                   EMA counters (when EMA is on); the EMA weights themselves are the
                               checkpoint's own ema.safetensors, where generation reads them
    scaler.json                fp16 loss scale (when mixed_precision is fp16)

Under FSDP2 (accelerate `fsdp_version: 2`) parameters, optimizer moments and EMA weights are
DTensor shards. Everything is saved whole (gathered with `whole`, which every process must call in
the same order) and cut back into the current shards on loading (`copy_whole_into`), so the files
are the same as a single-process run's and do not depend on the process count.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from emo.fileio import atomic_write

try:
    from torch.distributed.tensor import DTensor, distribute_tensor
except ImportError:                 # a torch build without torch.distributed
    DTensor = distribute_tensor = None

STATE_DIR = "training_state"


# ---- sharded (FSDP2) tensors ---------------------------------------------------------------------
def is_sharded(t) -> bool:
    return DTensor is not None and isinstance(t, DTensor)


def whole(t: torch.Tensor) -> torch.Tensor:
    """`t` itself, or, for a DTensor shard, the whole tensor (a collective: every process calls it)."""
    return t.full_tensor() if is_sharded(t) else t


def copy_whole_into(dst: torch.Tensor, src: torch.Tensor) -> None:
    """Copy the whole tensor `src` into `dst`, which may be a DTensor shard (each process keeps its
    own part of `src`, which every process holds: no communication)."""
    with torch.no_grad():
        if is_sharded(dst):
            src = distribute_tensor(src.to(dst.device, dst.dtype), dst.device_mesh, dst.placements, src_data_rank=None)
        dst.copy_(src.to(dst.device, dst.dtype))


@contextlib.contextmanager
def whole_parameters(model: torch.nn.Module, keep: bool = True):
    """Within the block, `model`'s DTensor parameters are replaced by whole CPU copies (gathered on
    every process, which must all enter; kept where `keep`, e.g. on the process that saves)."""
    swapped = []
    for name, p in list(model.named_parameters()):
        if not is_sharded(p):
            continue
        full = p.detach().full_tensor().cpu()
        if keep:
            owner, _, leaf = name.rpartition(".")
            module = model.get_submodule(owner)
            swapped.append((module, leaf, module._parameters[leaf]))
            module._parameters[leaf] = torch.nn.Parameter(full, requires_grad=False)
    try:
        yield model
    finally:
        for module, leaf, p in swapped:
            module._parameters[leaf] = p


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True))


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    plain = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(plain, str(tmp)))


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"training state file missing: {path}")
    return json.loads(path.read_text())


# ---- optimizer -------------------------------------------------------------------------------
def save_optimizer(folder: Path, optimizer: torch.optim.Optimizer, names: list[str], write: bool = True) -> None:
    """`names[i]` names the i-th parameter in the optimizer's flat order (param group order).
    Sharded (FSDP2) states are gathered whole: then every process calls this, and only those with
    `write` write."""
    sd = optimizer.state_dict()
    tensors, other = {}, {}
    for idx, slots in sorted(sd["state"].items()):      # the same gathering order on every process
        name = names[int(idx)]
        for slot, value in slots.items():
            if torch.is_tensor(value):
                value = whole(value)
                if write:
                    tensors[f"state/{name}/{slot}"] = value.cpu()
            else:
                other.setdefault(name, {})[slot] = value
    if not write:
        return
    groups = [{**{k: v for k, v in g.items() if k != "params"},
               "params": [names[int(i)] for i in g["params"]]} for g in sd["param_groups"]]
    _write_tensors(folder / "optimizer.safetensors", tensors)
    _write_json(folder / "optimizer.json", {"param_groups": groups, "other_state": other, "names": names})


def load_optimizer(folder: Path, optimizer: torch.optim.Optimizer, names: list[str]) -> None:
    meta = _read_json(folder / "optimizer.json")
    if meta["names"] != names:
        missing = sorted(set(meta["names"]) ^ set(names))[:5]
        raise ValueError(f"{folder}: the optimizer was saved for different trainable parameters "
                         f"(differences e.g. {missing}); resume with the same stage and config")
    tensors = load_file(str(folder / "optimizer.safetensors"))
    index = {n: i for i, n in enumerate(names)}
    params = [p for g in optimizer.param_groups for p in g["params"]]
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        # Parameter names contain dots, never slashes: the slot is after the last slash.
        name = key[len("state/"):key.rfind("/")]
        slot = key[key.rfind("/") + 1:]
        param = params[index[name]]
        if is_sharded(param) and value.shape == param.shape:    # a moment of a sharded parameter
            shard = torch.empty_like(param)
            copy_whole_into(shard, value)
            value = shard
        state.setdefault(index[name], {})[slot] = value
    for name, slots in meta["other_state"].items():
        state.setdefault(index[name], {}).update(slots)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        g["params"] = [index[n] for n in g["params"]]
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# ---- RNG ---------------------------------------------------------------------------------------
def save_rng(folder: Path, rank: int, generator: torch.Generator) -> None:
    tensors = {"torch_cpu": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{i}"] = s
    np_state = np.random.get_state()
    py_state = random.getstate()
    _write_tensors(folder / f"rng_{rank}.safetensors", tensors)
    _write_json(folder / f"rng_{rank}.json", {
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    })


def load_rng(folder: Path, rank: int, generator: torch.Generator) -> None:
    path = folder / f"rng_{rank}.safetensors"
    if not path.is_file():
        # A resume on more processes than saved: new ranks start from fresh seeds (logged by caller).
        raise FileNotFoundError(f"no RNG state for process {rank} at {path}")
    tensors = load_file(str(path))
    torch.set_rng_state(tensors["torch_cpu"])
    generator.set_state(tensors["generator"])
    cuda = [tensors[k] for k in sorted(t for t in tensors if t.startswith("cuda_"))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    meta = _read_json(folder / f"rng_{rank}.json")
    n = meta["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = meta["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


# ---- scheduler, EMA, counters ---------------------------------------------------------------------
def save_scheduler(folder: Path, scheduler) -> None:
    sd = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    _write_json(folder / "scheduler.json", sd)


def load_scheduler(folder: Path, scheduler) -> None:
    sd = _read_json(folder / "scheduler.json")
    sd["lr_lambdas"] = [None] * len(sd.get("base_lrs", [None]))
    scheduler.load_state_dict(sd)


def ema_weights(ema, names: list[str], keep: bool = True) -> dict[str, torch.Tensor]:
    """{parameter name: EMA value} of the parameters the EMA tracks (`names`: the optimizer's order).
    Sharded (FSDP2) values are gathered whole: then every process calls this, and those without
    `keep` get {}."""
    out = {}
    for n, p in zip(names, ema.shadow_params):
        if keep:
            out[n] = whole(p.detach()).cpu()
        elif is_sharded(p):
            whole(p)                # this process's part of the gathering
    return out


def save_ema(folder: Path, ema, names: list[str]) -> None:
    """The EMA's counters; its weights go to the checkpoint's ema.safetensors (`ema_weights`)."""
    sd = ema.state_dict()
    sd.pop("shadow_params")
    _write_json(folder / "ema.json", {**sd, "names": names})


def load_ema(folder: Path, ema, names: list[str], weights: dict[str, torch.Tensor]) -> None:
    """Counters from training_state/ema.json, weights from the checkpoint's ema.safetensors."""
    meta = _read_json(folder / "ema.json")
    if meta.pop("names") != names:
        raise ValueError(f"{folder}: EMA saved for different parameters")
    missing = [n for n in names if n not in weights]
    if missing:
        raise ValueError(f"{folder}: the checkpoint's EMA weights lack {missing[:3]}")
    for p, n in zip(ema.shadow_params, names):
        copy_whole_into(p, weights[n])
    for k, v in meta.items():
        setattr(ema, k, v)


def save_counters(folder: Path, counters: dict) -> None:
    _write_json(folder / "state.json", counters)


def load_counters(ckpt: str | os.PathLike) -> dict:
    return _read_json(Path(ckpt) / STATE_DIR / "state.json")
