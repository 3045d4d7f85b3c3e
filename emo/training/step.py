"""One training step's loss: encode, noise, condition (with CFG dropping), predict, MSE.

`StageLoss` wraps the EMOModel so that accelerate/DDP sees one `forward` (DDP only synchronises
gradients of work done inside forward). All randomness (noise, timesteps, condition dropping)
comes from the generator passed in, whose state the checkpoint saves.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from .stages import USES_AUDIO, USES_MOTION, USES_SPEED

LOSS_WEIGHTINGS = ("none", "truncated_snr")


class StageLoss(torch.nn.Module):
    def __init__(self, model, stage: int, n_motion: int, drop_reference_prob: float = 0.0,
                 drop_audio_prob: float = 0.0, fps: float = 25.0, drop_both_prob: float = 0.0,
                 loss_weighting: str = "none"):
        super().__init__()
        self.model = model
        self.stage = stage
        self.n_motion = n_motion if USES_MOTION[stage] else 0
        self.drop_reference_prob = drop_reference_prob if stage > 1 else 0.0
        self.drop_audio_prob = drop_audio_prob if stage > 1 else 0.0
        self.drop_both_prob = drop_both_prob if stage > 1 else 0.0
        self.fps = fps
        self.scheduler = DDPMScheduler.from_config(model.noise_scheduler_config)
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss_weighting must be one of {LOSS_WEIGHTINGS}, got {loss_weighting!r}")
        self.loss_weighting = loss_weighting

    @torch.no_grad()
    def _encode(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        frames = self.model.encode_frames(batch["frames"])                   # (B, n+f, 4, h, w)
        reference = self.model.encode_frames(batch["reference"][:, None])[:, 0]
        return frames, reference

    @torch.no_grad()
    def _audio(self, batch: dict, n_target: int) -> torch.Tensor | None:
        if not USES_AUDIO[self.stage]:
            return None
        if "audio" in batch:
            return batch["audio"]
        # Waveform windows carry m frames of context on each side (see ClipDataset._audio).
        feats = []
        for wave in batch["waveform"]:
            total = int(round(len(wave) * self.fps / 16000))
            m = (total - n_target) // 2
            f = self.model.audio_features(wave.float().cpu().numpy(), n_frames=total, fps=self.fps)
            feats.append(torch.as_tensor(f)[m:m + n_target])
        return torch.stack(feats).to(batch["frames"].device)

    def _coin(self, prob: float, generator: torch.Generator) -> bool:
        return bool(torch.rand((), generator=generator, device=generator.device).item() < prob)

    def drops(self, generator: torch.Generator) -> tuple[bool, bool]:
        """(drop reference, drop audio) for one step. The joint drop (the unconditional branch of
        classifier-free guidance) has its own probability; otherwise each condition is dropped on
        its own coin. All three coins are drawn every step in stages 2/3, so the generator's stream
        does not depend on the probabilities."""
        if self.stage == 1:
            return False, False
        both = self._coin(self.drop_both_prob, generator)
        ref = self._coin(self.drop_reference_prob, generator)
        audio = self._coin(self.drop_audio_prob, generator)
        return both or ref, both or audio

    def forward(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        latents, reference = self._encode(batch)
        n = self.n_motion
        target = latents[:, n:]
        B, f = target.shape[:2]
        dev = generator.device
        noise = torch.randn(target.shape, generator=generator, device=dev).to(target)
        timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (B,),
                                  generator=generator, device=dev).to(target.device)
        noisy = self.scheduler.add_noise(target, noise, timesteps)

        audio = self._audio(batch, f)
        # Classifier-free guidance: conditions are dropped for the whole (per-process) batch, the way
        # the pipeline's unconditional pass drops them (bank without reference tokens, audio=None).
        drop_ref, drop_audio = self.drops(generator)
        speed = batch["speed"] if USES_SPEED[self.stage] else None

        motion, valid = None, None
        if n:
            valid = batch["motion_valid"]
            motion = latents[:, :n] if bool(valid.any()) else None   # None: zero features (first clip)
        bank = self.model.reference_bank(reference, motion)
        if motion is not None and not bool(valid.all()) and bank.motion is not None:
            # Windows at a clip's start have no motion frames: zero their features, as at inference.
            w = valid.to(target.dtype)[:, :, None, None, None]
            bank = type(bank)(tokens=bank.tokens, motion={k: v * w.to(v.dtype) for k, v in bank.motion.items()})
        if drop_ref:
            bank = bank.without_reference()
        pred = self.model.predict_noise(noisy, timesteps, bank, audio=None if drop_audio else audio,
                                        face_mask=batch["face_mask"], speed=speed)
        goal = self.prediction_target(target, noise, timesteps)
        err = F.mse_loss(pred.float(), goal.float(), reduction="none").mean(dim=(2, 3, 4))  # (B, f)
        err = err * self.timestep_weight(timesteps)[:, None].to(err)
        weight = batch["frame_valid"].to(err.dtype)          # held frames of short clips: no loss
        return (err * weight).sum() / weight.sum().clamp_min(1.0)

    def prediction_target(self, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the network learns to output for `clean` noised with `noise` at `timesteps`: the noise
        (epsilon) or v = sqrt(ab) noise - sqrt(1 - ab) clean, per the model's prediction_type (the
        samplers read the same setting from noise_scheduler_config). With v the loss is the clean
        latent's error weighted SNR + 1, and the output at high noise is ~ -x0, which sampling does
        not amplify; epsilon's x0 error is the output's times sqrt(1 - ab) / sqrt(ab) (~15 at t = 999)."""
        kind = self.scheduler.config.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "v_prediction":
            return self.scheduler.get_velocity(clean, noise, timesteps)
        raise ValueError(f"prediction_type {kind!r} is not supported for training")

    def timestep_weight(self, timesteps: torch.Tensor) -> torch.Tensor:
        """(B,) loss weight of each sample's timestep (`train.loss_weighting`).

        "none": plain MSE on the prediction. "truncated_snr" (Salimans & Ho 2022, progressive
        distillation): the error of the implied clean latent x0 is weighted max(SNR, 1) instead of
        epsilon-prediction's SNR, i.e. the epsilon MSE times max(1, 1/SNR). Below SNR 1 (t > ~540
        in SD's schedule) epsilon-prediction weights x0 errors by SNR, 0.04 at t = 800: the
        noise levels where a generated frame's colours and layout are decided, and where only the
        reference can tell them, barely count (issue 12)."""
        if self.loss_weighting == "none":
            return torch.ones(timesteps.shape, dtype=torch.float32, device=timesteps.device)
        if self.scheduler.config.prediction_type != "epsilon":
            raise ValueError("truncated_snr weighting is defined here for epsilon prediction")
        ab = self.scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
        snr = ab / (1 - ab)
        return torch.clamp(1.0 / snr, min=1.0)


@torch.no_grad()
def fixed_loss(loss_fn: StageLoss, batch: dict, seed: int = 0, repeats: int = 4) -> float:
    """The loss on one batch averaged over `repeats` fixed draws of noise and timesteps: a
    deterministic yardstick (the training loss itself is noisy from step to step)."""
    device = batch["frames"].device
    values = []
    for r in range(repeats):
        g = torch.Generator(device=device).manual_seed(seed * 1000 + r)
        values.append(float(loss_fn(batch, g)))
    return sum(values) / len(values)
