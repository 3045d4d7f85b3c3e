"""EMOPipeline: one portrait + speech audio -> video frames.

Clip after clip of f frames until the audio ends. Each clip: ONE ReferenceNet pass (reference
image + the last n generated frames as motion frames; zero features for the first clip), then DDIM
with classifier-free guidance, the unconditional pass dropping the reference tokens and the audio
(motion frames, face mask and speed are kept).
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler

from .face_mask import inference_face_box
from .media.audio import SPEECH_RATE, load_audio
from .media.crop import box_in_crop, crop_square, square_around
from .models.emo_model import EMOModel
from .models.face_locator import box_mask

log = logging.getLogger(__name__)


class PortraitError(ValueError):
    pass


def load_image(image: str | os.PathLike | np.ndarray) -> np.ndarray:
    if isinstance(image, np.ndarray):
        arr = image
    else:
        from PIL import Image
        if not Path(image).is_file():
            raise PortraitError(f"portrait not found: {image}")
        arr = np.asarray(Image.open(image).convert("RGB"))
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise PortraitError(f"portrait must be an RGB uint8 (H, W, 3) array, got {arr.dtype} {arr.shape}")
    return arr


def crop_portrait(rgb: np.ndarray, size: int, crop: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The training crop rule (emo.media.crop) around the largest face -> (size x size crop, face
    box x0 y0 x1 y1 in [0, 1] of the crop). crop=False: the whole image resized, the face box
    taken as the central 60% (for inputs that are already face crops)."""
    if not crop:
        from PIL import Image
        out = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BICUBIC))
        return out, np.array([0.2, 0.2, 0.8, 0.8], np.float32)
    from .media.face import FaceAnalyser
    with FaceAnalyser(max_faces=1, video=False) as fa:
        faces = fa.analyse(rgb)
    if not faces:
        raise PortraitError("no face found in the portrait (use crop=False for an already-cropped face)")
    square = square_around(faces[0].box)
    box = np.clip(box_in_crop(faces[0].box, square, size) / size, 0, 1).astype(np.float32)
    return crop_square(rgb, square, size), box


def speed_per_frame(speed, n_frames: int, default: float) -> np.ndarray:
    if speed is None:
        speed = default
    arr = np.asarray(speed, dtype=np.float32).reshape(-1)
    if arr.size == 1:
        return np.full(n_frames, float(arr[0]), np.float32)
    if arr.size < n_frames:   # per-frame values shorter than the video: hold the last one
        arr = np.concatenate([arr, np.full(n_frames - arr.size, arr[-1], np.float32)])
    return arr[:n_frames]


class EMOPipeline:

    def __init__(self, model: EMOModel):
        self.model = model.eval()
        self.scheduler = DDIMScheduler.from_config(model.noise_scheduler_config)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None) -> "EMOPipeline":
        model = EMOModel.from_checkpoint(path)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model.to(device)
        if dtype is not None:
            for name in ("backbone", "reference_net", "face_locator", "speed_encoder", "audio_projection", "vae"):
                getattr(model, name).to(dtype)
        return cls(model)

    @torch.no_grad()
    def __call__(self, image, audio, fps: float | None = None, num_steps: int | None = None,
                 guidance: float | None = None, speed=None, seed: int | None = None, crop: bool = True,
                 n_frames: int | None = None, progress: bool = False) -> np.ndarray:
        """image: path or RGB uint8 array; audio: path or mono float32 at 16 kHz.
        Returns (T, S, S, 3) uint8 frames, T = round(audio seconds * fps) unless n_frames is given."""
        model, inf = self.model, self.model.cfg.inference
        fps = float(fps or inf.fps)
        num_steps = int(num_steps or inf.steps)
        guidance = float(inf.guidance if guidance is None else guidance)
        seed = int(inf.seed if seed is None else seed)
        wav = load_audio(audio, SPEECH_RATE) if not isinstance(audio, np.ndarray) else audio.astype(np.float32)
        if wav.ndim != 1 or wav.size == 0:
            raise ValueError("audio must be a non-empty mono waveform")
        total = int(n_frames or max(1, round(wav.size / SPEECH_RATE * fps)))
        size = model.cfg.model.sample_size
        portrait, face_box = crop_portrait(load_image(image), size, crop)
        face_box = inference_face_box(face_box, model)     # the training mask's size (emo.face_mask)

        f, n = model.cfg.model.num_frames, model.cfg.model.num_motion_frames
        n_clips = math.ceil(total / f)
        padded = n_clips * f
        dev, dt = model.device, model.dtype
        # Audio features for the whole (padded) video at once: wav2vec2 sees full context.
        feats = model.audio_features(wav, padded, fps).to(dev, dt)               # (padded, 2m+1, D)
        speeds = torch.from_numpy(speed_per_frame(speed, padded, inf.speed)).to(dev)
        ref = torch.from_numpy(np.array(portrait)).permute(2, 0, 1)[None].float().div(127.5).sub(1).to(dev, dt)
        ref_lat = model.encode_frames(ref)                                        # (1, C, h, w)
        mask = box_mask(torch.from_numpy(face_box)[None], size).to(dev, dt)

        gen = torch.Generator(device="cpu").manual_seed(seed)
        sched = self.scheduler
        sched.set_timesteps(num_steps, device=dev)
        motion = None
        frames = []
        for c in range(n_clips):
            bank = model.reference_bank(ref_lat, motion)
            uncond = bank.without_reference()
            a = feats[c * f:(c + 1) * f][None]
            s = speeds[c * f:(c + 1) * f][None]
            lat = torch.randn((1, f, *ref_lat.shape[1:]), generator=gen).to(dev, dt) * sched.init_noise_sigma
            for t in sched.timesteps:
                tt = t.reshape(1).to(dev)
                eps = model.predict_noise(lat, tt, bank, a, mask, s)
                if guidance != 1.0:
                    eps_u = model.predict_noise(lat, tt, uncond, None, mask, s)
                    eps = eps_u + guidance * (eps - eps_u)
                lat = sched.step(eps, t, lat, eta=inf.eta, generator=gen).prev_sample
            motion = lat[:, -n:] if n else None
            pix = model.decode_latents(lat)[0]                                    # (f, 3, S, S)
            frames.append(((pix.float() + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy())
            if progress:
                log.info("clip %d/%d done", c + 1, n_clips)
        return np.concatenate(frames)[:total]
