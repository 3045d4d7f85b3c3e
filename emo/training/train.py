"""The training loop: the paper's three stages in sequence (or one), with accelerate.

    python -m emo train --config emo/configs/tiny.yaml --dataset manifests/sample --out checkpoints/tiny
    accelerate launch --config_file emo/training/accelerate/multi_gpu.yaml -m emo train ...
    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 -m emo train ...     (DDP over gloo, CPU smoke test)

Global steps count across stages (stage 2 continues where stage 1 stopped), so every checkpoint
name is unique and `--resume` knows which stage and data position to continue from. A run folder
that already has a `latest` checkpoint is continued as `--resume` would (or, when its run is
complete, left as it is): a second `python -m emo train` never retrains over finished work.

EMA (train.ema.enabled): the EMA weights are saved in each checkpoint's ema.safetensors, which
generation loads by default. The EMA carries across stages: a parameter's trajectory is continuous
from one stage to the next, so its average continues from the value the previous stage's
checkpoint saved; a parameter a stage does not train keeps the EMA value its last trained stage
ended with (its raw value never changed since).
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

from emo.face_mask import META_KEY as FACE_MASK_META
from emo.models.emo_model import EMA_FILE
from emo.typed_config import ConfigError

from . import state as st
from .checkpointing import LATEST, resolve_checkpoint, save_training_checkpoint
from .config import DataConfig, TrainConfig, parse_data, parse_train
from .dataset import ClipDataset, GlobalBatchSampler
from .optimizers import make_optimizer
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
    resumed_from: Path | None = None     # the checkpoint this call continued
    already_complete: bool = False       # the run folder's run had nothing left to train


def _load_cfg(config):
    from emo.config import EMOConfig, load_config
    cfg = config if isinstance(config, EMOConfig) else load_config(config)
    data_raw = dict(cfg.data)
    # The data section defaults to the model's sizes so the two cannot silently disagree.
    data_raw.setdefault("sample_size", cfg.model.sample_size)
    data_raw.setdefault("n_frames", cfg.model.num_frames)
    data_raw.setdefault("n_motion", cfg.model.num_motion_frames)
    data_raw.setdefault("fps", cfg.inference.fps)
    data = parse_data(data_raw, source=cfg.source)
    where = f"{cfg.source}: " if cfg.source else ""
    if data.sample_size != cfg.model.sample_size:
        raise ConfigError(f"{where}data.sample_size {data.sample_size} differs from model.sample_size {cfg.model.sample_size}")
    if data.n_frames + data.n_motion > cfg.model.motion_max_seq_length:
        raise ConfigError(f"{where}data.n_frames + data.n_motion exceeds model.motion_max_seq_length")
    return cfg, data, parse_train(cfg.train, source=cfg.source)


def _plan(train: TrainConfig, only: int | None, resumed: dict | None) -> list[tuple[int, int, int]]:
    """(stage, first step, end step) still to run, given the counters of a resumed checkpoint."""
    plan = train.schedule(only)
    if not plan:
        raise ConfigError(f"nothing to train: train.stages gives no steps for stage {only or '1, 2, 3'}")
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
    from accelerate.utils import DistributedDataParallelKwargs, DistributedType, ProjectConfiguration
    log_with = train.log_with if log_with == "config" else log_with
    accelerator = Accelerator(
        mixed_precision=mixed_precision or train.mixed_precision,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        log_with=log_with or None,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        # Dropped conditions leave their layers unused in some steps.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        # ZeRO partitions the optimizer state behind its own wrapper; training_state/ saves and
        # restores it by parameter name, which has only been verified for DDP and FSDP2.
        raise ConfigError("DeepSpeed is not supported by this training loop (its checkpoints would not resume); "
                          "for ZeRO-2-level sharding use FSDP2: emo/training/accelerate/stage2_fsdp.yaml")
    if accelerator.distributed_type == DistributedType.FSDP and not accelerator.is_fsdp2:
        # FSDP1 keeps flattened shards behind the parameters: the checkpoint code (which gathers
        # FSDP2's DTensor shards) would save and restore them wrong.
        raise ConfigError("FSDP is supported with fsdp_version: 2 only (the accelerate config's fsdp_config); "
                          "see emo/training/accelerate/stage2_fsdp.yaml")
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and accelerator.num_processes == 1:
        # e.g. a GPU config launched where accelerate finds no GPU: every process would train
        # alone and all would write into the same output folder.
        raise ConfigError(f"launched as {launched} processes but accelerate set up a single-process run "
                          f"(distributed type {accelerator.distributed_type}); check the accelerate config "
                          f"against this machine (use_cpu, GPUs visible)")
    return accelerator


def _enable_checkpointing(model) -> int:
    from .activation_checkpointing import enable_checkpointing   # the temporal modules included
    return enable_checkpointing(model)


def main(config, dataset, out, stage: int | None = None, max_steps: int | None = None,
         resume: str | os.PathLike | None = None, mixed_precision: str | None = None,
         log_with: str | None = "config", gradient_checkpointing: bool | None = None,
         model_cls=None, vae_fit_steps: int | None = None) -> TrainResult:
    """Train and write checkpoints under `out`. `max_steps` bounds the optimizer steps of THIS call
    (a checkpoint is written where it stops); `resume` is a checkpoint or run folder. Without
    `resume`, a run folder `out` that already has a `latest` checkpoint is resumed from it; when
    nothing is left to train there, nothing is written and `already_complete` is set.
    `model_cls` replaces EMOModel (a subclass or anything with its interface; used by tests)."""
    t_start = time.time()
    out, dataset = Path(out), Path(dataset)
    cfg, data, train = _load_cfg(config)
    read_manifest(dataset, split=data.split)          # fail fast, with the command that builds one
    if resume is None and (out / LATEST).is_file():
        resume = out        # a second run into the same folder continues it, never overwrites it
    resumed, ckpt = None, None
    if resume is not None:
        ckpt = resolve_checkpoint(resume)
        resumed = st.load_counters(ckpt)
        log.info("continuing from %s (step %d, stage %d)", ckpt, resumed["step"], resumed["stage"])
    plan = _plan(train, stage, resumed)
    if not plan:
        log.info("%s: the run is already complete at step %d; nothing to train", ckpt, resumed["step"])
        return TrainResult(out=out, step=resumed["step"], checkpoints=[ckpt], resumed_from=ckpt,
                           already_complete=True, seconds=time.time() - t_start)
    accelerator = _accelerator(out, train, mixed_precision, log_with)
    from accelerate.utils import DistributedType, set_seed
    if accelerator.distributed_type == DistributedType.FSDP and len(plan) > 1:
        # FSDP2 shards the model in place; the next stage would need it whole (audio cache, new wrap).
        raise ConfigError(f"under FSDP train one stage per call: add --stage {plan[0][0]} (the next call, "
                          f"--stage {plan[1][0]}, continues from the run's latest checkpoint)")
    set_seed(train.seed)            # the same random init on every process (DDP also broadcasts it)

    if model_cls is None:
        from emo.models.emo_model import EMOModel as model_cls
    # Resuming, the networks come from the checkpoint (its config.yaml; the raw weights, not the
    # EMA); data/train from `config`.
    model = model_cls.from_checkpoint(ckpt, weights="raw") if ckpt is not None else model_cls.from_config(cfg, seed=train.seed)
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
        if resumed is None:         # a fresh run starts a fresh log
            (out / "train_log.jsonl").unlink(missing_ok=True)
        accelerator.init_trackers("emo", config={"seed": train.seed, "lr": train.lr, "batch_size": train.batch_size})
    result = TrainResult(out=out, step=resumed["step"] if resumed else 0, resumed_from=ckpt,
                         is_main_process=accelerator.is_main_process, vae_fit=result_vae)
    run = Run(accelerator, model, cfg, data, train, dataset, out, manifest_hash(dataset), result,
              last_checkpoint=ckpt)
    budget = max_steps if max_steps is not None else math.inf
    for stage_no, first, end in plan:
        if budget <= 0:
            break
        state_dir = ckpt / st.STATE_DIR if (resumed and resumed["stage"] == stage_no
                                            and resumed["step"] < resumed["stage_end"]) else None
        budget -= _run_stage(run, stage_no, first, end, budget, state_dir)
    accelerator.end_training()
    result.seconds = time.time() - t_start
    return result


# ---- one stage, in named steps --------------------------------------------------------------------
@dataclass
class Run:
    """What every stage of one `main` call shares."""
    accelerator: object
    model: object
    cfg: object
    data: DataConfig
    train: TrainConfig
    dataset: Path
    out: Path
    manifest_sha: str
    result: TrainResult
    last_checkpoint: Path | None = None     # where the EMA of earlier stages is read from
    face_mask_scale: dict | None = None     # measured on the training clips; saved in meta.json


@dataclass
class StageState:
    """One stage in progress: what it trains, its optimizer, and where it is."""
    stage: int
    first: int
    end: int
    names: list[str]
    params: list
    optimizer: object
    scheduler: object
    loss_fn: object
    generator: torch.Generator
    ema: object | None
    ema_carried: dict            # EMA weights of parameters this stage does not train
    step: int
    position: int = 0


def _run_stage(run: Run, stage: int, first: int, end: int, budget, state_dir: Path | None) -> int:
    """Train one stage from `first` (or from the state in `state_dir`) to `end` or `budget` steps;
    return the number of optimizer steps taken."""
    cache = _audio_cache(run, stage)   # before _start_stage: FSDP shards the model's weights
    s = _start_stage(run, stage, first, end)
    if state_dir is not None:
        _restore(run, s, state_dir)
    batches, sampler = _batches(run, s, cache)
    done, last_saved = 0, None
    s.loss_fn.train()
    while s.step < end and done < budget:
        loss = _optimizer_step(run, s, batches, sampler)
        if loss is None:              # gradient accumulation: not a whole step yet
            continue
        done += 1
        _after_step(run, s, loss)
        if _due(run.train, s.step, end):
            _checkpoint(run, s)
            last_saved = s.step
    if done and last_saved != s.step:       # stopped by max_steps: keep where it stopped
        _checkpoint(run, s)
    run.accelerator.free_memory()
    return done


def _start_stage(run: Run, stage: int, first: int, end: int) -> StageState:
    """Set the stage's trainable parameters; build its optimizer, LR schedule, EMA and loss."""
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    acc, train = run.accelerator, run.train
    named = apply_stage(run.model, stage)
    names, params = [n for n, _ in named], [p for _, p in named]
    run.result.trainable[stage] = stage_summary(run.model)
    log.info("stage %d: steps %d..%d, trainable %s", stage, first, end, run.result.trainable[stage])
    optimizer = make_optimizer(train.optimizer, params, lr=train.stage_lr(stage), betas=train.adam_betas,
                               eps=train.adam_eps, weight_decay=train.weight_decay)
    scheduler = get_scheduler(train.lr_scheduler, optimizer, num_warmup_steps=train.lr_warmup_steps,
                              num_training_steps=end - first)
    loss_fn = StageLoss(run.model, stage, run.data.n_motion, train.drop_reference_prob, train.drop_audio_prob,
                        run.data.fps, drop_both_prob=train.drop_reference_and_audio_prob,
                        loss_weighting=train.loss_weighting)
    loss_fn, optimizer = acc.prepare(loss_fn, optimizer)
    if hasattr(loss_fn, "set_reduce_scatter_unused_params"):
        # FSDP2's find_unused_parameters: the condition dropping differs between processes, and
        # the gradient reduce-scatter must cover the same parameters on all of them.
        loss_fn.set_reduce_scatter_unused_params(True)
    # FSDP2 replaces the parameters by DTensor shards: clipping and the EMA use the model's own.
    by_name = dict(run.model.named_parameters())
    params = [by_name[n] for n in names]
    ema, carried = None, {}
    if train.ema.enabled:
        ema = EMAModel(params, decay=train.ema.decay)     # sharded like the parameters under FSDP2
        ema.to(acc.device)
        carried = _carried_ema(run)
        for p, n in zip(ema.shadow_params, names):      # the EMA carries across stages
            if n in carried:
                st.copy_whole_into(p, carried[n])
        carried = {n: t for n, t in carried.items() if n not in set(names)}
    generator = torch.Generator(device=acc.device).manual_seed(train.seed * 1000 + stage * 100 + acc.process_index)
    return StageState(stage, first, end, names, params, optimizer, scheduler, loss_fn, generator, ema,
                      carried, step=first)


