"""The training loop: the paper's three stages in sequence (or one), with accelerate.

    python -m emo train --config emo/configs/tiny.yaml --dataset manifests/sample --out checkpoints/tiny
    accelerate launch --config_file emo/training/accelerate/multi_gpu.yaml -m emo train ...
    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 -m emo train ...     (DDP over gloo, CPU smoke test)

Global steps count across stages (stage 2 continues where stage 1 stopped), so every checkpoint
name is unique and `--resume` knows which stage and data position to continue from.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from emo.manifest import manifest_hash, read_manifest

from . import state as st
from .checkpointing import resolve_checkpoint, save_training_checkpoint
from .config import DataConfig, TrainConfig, TrainConfigError, parse_data, parse_train
from .dataset import ClipDataset, GlobalBatchSampler
from .stages import apply_stage, stage_summary
from .step import StageLoss

log = logging.getLogger("emo.training")


@dataclass
class TrainResult:
    out: Path
    step: int = 0
    checkpoints: list[Path] = field(default_factory=list)
    losses: list[tuple[int, int, float]] = field(default_factory=list)   # (global step, stage, loss)
    trainable: dict[int, dict[str, int]] = field(default_factory=dict)   # stage -> group counts
    seconds: float = 0.0
    is_main_process: bool = True
    vae_fit: dict | None = None          # losses and scaling factor when a VAE was fitted first


def _load_cfg(config):
    from emo.config import EMOConfig, load_config
    cfg = config if isinstance(config, EMOConfig) else load_config(config)
    data_raw = dict(cfg.data)
    # The data section defaults to the model's sizes so the two cannot silently disagree.
    data_raw.setdefault("sample_size", cfg.model.sample_size)
    data_raw.setdefault("n_frames", cfg.model.num_frames)
    data_raw.setdefault("n_motion", cfg.model.num_motion_frames)
    data_raw.setdefault("fps", cfg.inference.fps)
    data = parse_data(data_raw)
    if data.sample_size != cfg.model.sample_size:
        raise TrainConfigError(f"data.sample_size {data.sample_size} differs from model.sample_size {cfg.model.sample_size}")
    if data.n_frames + data.n_motion > cfg.model.motion_max_seq_length:
        raise TrainConfigError("data.n_frames + data.n_motion exceeds model.motion_max_seq_length")
    return cfg, data, parse_train(cfg.train)


def _plan(train: TrainConfig, only: int | None, resumed: dict | None) -> list[tuple[int, int, int]]:
    """(stage, first step, end step) still to run, given the counters of a resumed checkpoint."""
    plan = train.schedule(only)
    if not plan:
        raise TrainConfigError(f"nothing to train: train.stages gives no steps for stage {only or '1, 2, 3'}")
    if resumed is None:
        return plan
    step, stage, end = resumed["step"], resumed["stage"], resumed["stage_end"]
    out = []
    if step < end and any(s == stage for s, _, _ in plan):
        out.append((stage, resumed["stage_start"], end))
        step = end
    for s, a, b in plan:
        if s > stage:
            out.append((s, step, step + (b - a)))
            step += b - a
    return out


def _accelerator(out: Path, train: TrainConfig, mixed_precision: str | None, log_with):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration
    log_with = train.log_with if log_with == "config" else log_with
    return Accelerator(
        mixed_precision=mixed_precision or train.mixed_precision,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        log_with=log_with or None,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        # Dropped conditions leave their layers unused in some steps.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


def _enable_checkpointing(model) -> int:
    from .activation_checkpointing import enable_checkpointing   # the temporal modules included
    return enable_checkpointing(model)


def main(config, dataset, out, stage: int | None = None, max_steps: int | None = None,
         resume: str | os.PathLike | None = None, mixed_precision: str | None = None,
         log_with: str | None = "config", gradient_checkpointing: bool | None = None,
         model_cls=None, vae_fit_steps: int | None = None) -> TrainResult:
    """Train and write checkpoints under `out`. `max_steps` bounds the optimizer steps of THIS call
    (a checkpoint is written where it stops); `resume` is a checkpoint or run folder.
    `model_cls` replaces EMOModel (a subclass or anything with its interface; used by tests)."""
    t_start = time.time()
    out, dataset = Path(out), Path(dataset)
    cfg, data, train = _load_cfg(config)
    read_manifest(dataset, split=data.split)          # fail fast, with the command that builds one
    resumed, ckpt = None, None
    if resume is not None:
        ckpt = resolve_checkpoint(resume)
        resumed = st.load_counters(ckpt)
    plan = _plan(train, stage, resumed)
    accelerator = _accelerator(out, train, mixed_precision, log_with)
    from accelerate.utils import set_seed
    set_seed(train.seed)            # the same random init on every process (DDP also broadcasts it)

    if model_cls is None:
        from emo.models.emo_model import EMOModel as model_cls
    # Resuming, the networks come from the checkpoint (its config.yaml); data/train from `config`.
    model = model_cls.from_checkpoint(ckpt) if ckpt is not None else model_cls.from_config(cfg, seed=train.seed)
    result_vae = None
    if vae_fit_steps is not None:
        train.vae_fit_steps = vae_fit_steps
    if resumed is None and train.vae_fit_steps > 0 and not cfg.model.pretrained.vae:
        from .vae_fit import fit_vae   # a random frozen VAE would decode every latent to noise
        result_vae = fit_vae(model.vae, dataset, data, train.vae_fit_steps, train.vae_fit_lr, seed=train.seed)
    if gradient_checkpointing if gradient_checkpointing is not None else train.gradient_checkpointing:
        _enable_checkpointing(model)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        if resumed is None:         # a fresh run in an old folder starts a fresh log
            (out / "train_log.jsonl").unlink(missing_ok=True)
        accelerator.init_trackers("emo", config={"seed": train.seed, "lr": train.lr, "batch_size": train.batch_size})
    result = TrainResult(out=out, step=resumed["step"] if resumed else 0,
                         is_main_process=accelerator.is_main_process, vae_fit=result_vae)
    manifest_sha = manifest_hash(dataset)
    budget = max_steps if max_steps is not None else math.inf
    for stage_no, first, end in plan:
        if budget <= 0:
            break
        state_dir = ckpt / st.STATE_DIR if (resumed and resumed["stage"] == stage_no
                                            and resumed["step"] < resumed["stage_end"]) else None
        done = _run_stage(accelerator, model, cfg, data, train, dataset, out, stage_no, first, end,
                          budget, state_dir, result, manifest_sha)
        budget -= done
    accelerator.end_training()
    result.seconds = time.time() - t_start
    return result


def _run_stage(accelerator, model, cfg, data: DataConfig, train: TrainConfig, dataset: Path, out: Path,
               stage: int, first: int, end: int, budget, state_dir: Path | None, result: TrainResult,
               manifest_sha: str) -> int:
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    named = apply_stage(model, stage)
    names = [n for n, _ in named]
    params = [p for _, p in named]
    result.trainable[stage] = stage_summary(model)
    log.info("stage %d: steps %d..%d, trainable %s", stage, first, end, result.trainable[stage])
    from .optimizers import make_optimizer
    optimizer = make_optimizer(train.optimizer, params, lr=train.stage_lr(stage), betas=train.adam_betas,
                               eps=train.adam_eps, weight_decay=train.weight_decay)
    scheduler = get_scheduler(train.lr_scheduler, optimizer, num_warmup_steps=train.lr_warmup_steps,
                              num_training_steps=end - first)
    ema = EMAModel(params, decay=train.ema.decay) if train.ema.enabled else None
    loss_fn = StageLoss(model, stage, data.n_motion, train.drop_reference_prob, train.drop_audio_prob, data.fps)
    loss_fn, optimizer = accelerator.prepare(loss_fn, optimizer)
    generator = torch.Generator(device=accelerator.device).manual_seed(
        train.seed * 1000 + stage * 100 + accelerator.process_index)
    bs = train.stage_batch_size(stage)
    step, position = first, 0
    if state_dir is not None:
        counters = json.loads((state_dir / "state.json").read_text())
        step, position = counters["step"], counters["position"]
        st.load_optimizer(state_dir, optimizer, names)
        st.load_scheduler(state_dir, scheduler)
        if ema is not None:
            ema.to(accelerator.device)
            st.load_ema(state_dir, ema, names)
        scaler_state = state_dir / "scaler.json"
        if getattr(accelerator, "scaler", None) is not None and scaler_state.is_file():
            accelerator.scaler.load_state_dict(json.loads(scaler_state.read_text()))
        try:
            st.load_rng(state_dir, accelerator.process_index, generator)
        except FileNotFoundError as exc:
            log.warning("%s; this process starts from a fresh seed", exc)
    elif ema is not None:
        ema.to(accelerator.device)

    cache = None
    if stage > 1 and data.audio_cache:
        from .audio_cache import cache_dir, encoder_key, ensure_audio_cache
        if accelerator.is_main_process:
            ensure_audio_cache(model, ClipDataset(dataset, data, stage, train.seed), data.fps)
        accelerator.wait_for_everyone()
        cache = cache_dir(dataset, encoder_key(model, data.fps))
    ds = ClipDataset(dataset, data, stage, seed=train.seed, audio_cache=cache,
                     audio_context=cfg.audio.context)
    sampler = GlobalBatchSampler(bs, position, accelerator.process_index, accelerator.num_processes)
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=data.num_workers,
                        worker_init_fn=_one_thread if data.num_workers else None)
    batches = iter(loader)

    def checkpoint():
        counters = {"step": step, "stage": stage, "position": position, "stage_start": first,
                    "stage_end": end, "seed": train.seed}
        path = save_training_checkpoint(accelerator, out, accelerator.unwrap_model(loss_fn).model, counters,
                                        optimizer, names, scheduler, generator, ema, manifest_sha,
                                        train.keep_last)
        result.checkpoints.append(path)

    done, last_saved = 0, None
    loss_fn.train()
    while step < end and done < budget:
        with accelerator.accumulate(loss_fn):
            batch = {k: v.to(accelerator.device) for k, v in next(batches).items()}
            position += sampler.samples_per_step()
            with accelerator.autocast():
                loss = loss_fn(batch, generator)
            accelerator.backward(loss)
            if accelerator.sync_gradients and train.max_grad_norm > 0:
                accelerator.clip_grad_norm_(params, train.max_grad_norm)
            optimizer.step()
            if accelerator.sync_gradients:
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        if not accelerator.sync_gradients:
            continue
        step += 1
        done += 1
        if ema is not None:
            ema.step(params)
        value = accelerator.gather(loss.detach().float()[None]).mean().item()
        result.losses.append((step, stage, value))
        result.step = step
        if step % max(1, train.log_every) == 0 or step == end:
            accelerator.log({"loss": value, "lr": scheduler.get_last_lr()[0], "stage": stage}, step=step)
            if accelerator.is_main_process:
                _append_jsonl(out / "train_log.jsonl", {"step": step, "stage": stage, "loss": value,
                                                       "lr": scheduler.get_last_lr()[0], "time": time.time()})
        if (train.save_every and step % train.save_every == 0) or step in train.save_steps or step == end:
            checkpoint()
            last_saved = step
    if done and last_saved != step:       # stopped by max_steps: keep where it stopped
        checkpoint()
    accelerator.free_memory()
    return done


def _one_thread(_worker_id: int) -> None:
    # Decoding workers resize a few frames; letting each grab every core starves the training step.
    torch.set_num_threads(1)


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
