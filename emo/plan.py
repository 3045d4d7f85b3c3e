"""Memory plan: what one training stage needs per GPU, before renting one.

    python -m emo plan --config emo/configs/sd15.yaml --stage 2 [--weights fp32|bf16]
        [--optimizer adamw|adamw8bit] [--zero 0|2|3 --gpus N] [--batch-size B] [--no-checkpointing]

Per stage it states the parameters trained and frozen (counted on the config's architecture, built
on PyTorch's meta/fake device, so nothing is allocated), the bytes of weights, gradients and
optimizer state at the chosen precision, and the activation memory of one training step.

Activations are MEASURED, not modelled layer by layer: the stage's training forward (VAE encode
without gradients, one ReferenceNet pass with the reference and motion frames, the backbone on f
frames, MSE) runs under torch's FakeTensorMode (real operators, real autograd, shapes and dtypes
but no data), and we sum the bytes of every distinct tensor storage the autograd graph keeps for
backward (saved-tensor hooks), plus the inputs of gradient-checkpointed blocks (kept for their
recomputation) and the ReferenceNet features the backbone reads. Parameters are excluded (they are
counted as weights). Mixed precision is CUDA's autocast emulated operator by operator (matmuls,
convolutions and attention in bf16; group/layer norm, softmax and losses in fp32), since the CPU's
own autocast keeps norms in bf16 and would under-count. During backward one checkpointed block is
recomputed at a time: its own saved tensors (the largest block's) come on top (`recompute_peak`).

Scaling model: activation bytes kept for backward = c + B * (a + b * P), with P the latent pixels
(h * w) of a frame and B the batch size; c holds what does not grow with the batch (bf16 copies of
the weights that autocast makes and autograd keeps). c, a, b are fitted on counts at reduced
resolution (64 and 128 px, batch 1 and 2); the fit is checked against further counts at 96 px and
at the config's own size (fake tensors make the full size affordable to count on a CPU; `check` in
the output). The recomputed block does not follow such a model (the largest block at 64 px is not
the largest at 512 px), so the plan takes its count at the config's size.

Assumptions, stated in the output: CUDA context + allocator slack (a fixed 1.5 GiB plus 10% of the
rest) is added to the total; attention runs in a memory-efficient kernel (no T x T score matrix,
as PyTorch's SDPA does on both CPU and GPU for these shapes).
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode

GiB = 2 ** 30
CONTEXT_BYTES = int(1.5 * GiB)     # CUDA context, cuBLAS/cuDNN workspaces
SLACK = 0.10                       # allocator fragmentation
GPUS_GB = (24, 40, 48, 80)


# -- autocast as CUDA does it -----------------------------------------------------------------------
_LOW = {F.linear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose2d, torch.matmul, torch.bmm, torch.mm,
        torch.baddbmm, torch.addmm, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.bmm,
        F.scaled_dot_product_attention}
_FP32 = {F.group_norm, F.layer_norm, F.softmax, torch.softmax, torch.Tensor.softmax, F.log_softmax, F.mse_loss}


class CudaAutocast(TorchFunctionMode):
    """CUDA autocast's casting rules on any device: the low-precision list runs in `dtype`, the
    float32 list in float32, casts of weights made once per forward (autocast's weight cache)."""

    def __init__(self, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.dtype, self.cache = dtype, {}

    def _cast(self, x, dtype):
        if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != dtype:
            if isinstance(x, torch.nn.Parameter) and x.requires_grad:
                key = (id(x), dtype)
                if key not in self.cache:
                    self.cache[key] = x.to(dtype)
                return self.cache[key]
            return x.to(dtype)
        if isinstance(x, (list, tuple)):
            return type(x)(self._cast(v, dtype) for v in x)
        return x

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        target = self.dtype if func in _LOW else torch.float32 if func in _FP32 else None
        if target is not None:
            args = tuple(self._cast(a, target) for a in args)
            kwargs = {k: self._cast(v, target) for k, v in kwargs.items()}
        return func(*args, **kwargs)


# -- counting what autograd keeps ---------------------------------------------------------------------
def _key(t: torch.Tensor):
    return t.untyped_storage()._cdata


class SavedBytes:
    """Distinct storages the autograd graph saves (parameters excluded), plus extra tensors kept
    alive outside it (checkpointed blocks' inputs, ReferenceNet features)."""

    def __init__(self, exclude: set):
        self.exclude, self.seen = exclude, {}
        self.block_peak = 0

    def add(self, t: torch.Tensor) -> None:
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            k = _key(t)
            if k not in self.exclude:
                storage = t.untyped_storage()
                self.seen[k] = (storage.nbytes(), StorageWeakRef(storage))

    def pack(self, t):
        self.add(t)
        return t

    @property
    def total(self) -> int:
        """Bytes still alive: parts of the graph whose output is dropped (the ReferenceNet's layers
        after its last recorded feature) are freed during the forward and do not count."""
        return sum(n for n, ref in self.seen.values() if not ref.expired())

    def checkpoint_func(self):
        """A gradient_checkpointing_func for diffusers' models: records the block's inputs and the
        bytes the block itself would save (what its recomputation holds during backward)."""
        def run(module, *args):
            for a in args:
                if isinstance(a, torch.Tensor):
                    self.add(a)
            inner = SavedBytes(self.exclude | {k for k, (_, ref) in self.seen.items() if not ref.expired()})
            with torch.autograd.graph.saved_tensors_hooks(inner.pack, lambda t: t):
                held = module(*args)             # kept until counted: its graph holds the block's tensors
            self.block_peak = max(self.block_peak, inner.total)
            del held
            return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False)
        return run


# -- the model at the config's architecture -----------------------------------------------------------
def plan_model(cfg):
    """EMOModel with the config's architecture and random weights, the frozen networks at the sizes
    of their pretrained files (sd-vae-ft-mse, wav2vec2-base) when the config names them. Build it
    under FakeTensorMode (or the meta device) to allocate nothing."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from .models.audio_encoder import AudioEncoder, AudioProjection
    from .models.emo_model import EMOModel
    pre = cfg.model.pretrained
    arch = dataclasses.replace(cfg, model=dataclasses.replace(
        cfg.model, pretrained=dataclasses.replace(pre, unet=None, vae=None, motion_module=None, wav2vec2=None)))
    model = EMOModel.from_config(arch)
    if not (pre.vae or pre.wav2vec2):
        return model
    vae, audio = model.vae, model.audio_encoder
    if pre.vae:   # sd-vae-ft-mse: the SD-1.5 autoencoder (2 resnets per block)
        from diffusers import AutoencoderKL
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            norm_num_groups=32, sample_size=512)
    if pre.wav2vec2:   # facebook/wav2vec2-base: Wav2Vec2Config's defaults
        audio = AudioEncoder(Wav2Vec2Model(Wav2Vec2Config()), cfg.audio.context)
    a = cfg.audio
    projection = AudioProjection(in_dim=audio.feature_dim, out_dim=cfg.model.cross_attention_dim,
                                 hidden=a.projection_hidden, num_tokens=2 * a.context + 1)
    return EMOModel(cfg, model.backbone, model.reference_net, model.face_locator, model.speed_encoder,
                    projection, vae, audio)


def stage_frames(cfg, stage: int) -> tuple[int, int]:
    """(target frames f, motion frames n) of one training sample: stage 1 trains single frames."""
    return (1, 0) if stage == 1 else (cfg.model.num_frames, cfg.model.num_motion_frames)


def training_forward(model, stage: int, batch: int, sample_size: int, frames: int, motion: int) -> dict:
    """StageLoss's path with every condition present (no drop), returning what the backward needs
    besides the graph: the ReferenceBank (its features are read by the backbone's processors)."""
    from .models.face_locator import box_mask
    s, h = sample_size, sample_size // 8
    with torch.no_grad():
        pixels = torch.rand(batch, motion + frames, 3, s, s) * 2 - 1
        latents = model.encode_frames(pixels)
        reference = model.encode_frames(torch.rand(batch, 3, s, s) * 2 - 1)
    target = latents[:, motion:]
    noise = torch.randn_like(target)
    noisy = target + noise
    t = torch.full((batch,), 500, dtype=torch.long)
    audio = None
    if model.active["audio"]:
        audio = torch.randn(batch, frames, 2 * model.cfg.audio.context + 1, model.audio_encoder.feature_dim)
    speed = torch.full((batch, frames), 0.5) if model.active["speed"] else None
    bank = model.reference_bank(reference, latents[:, :motion] if motion else None)
    mask = box_mask(torch.tensor([[0.2, 0.2, 0.8, 0.8]] * batch), s)
    pred = model.predict_noise(noisy, t, bank, audio, mask, speed)
    loss = F.mse_loss(pred.float(), noise.float())
    assert latents.shape[-1] == h
    return {"loss": loss, "bank": bank}


def measure_activations(model, stage: int, batch: int, sample_size: int, frames: int, motion: int,
                        checkpointing: bool, autocast: torch.dtype | None = torch.bfloat16) -> dict:
    """Bytes autograd keeps after the training forward (see the module docstring). `model` must have
    the stage set; checkpointing is switched on here through a counting checkpoint function."""
    state = {_key(t) for t in (*model.parameters(), *model.buffers())}
    counter = SavedBytes(state)
    already = any(getattr(m, "gradient_checkpointing", False) or getattr(m, "_emo_checkpointed", False)
                  for m in model.modules())
    if already and not checkpointing:
        raise ValueError("gradient checkpointing is already on in this model: measure without it on a fresh one")
    if checkpointing:
        from .training.activation_checkpointing import enable_checkpointing
        enable_checkpointing(model, counter.checkpoint_func())
    mode = CudaAutocast(autocast) if autocast is not None else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t), mode:
        out = training_forward(model, stage, batch, sample_size, frames, motion)
    bank = out["bank"]
    for d in (bank.tokens or {}, bank.motion or {}):
        for v in d.values():
            counter.add(v)
    return {"retained": counter.total, "recompute_peak": counter.block_peak}


# -- bytes of the model state ------------------------------------------------------------------------
@dataclass
class Precision:
    weights: str = "fp32"          # fp32: fp32 weights, autocast (accelerate mixed_precision=bf16)
                                   # bf16: weights and gradients in bf16, fp32 master copy in the optimizer
    optimizer: str = "adamw"       # adamw (2 fp32 states) | adamw8bit (bitsandbytes, 2 one-byte states)
    zero: int = 0                  # 0: replicated; 2: gradients + optimizer sharded (ZeRO-2 level, FSDP2 stage2_fsdp.yaml);
                                   # 3: weights too (ZeRO-3 level, FSDP2 resharding after forward)
    gpus: int = 1

    def __post_init__(self):
        if self.weights not in ("fp32", "bf16") or self.optimizer not in ("adamw", "adamw8bit"):
            raise ValueError("weights: fp32|bf16; optimizer: adamw|adamw8bit")
        if self.zero not in (0, 2, 3) or self.gpus < 1:
            raise ValueError("zero: 0|2|3; gpus >= 1")


def state_bytes(trained: int, frozen: int, p: Precision) -> dict[str, float]:
    """Per-GPU bytes of weights, gradients and optimizer state for `trained` / `frozen` parameters."""
    w = 4 if p.weights == "fp32" else 2
    shard_state = p.gpus if p.zero >= 2 else 1
    shard_weights = p.gpus if p.zero >= 3 else 1
    adam = 8 if p.optimizer == "adamw" else 2 + 8 / 256   # 8-bit: 1 byte per state + fp32 absmax per 256-block
    master = 4 if p.weights == "bf16" else 0
    return {"weights": (trained + frozen) * w / shard_weights,
            "gradients": trained * w / shard_state,
            "optimizer": trained * (adam + master) / shard_state}


# -- the plan ---------------------------------------------------------------------------------------
@dataclass
class StagePlan:
    stage: int
    parameters: dict[str, int] = field(default_factory=dict)
    state: dict[str, float] = field(default_factory=dict)
    activations: dict = field(default_factory=dict)
    total_bytes: float = 0.0
    fits: dict[str, bool] = field(default_factory=dict)


def parameter_table(model, stage: int) -> dict[str, int]:
    from .training.stages import apply_stage
    apply_stage(model, stage)
    out = {}
    for name in ("backbone", "reference_net", "face_locator", "speed_encoder", "audio_projection", "vae",
                 "audio_encoder"):
        ps = list(getattr(model, name).parameters())
        out[f"{name}.trained"] = sum(p.numel() for p in ps if p.requires_grad)
        out[f"{name}.frozen"] = sum(p.numel() for p in ps if not p.requires_grad)
    out["trained"] = sum(v for k, v in out.items() if k.endswith(".trained"))
    out["frozen"] = sum(v for k, v in out.items() if k.endswith(".frozen"))
    return out


def fit_scaling(points: list[tuple[int, int, int]]) -> tuple[float, float, float]:
    """(c, a, b) of bytes = c + B * (a + b * P) from (B, P, bytes) points (least squares)."""
    A = torch.tensor([[1.0, b, b * p] for b, p, _ in points], dtype=torch.float64)
    y = torch.tensor([v for _, _, v in points], dtype=torch.float64)
    sol = torch.linalg.lstsq(A, y[:, None]).solution[:, 0]
    return tuple(float(v) for v in sol)


def activation_scaling(cfg, stage: int, checkpointing: bool, sizes=(64, 128), check_sizes=(96,),
                       frames: int | None = None) -> dict:
    """Measure at reduced sizes, fit the scaling model, check it at other sizes and the full size."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    f, n = stage_frames(cfg, stage)
    f = frames or f
    full = cfg.model.sample_size
    measured = {}
    with FakeTensorMode(allow_non_fake_inputs=False):
        model = plan_model(cfg)
        model.set_stage(stage)
        model.train()

        def at(b, s):
            if (b, s) not in measured:
                measured[(b, s)] = measure_activations(model, stage, b, s, f, n, checkpointing)
            return measured[(b, s)]
        fit_points = [(1, s) for s in sizes] + [(2, sizes[0])]
        for b, s in fit_points:
            at(b, s)
        for s in (*check_sizes, full):
            at(1, s)
    pix = lambda s: (s // 8) ** 2  # noqa: E731
    out = {"model": "bytes = c + B * (a + b * P), P = latent pixels per frame, B = batch",
           "frames": f, "motion_frames": n, "fit_on": [list(p) for p in fit_points],
           "measured": {f"B{bb}_S{s}": v for (bb, s), v in measured.items()}}
    for what in ("retained", "recompute_peak"):
        c, a, b = fit_scaling([(bb, pix(s), measured[(bb, s)][what]) for bb, s in fit_points])
        predict = lambda bb, s: c + bb * (a + b * pix(s))  # noqa: E731
        out[what] = {"c": c, "a": a, "b": b, "per_sample_full": a + b * pix(full),
                     "check": [{"batch": 1, "sample_size": s, "measured": measured[(1, s)][what],
                                "predicted": predict(1, s), "error": predict(1, s) / measured[(1, s)][what] - 1}
                               for s in (*check_sizes, full)]}
    out["full_size"] = measured[(1, full)]
    return out


def make_plan(cfg, stage: int, precision: Precision, batch_size: int | None = None,
              checkpointing: bool = True, scaling: dict | None = None, parameters: dict | None = None) -> StagePlan:
    """The stage's plan; activations are the scaling model's prediction at the config's size.
    `scaling` and `parameters` (from activation_scaling / parameter_table) can be reused across
    precision choices; they are computed when not given."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from .training.config import parse_train
    batch = batch_size or parse_train(cfg.train).stage_batch_size(stage)
    params = parameters
    if params is None:
        with FakeTensorMode():
            params = parameter_table(plan_model(cfg), stage)
    scaling = scaling or activation_scaling(cfg, stage, checkpointing)
    kept = scaling["retained"]["c"] + batch * scaling["retained"]["per_sample_full"]
    # The recomputed block is the largest one, and which block is largest changes with the size (small
    # sizes: a 1280-channel block's weight copies; 512 px: a full-resolution block's activations), so
    # the linear model does not hold for it (see its check): use the count at the config's own size,
    # times the batch (an upper bound: the weight copies in it do not grow with the batch).
    block = batch * scaling["full_size"]["recompute_peak"]
    state = state_bytes(params["trained"], params["frozen"], precision)
    total = CONTEXT_BYTES + (sum(state.values()) + kept + block) * (1 + SLACK)
    return StagePlan(stage=stage, parameters=params, state=state,
                     activations={"batch": batch, "retained": kept, "peak": kept + block,
                                  "checkpointing": checkpointing, "scaling": scaling},
                     total_bytes=total, fits={f"{g} GB": total <= g * 1e9 for g in GPUS_GB})


def format_plan(cfg_name: str, plan: StagePlan, precision: Precision) -> str:
    g = lambda v: f"{v / GiB:7.2f} GiB"  # noqa: E731
    p, a = plan.parameters, plan.activations
    sc = a["scaling"]
    lines = [f"EMO memory plan: {cfg_name}, stage {plan.stage}, batch {a['batch']} per GPU, "
             f"weights {precision.weights}, optimizer {precision.optimizer}, ZeRO {precision.zero} over "
             f"{precision.gpus} GPU(s), gradient checkpointing {'on' if a['checkpointing'] else 'off'}",
             f"parameters: {p['trained'] / 1e6:,.1f} M trained, {p['frozen'] / 1e6:,.1f} M frozen"]
    for name in ("backbone", "reference_net", "face_locator", "speed_encoder", "audio_projection", "vae",
                 "audio_encoder"):
        lines.append(f"  {name:17s} trained {p[name + '.trained'] / 1e6:10,.1f} M   frozen {p[name + '.frozen'] / 1e6:10,.1f} M")
    lines += [f"weights            {g(plan.state['weights'])}",
              f"gradients          {g(plan.state['gradients'])}",
              f"optimizer state    {g(plan.state['optimizer'])}",
              f"activations        {g(a['retained'])} kept for backward + {g(a['peak'] - a['retained'])} "
              f"recomputed block = {g(a['peak'])}",
              f"total per GPU      {g(plan.total_bytes)} (incl. {CONTEXT_BYTES / GiB:.1f} GiB CUDA context, "
              f"{SLACK:.0%} allocator slack)",
              "fits: " + ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in plan.fits.items()),
              f"activation scaling: {sc['model']} (f={sc['frames']}, n={sc['motion_frames']}), fitted on "
              f"(batch, size in px) {sc['fit_on']}:"]
    for what in ("retained", "recompute_peak"):
        fit = sc[what]
        lines.append(f"  {what}: c={fit['c'] / GiB:.3f} GiB, a={fit['a'] / 2**20:.1f} MiB, "
                     f"b={fit['b'] / 2**10:.1f} KiB per latent pixel")
        for chk in fit["check"]:
            lines.append(f"    check at {chk['sample_size']}px: counted {chk['measured'] / GiB:.3f} GiB, "
                         f"predicted {chk['predicted'] / GiB:.3f} GiB ({chk['error']:+.1%})")
    lines.append("A prediction from counted tensors, not a GPU measurement (no GPU was used).")
    return "\n".join(lines)
