"""Audio features: frozen wav2vec2 -> one embedding per video frame -> neighbours stacked.

The hidden states of every transformer block of wav2vec2 are concatenated (D = layers * hidden),
resampled from wav2vec2's 50 steps per second to the video's frame times, and each frame's
feature is stacked with its m neighbours on each side (m = 2: 5 frames). AudioProjection (trained)
maps them to the tokens the backbone's audio-attention reads.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn

MIN_SAMPLES = 400   # wav2vec2's receptive field: shorter inputs give no output step
HOP = 320           # samples per wav2vec2 step at 16 kHz (50 steps per second)


def tiny_wav2vec2_config(hidden: int = 32, layers: int = 2, conv_dim: int = 16):
    """A small random Wav2Vec2 with the real feature extractor's strides (320 samples per step)."""
    from transformers import Wav2Vec2Config
    return Wav2Vec2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                          intermediate_size=2 * hidden, conv_dim=(conv_dim,) * 7,
                          conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
                          num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                          feat_extract_norm="group", do_stable_layer_norm=False,
                          apply_spec_augment=False, vocab_size=8)


def stack_neighbours(x: torch.Tensor, m: int, dim: int = 1) -> torch.Tensor:
    """(B, T, ...) -> (B, T, 2m+1, ...): each step with its m neighbours on each side, edges
    replicated. The audio features' context window (also reused for the speed layers' bucket
    codes); a cache of unstacked (T, D) features is stacked with it when read."""
    t = x.shape[dim]
    idx = torch.arange(t, device=x.device)[:, None] + torch.arange(-m, m + 1, device=x.device)[None]
    idx = idx.clamp(0, t - 1)                                           # (T, 2m+1)
    out = x.index_select(dim, idx.reshape(-1))
    return out.reshape(*x.shape[:dim], t, 2 * m + 1, *x.shape[dim + 1:])


