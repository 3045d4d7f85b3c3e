"""Attention processors that turn SD-1.5's attention layers into EMO's (diffusers processor API).

Backbone spatial blocks:   attn1 -> ReferenceAttnProcessor (keys/values += ReferenceNet tokens)
                           attn2 -> AudioAttnProcessor (the text cross-attention slot, now attending
                                    to the frame's audio tokens; skipped when audio is dropped)
Backbone temporal blocks:  attn1 -> TemporalSpeedAttnProcessor (AnimateDiff temporal self-attention
                                    + a zero-initialised cross-attention to the speed tokens)
ReferenceNet:              attn1 -> RecordAttnProcessor (plain self-attention that records its input)
                           attn2 -> SkipAttnProcessor (no text in EMO: contributes nothing)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .bank import ForwardContext, RecordContext


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


def _attend(attn, hidden_states: torch.Tensor, context: torch.Tensor,
            key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention of `hidden_states` over `context` with attn's own projections,
    output projection, residual flag and rescale (the layers we use are 3-D). key_mask: (batch,
    context tokens) bool, True where a key may be attended to (None: all)."""
    if hidden_states.ndim != 3:
        raise ValueError(f"EMO processors expect (batch, tokens, channels), got {tuple(hidden_states.shape)}")
    residual, is_self = hidden_states, context is hidden_states
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    if is_self:
        context = hidden_states
    elif attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    q = _heads(attn.to_q(hidden_states), attn.heads)
    k = _heads(attn.to_k(context), attn.heads)
    v = _heads(attn.to_v(context), attn.heads)
    mask = None if key_mask is None else key_mask[:, None, None, :]      # broadcast over heads, queries
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    b = out.shape[0]
    out = out.transpose(1, 2).reshape(b, -1, out.shape[1] * out.shape[3]).to(q.dtype)
    out = attn.to_out[1](attn.to_out[0](out))
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


class ReferenceAttnProcessor:
    """Self-attention whose keys/values are the frame's tokens followed by the ReferenceNet's tokens
    of the same layer. With no reference tokens it is exactly SD's self-attention.

    ctx.reference_mask (B,) selects per sample whether the reference tokens are keys: a masked
    sample attends to its own tokens only, which is SD's self-attention again (the softmax over
    the remaining keys), so guidance's conditional and unconditional passes can share one batch."""

    def __init__(self, name: str, ctx: ForwardContext):
        self.name, self.ctx = name, ctx

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        ref = self.ctx.reference.get(self.name) if self.ctx.reference else None
        if ref is None:
            return _attend(attn, hidden_states, hidden_states)
        frames = hidden_states.shape[0] // ref.shape[0]   # batch is (B * F), batch-major
        context = torch.cat([hidden_states, ref.to(hidden_states.dtype).repeat_interleave(frames, 0)], 1)
        key_mask = None
        sees = self.ctx.reference_mask
        if sees is not None and not bool(sees.all()):
            if sees.shape[0] != ref.shape[0]:
                raise ValueError(f"reference_mask for {sees.shape[0]} samples, reference tokens for {ref.shape[0]}")
            own = torch.ones(hidden_states.shape[:2], dtype=torch.bool, device=hidden_states.device)
            other = sees.to(hidden_states.device).repeat_interleave(frames)[:, None].expand(-1, ref.shape[1])
            key_mask = torch.cat([own, other], 1)                  # (B*F, N + L)
        return _attend(attn, hidden_states, context, key_mask)


class AudioAttnProcessor:
    """Cross-attention from each frame's tokens to that frame's audio tokens (B*F, T_a, D).
    Absent audio (dropped for guidance, or stage 1) -> the layer contributes nothing; so does it
    for the samples that ctx.audio_mask (B,) leaves out."""

    def __init__(self, name: str, ctx: ForwardContext):
        self.name, self.ctx = name, ctx

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        audio = self.ctx.audio_tokens
        if audio is None or not self.ctx.audio_enabled:
            return torch.zeros_like(hidden_states)
        if audio.shape[0] != hidden_states.shape[0]:
            raise ValueError(f"audio tokens for {audio.shape[0]} frames, layer {self.name} sees "
                             f"{hidden_states.shape[0]}")
        out = _attend(attn, hidden_states, audio.to(hidden_states.dtype))
        hears = self.ctx.audio_mask
        if hears is not None and not bool(hears.all()):
            frames = hidden_states.shape[0] // hears.shape[0]
            keep = hears.to(out.device).repeat_interleave(frames)[:, None, None]
            out = torch.where(keep, out, torch.zeros((), dtype=out.dtype, device=out.device))
        return out


class SkipAttnProcessor:
    """A removed layer: returns zeros, so the block's residual passes its input through."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        return torch.zeros_like(hidden_states)


class RecordAttnProcessor:
    """ReferenceNet self-attention that keeps its (normalised) input tokens of the reference images."""

    def __init__(self, name: str, record: RecordContext):
        self.name, self.record = name, record

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        if self.record.n_ref:
            self.record.tokens[self.name] = hidden_states[: self.record.n_ref]
        return _attend(attn, hidden_states, hidden_states)


class TemporalSpeedAttnProcessor(nn.Module):
    """AnimateDiff temporal self-attention plus EMO's speed cross-attention.

    Tokens arrive as (B*h*w, L, C): one sequence along time per latent pixel (L = frames, or
    motion frames + frames). For the speed branch all pixels and times of one video form one query
    sequence (B, h*w*L, C) attending to that video's F speed tokens (B, F, D_s), which carry
    their frame position; its output projection starts at zero, so the branch begins as a no-op.
    The parameters live on the processor (IP-Adapter style), saved with the backbone.
    """

    def __init__(self, ctx: ForwardContext, hidden_size: int, speed_dim: int, heads: int):
        super().__init__()
        self.ctx, self.heads = ctx, heads
        self.to_q = nn.Linear(hidden_size, hidden_size, bias=False)
        self.to_k = nn.Linear(speed_dim, hidden_size, bias=False)
        self.to_v = nn.Linear(speed_dim, hidden_size, bias=False)
        self.to_out = nn.Linear(hidden_size, hidden_size)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        # nn.Module defines __call__ -> forward; keep diffusers' calling convention explicit.
        return self.forward(attn, hidden_states)

    def forward(self, attn, hidden_states):
        out = _attend(attn, hidden_states, hidden_states)
        speed = self.ctx.speed_tokens
        if speed is None or not self.ctx.speed_enabled:
            return out
        b = speed.shape[0]
        bhw, length, c = hidden_states.shape
        q = hidden_states.reshape(b, (bhw // b) * length, c)
        q = _heads(self.to_q(q), self.heads)
        speed = speed.to(hidden_states.dtype)
        k, v = _heads(self.to_k(speed), self.heads), _heads(self.to_v(speed), self.heads)
        s = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, c)
        return out + self.to_out(s).reshape(bhw, length, c)
