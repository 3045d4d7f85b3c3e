"""EMO networks on the tiny config: shapes, zero-init identity, pretrained-weight loading, stages,
save/load round trip. CPU, one thread, random weights."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from diffusers import MotionAdapter, UNet2DConditionModel

from emo.config import load_config
from emo.models.backbone import plain_unet_reference
from emo.models.emo_model import EMOModel, unet2d_config
from emo.models.pretrained import PretrainedMissing, load_motion_module_state_dict
from emo.models.audio_encoder import stack_neighbours

F = 12


@pytest.fixture(scope="module")
def cfg():
    return load_config("tiny")


@pytest.fixture(scope="module")
def model(cfg):
    return EMOModel.from_config(cfg).eval()


def perturb(module: torch.nn.Module, seed: int = 1, scale: float = 0.05) -> None:
    """Give zero-initialised layers non-zero weights, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def inputs(model, b=1, f=F, seed=0):
    g = torch.Generator().manual_seed(seed)
    noisy = torch.randn(b, f, 4, 8, 8, generator=g)
    audio = torch.randn(b, f, 5, model.audio_encoder.feature_dim, generator=g)
    mask = torch.zeros(b, 1, 64, 64)
    mask[:, :, 16:48, 16:48] = 1
    speed = torch.rand(b, f, generator=g) * 2
    return noisy, torch.full((b,), 500), audio, mask, speed


def test_shapes_through_every_module(model):
    b = 2
    pixels = torch.rand(b, 3, 3, 64, 64) * 2 - 1
    lat = model.encode_frames(pixels)
    assert lat.shape == (b, 3, 4, 8, 8)
    assert model.decode_latents(lat).shape == (b, 3, 3, 64, 64)
    feats = model.audio_features(np.random.default_rng(0).standard_normal(16000).astype(np.float32), F, 25.0)
    assert feats.shape == (F, 5, model.audio_encoder.feature_dim)
    assert model.audio_projection(feats[None]).shape == (1, F, 5, model.cfg.model.cross_attention_dim)
    assert model.speed_encoder(torch.rand(b, F)).shape == (b, F, model.cfg.speed.embed_dim)
    assert model.face_locator(torch.ones(b, 1, 64, 64)).shape == (b, 4, 8, 8)
    bank = model.reference_bank(lat[:, 0], lat[:, :2].repeat(1, 2, 1, 1, 1))
    assert len(bank.tokens) == len([n for n in model.backbone.unet.attn_processors
                                    if n.endswith("attn1.processor") and "motion" not in n])
    assert set(bank.motion) == set(model.backbone.motion_names)
    assert all(v.shape[:2] == (b, 4) for v in bank.motion.values())
    noisy, t, audio, mask, speed = inputs(model, b)
    out = model.predict_noise(noisy, t.expand(b), bank, audio, mask, speed)
    assert out.shape == noisy.shape and torch.isfinite(out).all()


def test_speed_buckets_and_neighbours(model):
    enc = model.speed_encoder
    w = torch.tensor([[0.0, 1.0, 4.0]])
    codes = enc.buckets(w)
    c = torch.tensor(model.cfg.speed.centres)
    r = torch.tensor(model.cfg.speed.radii)
    assert torch.allclose(codes[0, 1], torch.tanh((1.0 - c) / r * 3))
    assert codes.shape == (1, 3, len(c))
    st = stack_neighbours(torch.arange(4.0)[None], 2)          # edges replicated
    assert st[0, 0].tolist() == [0, 0, 0, 1, 2] and st[0, 3].tolist() == [1, 2, 3, 3, 3]


@pytest.fixture(scope="module")
def sd_dir(cfg, tmp_path_factory):
    """A tiny random UNet2DConditionModel saved with save_pretrained: SD-1.5's real key names."""
    torch.manual_seed(123)
    unet = UNet2DConditionModel(**unet2d_config(cfg))
    d = tmp_path_factory.mktemp("sd") / "unet"
    unet.save_pretrained(d)
    return d


def test_identity_with_plain_unet_at_init(cfg, sd_dir):
    """No reference bank; any audio, speed and face mask: each frame's prediction equals the plain
    UNet2DConditionModel (same saved weights) with its text cross-attention removed."""
    c = copy.deepcopy(cfg)
    c.model.pretrained.unet = str(sd_dir)
    model = EMOModel.from_config(c).eval()
    plain = plain_unet_reference(UNet2DConditionModel.from_pretrained(sd_dir)).eval()
    noisy, t, audio, mask, speed = inputs(model)
    with torch.no_grad():
        ours = model.predict_noise(noisy, t, None, audio, mask, speed)[0]
        ref = plain(noisy[0], t.expand(F), encoder_hidden_states=torch.zeros(F, 1, 32)).sample
    err = (ours - ref).abs().max().item()
    print(f"identity max abs error: {err:.3e}")
    assert err < 1e-5
    # The weights really came from the file, in both UNets.
    key = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    assert torch.equal(model.backbone.unet.state_dict()[key], plain.state_dict()[key])
    assert torch.equal(model.reference_net.unet.state_dict()[key], plain.state_dict()[key])
    # ...and the identity is not vacuous: the zero-initialised layers do matter once trained.
    perturb(model.face_locator.out)
    with torch.no_grad():
        assert (model.predict_noise(noisy, t, None, audio, mask, speed)[0] - ref).abs().max() > 1e-4