def _carried_ema(run: Run) -> dict:
    """EMA weights saved by the latest checkpoint of this run (earlier stages, or the resumed one)."""
    from safetensors.torch import load_file
    path = run.last_checkpoint / EMA_FILE if run.last_checkpoint is not None else None
    return load_file(str(path)) if path is not None and path.is_file() else {}


def _restore(run: Run, s: StageState, state_dir: Path) -> None:
    """Continue a stage exactly: counters, optimizer, LR schedule, EMA, loss scale, RNG."""
    acc = run.accelerator
    counters = json.loads((state_dir / "state.json").read_text())
    s.step, s.position = counters["step"], counters["position"]
    st.load_optimizer(state_dir, s.optimizer, s.names)
    st.load_scheduler(state_dir, s.scheduler)
    if s.ema is not None:
        from safetensors.torch import load_file
        st.load_ema(state_dir, s.ema, s.names, load_file(str(state_dir.parent / EMA_FILE)))
    scaler_state = state_dir / "scaler.json"
    if getattr(acc, "scaler", None) is not None and scaler_state.is_file():
        acc.scaler.load_state_dict(json.loads(scaler_state.read_text()))
    try:
        st.load_rng(state_dir, acc.process_index, s.generator)
    except FileNotFoundError as exc:
        log.warning("%s; this process starts from a fresh seed", exc)


