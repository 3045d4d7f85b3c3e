"""EMOPipeline: one portrait + speech audio -> video frames.

Clip after clip of f frames until the audio ends. Each clip: ONE ReferenceNet pass (reference
image + the last n generated frames as motion frames; zero features for the first clip), then DDIM
with classifier-free guidance, the unconditional pass dropping the reference tokens and the audio
(motion frames, face mask and speed are kept). The conditional and unconditional passes run as one
batch of two (per-sample reference and audio masks in the attention processors).

Named steps, as in diffusers' pipelines: `check_inputs` -> `prepare_portrait` / `prepare_face_mask`
/ `prepare_reference_latents` / `prepare_audio_rows` / `prepare_speeds` (once per video) -> per clip
`prepare_latents`, `denoise` (the DDIM loop, `guided_noise` per step), `decode_latents`.
Memory does not grow with the audio's length: `iter_clips` yields each clip's frames as soon as
they are decoded (the writer encodes them), and the audio features stay on the host, unstacked,
with only the clip at hand (and its neighbours) moved to the device.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from diffusers import DDIMScheduler

from .face_mask import inference_face_box
from .media.audio import SPEECH_RATE, load_audio
from .media.crop import box_in_crop, crop_square, square_around
from .models.audio_encoder import stack_neighbours
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


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Networks cast to the generation dtype; the frozen wav2vec2 stays in fp32 (it runs once per video).
CAST = ("backbone", "reference_net", "face_locator", "speed_encoder", "audio_projection", "vae")


def default_dtype(device: str | torch.device) -> str:
    """bf16 on CUDA (fp16 where the GPU has no bf16), fp32 on the CPU."""
    if torch.device(device).type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    name = dtype or default_dtype(device)
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[name]


def enable_tf32() -> None:
    """TF32 for fp32 matmuls and convolutions on CUDA (Ampere and later): the parts that stay fp32."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):          # torch >= 2.9 spelling
        matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"
    else:
        matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


@dataclass
class VideoRequest:
    """What check_inputs makes of the caller's arguments: everything one video needs."""
    waveform: np.ndarray       # mono float32 at 16 kHz
    n_frames: int              # frames returned (the audio's duration at fps, or as asked)
    n_clips: int
    fps: float
    steps: int
    guidance: float
    seed: int