def _tiny_adapter(cfg) -> MotionAdapter:
    m = cfg.model
    torch.manual_seed(7)
    return MotionAdapter(block_out_channels=tuple(m.block_out_channels), motion_layers_per_block=m.layers_per_block,
                         motion_num_attention_heads=m.motion_num_attention_heads, motion_norm_num_groups=m.norm_num_groups,
                         motion_max_seq_length=m.motion_max_seq_length, use_motion_mid_block=m.use_motion_mid_block)


def test_motion_adapter_loads_into_temporal_modules(cfg, tmp_path):
    adapter = _tiny_adapter(cfg)
    adapter.save_pretrained(tmp_path / "mm")
    c = copy.deepcopy(cfg)
    c.model.pretrained.motion_module = str(tmp_path / "mm")
    model = EMOModel.from_config(c)
    ours, theirs = model.backbone.unet.state_dict(), adapter.state_dict()
    assert len(theirs) > 0 and all(torch.equal(ours[k], v) for k, v in theirs.items())
    # AnimateDiff's original .ckpt key names (read with torch.load(weights_only=True)) map the same way.
    original = {k.replace(".motion_modules.0.", ".motion_modules.0.temporal_transformer.")
                 .replace(".motion_modules.1.", ".motion_modules.1.temporal_transformer.")
                 .replace(".attn1.", ".attention_blocks.0.").replace(".attn2.", ".attention_blocks.1.")
                 .replace(".norm1.", ".norms.0.").replace(".norm2.", ".norms.1.").replace(".norm3.", ".ff_norm."): v
                for k, v in theirs.items()}
    torch.save(original, tmp_path / "mm.ckpt")
    converted = load_motion_module_state_dict(str(tmp_path / "mm.ckpt"))
    assert set(converted) == set(theirs)


def test_missing_pretrained_file_names_it_and_its_source(cfg, tmp_path):
    c = copy.deepcopy(cfg)
    c.model.pretrained.unet = str(tmp_path / "nowhere" / "unet")
    c.model.pretrained.vae = str(tmp_path / "novae")
    with pytest.raises(PretrainedMissing) as err:
        EMOModel.from_config(c)
    msg = str(err.value)
    assert "nowhere" in msg and "novae" in msg and "stable-diffusion-v1-5" in msg and "sd-vae-ft-mse" in msg


def test_reference_and_motion_frames_change_the_output(model):
    m = copy.deepcopy(model)
    for mod in m.backbone.temporal_modules():   # as if loaded from AnimateDiff / trained
        perturb(mod.proj_out, seed=3)
    noisy, t, audio, mask, speed = inputs(m)
    ref = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        first = m.reference_bank(ref, None)                       # first clip: zero motion features
        later = m.reference_bank(ref, torch.randn(1, 4, 4, 8, 8))
        a = m.predict_noise(noisy, t, first, audio, mask, speed)
        b = m.predict_noise(noisy, t, later, audio, mask, speed)
        c = m.predict_noise(noisy, t, first.without_reference(), audio, mask, speed)
    assert (a - b).abs().max() > 1e-4        # motion frames reach the current frames
    assert (a - c).abs().max() > 1e-4        # reference-attention uses the ReferenceNet tokens


def test_stages_switch_layers_and_gradients(model):
    m = copy.deepcopy(model)
    m.set_stage(3)
    trainable = {n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"backbone", "speed_encoder"}
    bb = {n for n, p in m.backbone.named_parameters() if p.requires_grad}
    assert bb and all(".motion_modules." in n for n in bb)
    m.set_stage(1)
    assert not any(p.requires_grad for mod in m.backbone.temporal_modules() for p in mod.parameters())
    assert not any(p.requires_grad for p in m.audio_projection.parameters())
    assert all(not p.requires_grad for p in list(m.vae.parameters()) + list(m.audio_encoder.parameters()))
    # Stage 1: temporal layers are skipped, whatever their weights.
    noisy, t, audio, mask, speed = inputs(m, f=1)
    with torch.no_grad():
        before = m.predict_noise(noisy, t, None, audio, mask, speed)
        for mod in m.backbone.temporal_modules():
            perturb(mod, seed=5)
        assert torch.equal(before, m.predict_noise(noisy, t, None, audio, mask, speed))
        m.set_stage(3)
        assert not torch.equal(before, m.predict_noise(noisy, t, None, audio, mask, speed))