def _audio_cache(run: Run, stage: int):
    """The stage's audio cache (each process builds its share), or None."""
    acc, data = run.accelerator, run.data
    if stage == 1 or not data.audio_cache:
        return None
    from .audio_cache import ensure_audio_cache
    cache = ensure_audio_cache(run.model, ClipDataset(run.dataset, data, stage, run.train.seed), data.fps,
                               rank=acc.process_index, world=acc.num_processes)
    acc.wait_for_everyone()       # only waits: every process computed its own share
    return cache


def _batches(run: Run, s: StageState, cache):
    """The stage's data: the dataset (with the audio cache `cache`) and the loader."""
    acc, data, train = run.accelerator, run.data, run.train
    ds = ClipDataset(run.dataset, data, s.stage, seed=train.seed, audio_cache=cache,
                     audio_context=run.cfg.audio.context, drop_motion_prob=train.drop_motion_prob,
                     joint_colour_augment_prob=train.joint_colour_augment_prob)
    run.face_mask_scale = ds.face_mask_scale()
    sampler = GlobalBatchSampler(train.stage_batch_size(s.stage), s.position, acc.process_index, acc.num_processes)
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=data.num_workers,
                        worker_init_fn=_one_thread if data.num_workers else None)
    return iter(loader), sampler


def _optimizer_step(run: Run, s: StageState, batches, sampler) -> torch.Tensor | None:
    """One micro-batch forward/backward; the loss when it completed an optimizer step, else None."""
    acc = run.accelerator
    with acc.accumulate(s.loss_fn):
        batch = {k: v.to(acc.device) for k, v in next(batches).items()}
        s.position += sampler.samples_per_step()
        with acc.autocast():
            loss = s.loss_fn(batch, s.generator)
        acc.backward(loss)
        if acc.sync_gradients and run.train.max_grad_norm > 0:
            acc.clip_grad_norm_(s.params, run.train.max_grad_norm)
        s.optimizer.step()
        if acc.sync_gradients:
            s.scheduler.step()
        s.optimizer.zero_grad(set_to_none=True)
    return loss if acc.sync_gradients else None