class AudioEncoder(nn.Module):
    """Frozen wav2vec2 wrapper. Not trained: kept in eval mode and without gradients."""

    def __init__(self, wav2vec2: nn.Module, context: int = 2, sample_rate: int = 16000,
                 chunk_seconds: float = 10.0, margin_seconds: float = 2.0):
        super().__init__()
        self.wav2vec2 = wav2vec2.eval().requires_grad_(False)
        self.context, self.sample_rate = context, sample_rate
        # Self-attention over a whole song costs O(T^2): long audio runs in windows, each seeing
        # `margin_seconds` of context on both sides, of which only the centre is kept. Windows of at
        # most 10 + 2 * 2 = 14 s stay within the crops wav2vec2 was pretrained on (<= 15.6 s), cover
        # every training clip (3-12 s) in one pass, and bound the convolutional front end's transient
        # memory (wav2vec2-base: 512 channels at 3,200 steps per second, ~40 MB per second of window
        # in fp32), so generation memory does not depend on the audio's length.
        self.chunk_seconds, self.margin_seconds = chunk_seconds, margin_seconds

    @classmethod
    def tiny(cls, hidden=32, layers=2, conv_dim=16, context=2, seed: int = 0) -> "AudioEncoder":
        from transformers import Wav2Vec2Model
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = Wav2Vec2Model(tiny_wav2vec2_config(hidden, layers, conv_dim))
        return cls(model, context)

    @classmethod
    def from_pretrained(cls, path_or_id: str, context: int = 2) -> "AudioEncoder":
        from transformers import Wav2Vec2Model
        return cls(Wav2Vec2Model.from_pretrained(path_or_id), context)

    def save_pretrained(self, path) -> None:
        self.wav2vec2.save_pretrained(path, safe_serialization=True)

    def train(self, mode: bool = True):   # always frozen
        return super().train(False)

    @property
    def feature_dim(self) -> int:
        c = self.wav2vec2.config
        return c.hidden_size * c.num_hidden_layers

    @torch.no_grad()
    def forward(self, waveform: np.ndarray | torch.Tensor, n_frames: int, fps: float) -> torch.Tensor:
        """Mono 16 kHz waveform -> (n_frames, 2m+1, feature_dim) float32 on the encoder's device."""
        return stack_neighbours(self.frame_features(waveform, n_frames, fps)[None], self.context, dim=1)[0]

    @torch.no_grad()
    def frame_features(self, waveform: np.ndarray | torch.Tensor, n_frames: int, fps: float) -> torch.Tensor:
        """Mono 16 kHz waveform -> (n_frames, feature_dim) float32, one row per video frame, before
        the neighbours are stacked (5x smaller: what generation keeps for a whole song)."""
        if n_frames <= 0:
            raise ValueError(f"n_frames must be positive, got {n_frames}")
        source = torch.as_tensor(np.asarray(waveform, dtype=np.float32)).reshape(-1)
        # The track cut or zero-padded to exactly the video's duration (feature time = frame time)
        # and normalised as wav2vec2 expects; built window by window (`_window`), never whole, so a
        # long song is not held twice.
        target = max(int(round(n_frames / fps * self.sample_rate)), MIN_SAMPLES)
        used = source[:target]
        total = used.sum(dtype=torch.float64)
        squares = sum((torch.dot(c.double(), c.double()) for c in used.split(HOP * 5000)),
                      torch.zeros((), dtype=torch.float64))     # in pieces: no double-size copy
        mean = total / target
        var = (squares - target * mean ** 2) / max(target - 1, 1)      # unbiased, as torch.std
        track = (used, target, float(mean), float(var.clamp_min(0).sqrt()))
        feats = self._steps(track)                              # (1, T_w, layers * hidden)
        feats = F.interpolate(feats.transpose(1, 2), size=n_frames, mode="linear", align_corners=False)
        return feats.transpose(1, 2)[0].float()                 # (n_frames, D)

    @staticmethod
    def _window(track, lo: int, hi: int) -> torch.Tensor:
        """Samples [lo, hi) of the cut/padded, normalised track (a fresh tensor)."""
        used, target, mean, std = track
        seg = used[lo:min(hi, used.numel())]
        seg = F.pad(seg, (0, (hi - lo) - seg.numel())) if seg.numel() < hi - lo else seg.clone()
        return seg.sub_(mean).div_(std + 1e-7)

    def _hidden(self, wav: torch.Tensor) -> torch.Tensor:
        dev = next(self.wav2vec2.parameters()).device
        out = self.wav2vec2(wav[None].to(dev), output_hidden_states=True)
        return torch.cat(out.hidden_states[1:], dim=-1)

    def _steps(self, track) -> torch.Tensor:
        n = track[1]
        chunk = int(self.chunk_seconds * self.sample_rate) // HOP * HOP
        if n <= chunk + 2 * self.margin_seconds * self.sample_rate:
            return self._hidden(self._window(track, 0, n))
        margin = int(self.margin_seconds * self.sample_rate) // HOP * HOP
        parts = []
        for start in range(0, n, chunk):
            lo, hi = max(0, start - margin), min(n, start + chunk + margin)
            seg = self._window(track, lo, hi)
            if seg.numel() < MIN_SAMPLES:
                seg = F.pad(seg, (0, MIN_SAMPLES - seg.numel()))
            h = self._hidden(seg)
            first = (start - lo) // HOP
            keep = -(-min(chunk, n - start) // HOP)    # steps of this window's centre
            parts.append(h[:, first:first + keep])
        return torch.cat(parts, dim=1)


class AudioProjection(ModelMixin, ConfigMixin):
    """(B, F, 2m+1, D_audio) stacked wav2vec2 features -> (B, F, 2m+1, cross_attention_dim) tokens."""

    @register_to_config
    def __init__(self, in_dim: int, out_dim: int, hidden: int = 64, num_tokens: int = 5):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.SiLU(), nn.Linear(hidden, out_dim))
        self.position = nn.Parameter(torch.zeros(num_tokens, out_dim))   # which neighbour a token is
        nn.init.normal_(self.position, std=0.02)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.ndim != 4 or audio.shape[-2] != self.position.shape[0]:
            raise ValueError(f"audio features must be (B, F, {self.position.shape[0]}, D), got {tuple(audio.shape)}")
        x = self.mlp(self.norm(audio.to(self.position.dtype)))
        return x + self.position