def test_save_load_round_trip_gives_identical_outputs(model, tmp_path):
    m = copy.deepcopy(model)
    for name in ("backbone", "face_locator", "speed_encoder", "audio_projection"):
        perturb(getattr(m, name), seed=11, scale=0.01)
    m.set_stage(2)
    m.save_checkpoint(tmp_path / "ck", meta={"step": 7})
    m2 = EMOModel.from_checkpoint(tmp_path / "ck")
    assert m2.stage == 2
    noisy, t, audio, mask, speed = inputs(m)
    ref = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        a = m.predict_noise(noisy, t, m.reference_bank(ref, None), audio, mask, speed)
        b = m2.predict_noise(noisy, t, m2.reference_bank(ref, None), audio, mask, speed)
        wav = np.random.default_rng(1).standard_normal(8000).astype(np.float32)
        assert torch.equal(m.audio_features(wav, 6, 25.0), m2.audio_features(wav, 6, 25.0))
        pix = torch.rand(1, 2, 3, 64, 64) * 2 - 1
        assert torch.equal(m.encode_frames(pix), m2.encode_frames(pix))
    sd1, sd2 = m.state_dict(), m2.state_dict()
    assert sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    # Bit-exact: from_checkpoint copies loaded tensors into torch's own (aligned) memory.
    assert torch.equal(a, b)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_stage2_gradients_reach_reference_net_temporal_and_audio_layers(model, checkpointing):
    m = copy.deepcopy(model).train()
    m.set_stage(2)
    if checkpointing:          # what training switches on: diffusers' and the temporal modules'
        from emo.training.activation_checkpointing import enable_checkpointing
        assert enable_checkpointing(m) > 0
    noisy, t, audio, mask, speed = inputs(m, f=4)
    bank = m.reference_bank(torch.randn(1, 4, 8, 8), torch.randn(1, 4, 4, 8, 8))
    m.predict_noise(noisy, t, bank, audio, mask, speed).square().mean().backward()
    grads = {n: p.grad for n, p in m.named_parameters() if p.requires_grad}
    nonzero = lambda key: any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if key in n)  # noqa: E731
    assert nonzero("reference_net.unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k")
    assert nonzero("motion_modules.0.proj_out")                  # zero-init output still learns
    assert nonzero("attn2.to_out.0.weight")                      # audio-attention output
    assert nonzero("face_locator.out")
    assert not any(".processor." in n for n in grads)            # speed layers wait for stage 3


def test_long_audio_runs_in_windows_with_the_same_timing(model):
    enc = copy.deepcopy(model.audio_encoder)
    t = np.arange(3 * 16000) / 16000
    wav = (np.sin(2 * np.pi * 200 * t) * (t > 1.5)).astype(np.float32)   # silence, then a tone at 1.5 s
    whole = enc(wav, 75, 25.0)
    enc.chunk_seconds, enc.margin_seconds = 0.8, 0.2
    windows = enc(wav, 75, 25.0)
    assert windows.shape == whole.shape
    # Same onset frame in both: the energy of the features jumps where the tone starts.
    onset = lambda x: int(torch.argmax((x[1:, 2] - x[:-1, 2]).norm(dim=-1)))  # noqa: E731
    assert abs(onset(whole) - onset(windows)) <= 1 and abs(onset(whole) - 37) <= 2


@pytest.mark.parametrize("seconds, n_frames", [(0.7, 20), (3.3, 80), (3.3, 90)])
def test_audio_features_window_by_window_equal_the_whole_track_normalised(seconds, n_frames):
    """frame_features normalises window by window (no copy of a whole song); the result equals
    normalising the whole cut/padded track first (short, long = several windows, padded)."""
    import numpy as np
    import torch.nn.functional as F
    from emo.models.audio_encoder import AudioEncoder
    enc = AudioEncoder.tiny()
    enc.chunk_seconds, enc.margin_seconds = 1.0, 0.2           # several windows within 3.3 s
    wav = np.random.default_rng(0).standard_normal(int(seconds * 16000)).astype(np.float32) * 0.1
    w = torch.as_tensor(wav)
    target = max(int(round(n_frames / 25 * 16000)), 400)
    w = F.pad(w[:target], (0, max(0, target - w.numel())))
    w = (w - w.mean()) / (w.std() + 1e-7)
    steps = enc._steps((w, target, 0.0, 1.0 - 1e-7))          # already normalised: identity window
    expected = F.interpolate(steps.transpose(1, 2), size=n_frames, mode="linear", align_corners=False)
    got = enc.frame_features(wav, n_frames, 25.0)
    assert torch.allclose(got, expected.transpose(1, 2)[0], atol=1e-5)