def _after_step(run: Run, s: StageState, loss: torch.Tensor) -> None:
    """Count the step, update the EMA, record and log the loss."""
    acc, train = run.accelerator, run.train
    s.step += 1
    if s.ema is not None:
        s.ema.step(s.params)
    value = acc.gather(loss.detach().float()[None]).mean().item()
    run.result.losses.append((s.step, s.stage, value))
    run.result.step = s.step
    if s.step % max(1, train.log_every) == 0 or s.step == s.end:
        lr = s.scheduler.get_last_lr()[0]
        acc.log({"loss": value, "lr": lr, "stage": s.stage}, step=s.step)
        if acc.is_main_process:
            _append_jsonl(run.out / "train_log.jsonl", {"step": s.step, "stage": s.stage, "loss": value,
                                                        "lr": lr, "time": time.time()})


def _due(train: TrainConfig, step: int, end: int) -> bool:
    """Whether a checkpoint is written after `step`: periodic, listed, or the stage's end."""
    return bool(train.save_every and step % train.save_every == 0) or step in train.save_steps or step == end


def _checkpoint(run: Run, s: StageState) -> None:
    acc = run.accelerator
    counters = {"step": s.step, "stage": s.stage, "position": s.position, "stage_start": s.first,
                "stage_end": s.end, "seed": run.train.seed}
    path = save_training_checkpoint(acc, run.out, acc.unwrap_model(s.loss_fn).model, counters, s.optimizer,
                                    s.names, s.scheduler, s.generator, s.ema, run.manifest_sha, run.train.keep_last,
                                    ema_carried=s.ema_carried, meta={FACE_MASK_META: run.face_mask_scale})
    run.result.checkpoints.append(path)
    run.last_checkpoint = path


def _one_thread(_worker_id: int) -> None:
    # Decoding workers resize a few frames; letting each grab every core starves the training step.
    torch.set_num_threads(1)


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