class EMOPipeline:

    def __init__(self, model: EMOModel):
        self.model = model.eval()
        self.scheduler = DDIMScheduler.from_config(model.noise_scheduler_config)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device | None = None,
                        dtype: str | torch.dtype | None = None, weights: str | None = None) -> "EMOPipeline":
        """dtype: "bf16" | "fp16" | "fp32" (or a torch dtype); default bf16 on CUDA, fp32 on the CPU.
        In fp16 a VAE whose config asks for it (force_upcast, as SD's does) stays in fp32.
        weights: "ema" | "raw"; default EMA when the checkpoint has them (EMOModel.from_checkpoint)."""
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dt = resolve_dtype(dtype, device)
        model = EMOModel.from_checkpoint(path, weights=weights)
        if device.type == "cuda":
            enable_tf32()
        model.to(device)
        for name in CAST:
            net = getattr(model, name)
            if name == "vae" and dt == torch.float16 and getattr(net.config, "force_upcast", False):
                continue
            if next(net.parameters()).dtype != dt:
                net.to(dt)
        return cls(model)

    @property
    def num_frames(self) -> int:
        return self.model.cfg.model.num_frames

    # -- once per video -------------------------------------------------------------------------
    def check_inputs(self, audio, fps: float | None, num_steps: int | None, guidance: float | None,
                     seed: int | None, n_frames: int | None) -> VideoRequest:
        """Settings filled from the checkpoint's inference section; a clear error for bad values."""
        inf = self.model.cfg.inference
        fps = float(fps or inf.fps)
        steps = int(num_steps or inf.steps)
        guidance = float(inf.guidance if guidance is None else guidance)
        if fps <= 0 or steps < 1:
            raise ValueError(f"fps must be > 0 and num_steps >= 1, got fps={fps}, num_steps={steps}")
        # np.asarray: no copy of a float32 waveform (a song is tens of MB)
        wav = load_audio(audio, SPEECH_RATE) if not isinstance(audio, np.ndarray) else np.asarray(audio, np.float32)
        if wav.ndim != 1 or wav.size == 0:
            raise ValueError("audio must be a non-empty mono waveform")
        if n_frames is not None and n_frames < 1:
            raise ValueError(f"n_frames must be >= 1, got {n_frames}")
        total = int(n_frames or max(1, round(wav.size / SPEECH_RATE * fps)))
        return VideoRequest(waveform=wav, n_frames=total, n_clips=math.ceil(total / self.num_frames), fps=fps,
                            steps=steps, guidance=guidance, seed=int(inf.seed if seed is None else seed))

    def prepare_portrait(self, image, crop: bool) -> tuple[np.ndarray, np.ndarray]:
        """(S x S RGB crop, face box x0 y0 x1 y1 in [0, 1] of the crop)."""
        return crop_portrait(load_image(image), self.model.cfg.model.sample_size, crop)

    def prepare_face_mask(self, face_box: np.ndarray) -> torch.Tensor:
        """(1, 1, S, S) mask of the region the face may occupy. This is the one place where the
        portrait's single box becomes the inference mask (e.g. widened to the training distribution)."""
        model = self.model
        face_box = inference_face_box(face_box, model)     # the training mask's size (emo.face_mask)
        return box_mask(torch.from_numpy(np.asarray(face_box, np.float32))[None],
                        model.cfg.model.sample_size).to(model.device, model.dtype)

    def prepare_reference_latents(self, portrait: np.ndarray) -> torch.Tensor:
        """(1, C, h, w) VAE latents of the portrait crop."""
        model = self.model
        pixels = torch.from_numpy(np.array(portrait)).permute(2, 0, 1)[None].float().div(127.5).sub(1)
        return model.encode_frames(pixels.to(model.device, model.dtype))

    def prepare_audio_rows(self, request: VideoRequest) -> torch.Tensor:
        """(n_clips * f, D) float32 wav2vec2 features, one row per frame, on the host. wav2vec2
        sees the whole audio (its own windows); neighbours are stacked per clip (`clip_audio`)."""
        padded = request.n_clips * self.num_frames
        return self.model.audio_encoder.frame_features(request.waveform, padded, request.fps).cpu()

    def prepare_speeds(self, speed, request: VideoRequest) -> torch.Tensor:
        padded = request.n_clips * self.num_frames
        return torch.from_numpy(speed_per_frame(speed, padded, self.model.cfg.inference.speed))

    def clip_audio(self, audio_rows: torch.Tensor, clip: int) -> torch.Tensor:
        """(1, f, 2m+1, D) on the device: clip `clip`'s frames with their stacked neighbours, the
        same values as stacking the whole video's rows and slicing (edges replicated at the video's
        ends only)."""
        f, m = self.num_frames, self.model.audio_encoder.context
        lo, hi = clip * f, (clip + 1) * f
        a, b = max(0, lo - m), min(audio_rows.shape[0], hi + m)
        stacked = stack_neighbours(audio_rows[a:b][None], m, dim=1)[:, lo - a:hi - a]
        return stacked.to(self.model.device, self.model.dtype)

    # -- per clip -------------------------------------------------------------------------------
    def prepare_latents(self, reference_latents: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(1, f, C, h, w) fp32 noise on the device; drawn on the CPU so a seed gives the same video
        on any device."""
        shape = (1, self.num_frames, *reference_latents.shape[1:])
        noise = torch.randn(shape, generator=generator)
        return noise.to(self.model.device) * self.scheduler.init_noise_sigma

    def guided_noise(self, latents: torch.Tensor, t: torch.Tensor, bank, audio: torch.Tensor,
                     face_mask: torch.Tensor, speed: torch.Tensor, guidance: float,
                     batched: bool = True) -> torch.Tensor:
        """eps_uncond + guidance * (eps_cond - eps_uncond), fp32; "eps" is the network's output, the
        noise or v (model.cfg.model.prediction_type, which self.scheduler reads). batched: both passes as one batch
        of two, `bank` being `bank.with_unconditional()`; otherwise two calls (the plain bank)."""
        model = self.model
        tt = t.reshape(1).to(model.device)
        if guidance == 1.0:
            return model.predict_noise(latents, tt, bank, audio, face_mask, speed).float()
        if batched:
            two = lambda x: torch.cat([x, x])      # noqa: E731
            hears = torch.tensor([True, False])
            eps = model.predict_noise(two(latents), tt.repeat(2), bank, two(audio), two(face_mask), two(speed),
                                      audio_mask=hears).float()
            cond, uncond = eps.chunk(2)
        else:
            cond = model.predict_noise(latents, tt, bank, audio, face_mask, speed).float()
            uncond = model.predict_noise(latents, tt, bank.without_reference(), None, face_mask, speed).float()
        return uncond + guidance * (cond - uncond)

    def denoise(self, latents: torch.Tensor, bank, audio: torch.Tensor, face_mask: torch.Tensor,
                speed: torch.Tensor, request: VideoRequest, generator: torch.Generator) -> torch.Tensor:
        """The DDIM loop for one clip; latents stay fp32 (the scheduler's arithmetic), the
        networks run in their own dtype."""
        sched = self.scheduler
        sched.set_timesteps(request.steps, device=self.model.device)
        if request.guidance != 1.0:
            bank = bank.with_unconditional()
        for t in sched.timesteps:
            eps = self.guided_noise(latents, t, bank, audio, face_mask, speed, request.guidance)
            latents = sched.step(eps, t, latents, eta=self.model.cfg.inference.eta, generator=generator).prev_sample
        return latents

    def decode_latents(self, latents: torch.Tensor) -> np.ndarray:
        """(1, f, C, h, w) -> (f, S, S, 3) uint8 on the host."""
        pixels = self.model.decode_latents(latents)[0]                          # (f, 3, S, S) in [-1, 1]
        return ((pixels.float() + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()

    # -- the whole video ------------------------------------------------------------------------
    @torch.no_grad()
    def iter_clips(self, image, audio, fps: float | None = None, num_steps: int | None = None,
                   guidance: float | None = None, speed=None, seed: int | None = None, crop: bool = True,
                   n_frames: int | None = None, progress: bool = False) -> Iterator[np.ndarray]:
        """Yield the video clip by clip: (<= f, S, S, 3) uint8 frames, T frames in all."""
        model = self.model
        request = self.check_inputs(audio, fps, num_steps, guidance, seed, n_frames)
        portrait, face_box = self.prepare_portrait(image, crop)
        face_mask = self.prepare_face_mask(face_box)
        reference_latents = self.prepare_reference_latents(portrait)
        audio_rows = self.prepare_audio_rows(request)
        speeds = self.prepare_speeds(speed, request)
        generator = torch.Generator(device="cpu").manual_seed(request.seed)
        f, n = self.num_frames, model.cfg.model.num_motion_frames
        motion, remaining = None, request.n_frames
        for clip in range(request.n_clips):
            bank = model.reference_bank(reference_latents, motion)
            latents = self.prepare_latents(reference_latents, generator)
            clip_speed = speeds[clip * f:(clip + 1) * f][None].to(model.device)
            latents = self.denoise(latents, bank, self.clip_audio(audio_rows, clip), face_mask, clip_speed,
                                   request, generator)
            motion = latents[:, -n:] if n else None
            frames = self.decode_latents(latents)[:remaining]
            remaining -= len(frames)
            if progress:
                log.info("clip %d/%d done", clip + 1, request.n_clips)
            yield frames

    def __call__(self, image, audio, fps: float | None = None, num_steps: int | None = None,
                 guidance: float | None = None, speed=None, seed: int | None = None, crop: bool = True,
                 n_frames: int | None = None, progress: bool = False) -> np.ndarray:
        """image: path or RGB uint8 array; audio: path or mono float32 at 16 kHz.
        Returns (T, S, S, 3) uint8 frames, T = round(audio seconds * fps) unless n_frames is given.
        (A long video is better written as it comes: `iter_clips`, as emo.generate does.)"""
        return np.concatenate(list(self.iter_clips(image, audio, fps, num_steps, guidance, speed, seed, crop,
                                                   n_frames, progress)))
