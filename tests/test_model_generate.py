"""Inference on the tiny config: clip loop, ReferenceNet once per clip, mp4 with audio, CLI."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from emo.cli import main as cli
from emo.generate import generate_batch, generate_video
from emo.media import load_audio, probe_video, save_wav
from emo.models.emo_model import EMOModel
from emo.pipeline import EMOPipeline, PortraitError


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt") / "tiny"
    result = CliRunner().invoke(cli, ["init", "--config", "emo/configs/tiny.yaml", "--out", str(d)])
    assert result.exit_code == 0, result.output
    return d


@pytest.fixture(scope="module")
def pipe(checkpoint):
    return EMOPipeline.from_checkpoint(checkpoint, device="cpu")


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
            + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def test_reference_net_runs_once_per_clip(pipe):
    calls = {"ref": 0}
    batches = []
    h1 = pipe.model.reference_net.register_forward_hook(lambda *a: calls.__setitem__("ref", calls["ref"] + 1))
    h2 = pipe.model.backbone.register_forward_hook(lambda m, args, out: batches.append(args[0].shape[0]))
    try:
        image = np.random.default_rng(0).integers(0, 255, (72, 72, 3), dtype=np.uint8)
        frames = pipe(image, speech_like(1.0), fps=25, num_steps=3, guidance=2.0, crop=False)
    finally:
        h1.remove()
        h2.remove()
    assert frames.shape == (25, 64, 64, 3) and frames.dtype == np.uint8
    clips = 3                                              # ceil(25 / 12)
    assert calls["ref"] == clips
    assert batches == [2] * clips * 3                      # steps, conditional + unconditional as one batch


def test_same_seed_same_video_other_seed_differs(pipe):
    image = np.full((64, 64, 3), 120, np.uint8)
    a = pipe(image, speech_like(0.3), num_steps=2, seed=4, crop=False)
    b = pipe(image, speech_like(0.3), num_steps=2, seed=4, crop=False)
    c = pipe(image, speech_like(0.3), num_steps=2, seed=5, crop=False)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_generate_writes_mp4_as_long_as_the_audio(checkpoint, tmp_path):
    wav = tmp_path / "speech.wav"
    save_wav(wav, speech_like(1.3))
    image = tmp_path / "face.png"
    from PIL import Image
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (96, 80, 3), dtype=np.uint8)).save(image)
    out = generate_video(checkpoint, image, wav, tmp_path / "out.mp4", fps=25, steps=2, crop=False)
    info = probe_video(out)
    assert info.has_audio and info.audio_rate == 16000
    assert abs(info.n_frames - 1.3 * 25) <= 1
    assert abs(info.duration - 1.3) <= 1 / 25 + 0.03
    assert abs(len(load_audio(out)) / 16000 - 1.3) < 0.05


def test_generate_batch_skips_a_bad_item_and_keeps_the_rest(pipe, tmp_path):
    wav = tmp_path / "a.wav"
    save_wav(wav, speech_like(0.4))
    image = np.full((64, 64, 3), 90, np.uint8)
    written = generate_batch(pipe, [("good", image, str(wav)),
                                    {"id": "bad", "image": str(tmp_path / "missing.png"), "audio": str(wav)}],
                             tmp_path / "gen", steps=1, crop=False)
    assert set(written) == {"good"} and written["good"].is_file()
    assert not (tmp_path / "gen" / "bad.mp4").exists()


def test_face_crop_needs_a_face(pipe, mediapipe_dir):
    with pytest.raises(PortraitError, match="no face"):
        pipe(np.zeros((128, 128, 3), np.uint8), speech_like(0.2), num_steps=1)


@pytest.mark.realmedia
def test_cli_generate_real_portrait(checkpoint, shared_data, mediapipe_dir, tmp_path):
    audio = tmp_path / "speech.wav"
    save_wav(audio, load_audio(shared_data / "audio" / "en_speech_RD_Radio31_000.wav", end=0.6))
    out = tmp_path / "real.mp4"
    result = CliRunner().invoke(cli, ["generate", "--image", str(shared_data / "images" / "real_vox_749400016.jpg"),
                                      "--audio", str(audio), "--checkpoint", str(checkpoint), "--out", str(out),
                                      "--steps", "2", "--seed", "1"])
    assert result.exit_code == 0, result.output
    info = probe_video(out)
    assert info.width == 64 and abs(info.n_frames - 15) <= 1 and info.has_audio


def test_cli_generate_missing_checkpoint_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(cli, ["generate", "--image", __file__, "--audio", __file__,
                                      "--checkpoint", str(tmp_path), "--out", str(tmp_path / "x.mp4")])
    assert result.exit_code != 0 and "not an EMO checkpoint" in result.output
    assert not (tmp_path / "x.mp4").exists()


def test_checkpoint_layout_matches_contract_2(checkpoint):
    for name in ("config.yaml", "meta.json", "backbone/config.json", "reference_net/config.json",
                 "face_locator/config.json", "speed_encoder/config.json", "audio_projection/config.json",
                 "backbone/diffusion_pytorch_model.safetensors", "vae/config.json", "audio_encoder/config.json"):
        assert (checkpoint / name).is_file(), name
    assert not list(checkpoint.glob("**/*.bin")) and not list(checkpoint.glob("**/*.pt"))
    assert isinstance(EMOModel.from_checkpoint(checkpoint), EMOModel)


# -- batched guidance, per-clip audio, streaming, precision, settings ------------------------------

@pytest.fixture(scope="module")
def perturbed_pipe():
    """A tiny model whose zero-initialised layers (audio-attention output, temporal proj_out, speed
    branch, face locator output) are made non-zero, so that reference and audio both change the
    prediction and a mask that leaked either one would show."""
    import torch
    model = EMOModel.from_config("tiny", seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in ("backbone", "reference_net", "face_locator", "speed_encoder", "audio_projection"):
            for p in getattr(model, name).parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return EMOPipeline(model)


def _clip_inputs(pipe, seed=0):
    import torch
    model = pipe.model
    g = torch.Generator().manual_seed(seed)
    f, n, h = model.cfg.model.num_frames, model.cfg.model.num_motion_frames, model.cfg.model.sample_size // 8
    ref = torch.randn(1, 4, h, h, generator=g)
    motion = torch.randn(1, n, 4, h, h, generator=g)
    latents = torch.randn(1, f, 4, h, h, generator=g)
    audio = torch.randn(1, f, 2 * model.cfg.audio.context + 1, model.audio_encoder.feature_dim, generator=g)
    from emo.models.face_locator import box_mask
    mask = box_mask(torch.tensor([[0.2, 0.25, 0.7, 0.8]]), model.cfg.model.sample_size)
    speed = torch.full((1, f), 0.7)
    with torch.no_grad():
        bank = model.reference_bank(ref, motion)
    return latents, bank, audio, mask, speed


def test_batched_guidance_equals_two_passes(perturbed_pipe):
    import torch
    pipe, model = perturbed_pipe, perturbed_pipe.model
    latents, bank, audio, mask, speed = _clip_inputs(pipe)
    t = torch.tensor(601)
    with torch.no_grad():
        batched = pipe.guided_noise(latents, t, bank.with_unconditional(), audio, mask, speed, 3.5, batched=True)
        sequential = pipe.guided_noise(latents, t, bank, audio, mask, speed, 3.5, batched=False)
        # each condition on its own moves the prediction far more than the tolerance below
        full = model.predict_noise(latents, t.reshape(1), bank, audio, mask, speed)
        no_audio = model.predict_noise(latents, t.reshape(1), bank, None, mask, speed)
        no_ref = model.predict_noise(latents, t.reshape(1), bank.without_reference(), audio, mask, speed)
    assert (full - no_audio).abs().max() > 1e-2 and (full - no_ref).abs().max() > 1e-2
    assert torch.allclose(batched, sequential, rtol=1e-5, atol=1e-5), (batched - sequential).abs().max()


def test_reference_mask_selects_per_sample(perturbed_pipe):
    """Batch of two with the reference only for the second sample: each half equals its own pass."""
    import torch
    from emo.models.bank import ReferenceBank
    model = perturbed_pipe.model
    latents, bank, audio, mask, speed = _clip_inputs(perturbed_pipe, seed=3)
    two = lambda x: torch.cat([x, x])  # noqa: E731
    flipped = ReferenceBank(tokens={k: two(v) for k, v in bank.tokens.items()},
                            motion={k: two(v) for k, v in bank.motion.items()},
                            reference_mask=torch.tensor([False, True]))
    t = torch.tensor([300, 300])
    with torch.no_grad():
        both = model.predict_noise(two(latents), t, flipped, two(audio), two(mask), two(speed),
                                   audio_mask=torch.tensor([True, False]))
        first = model.predict_noise(latents, t[:1], bank.without_reference(), audio, mask, speed)
        second = model.predict_noise(latents, t[:1], bank, None, mask, speed)
    assert torch.allclose(both[:1], first, atol=1e-5) and torch.allclose(both[1:], second, atol=1e-5)


def test_clip_audio_equals_the_whole_video_stacked(pipe):
    import torch
    from emo.pipeline import VideoRequest
    wav = speech_like(1.1, seed=2)
    f = pipe.num_frames
    req = VideoRequest(waveform=wav, n_frames=28, n_clips=3, fps=25.0, steps=1, guidance=1.0, seed=0)
    rows = pipe.prepare_audio_rows(req)
    whole = pipe.model.audio_features(wav, 3 * f, 25.0)
    assert rows.shape == (3 * f, pipe.model.audio_encoder.feature_dim)
    for clip in range(3):
        assert torch.equal(pipe.clip_audio(rows, clip)[0], whole[clip * f:(clip + 1) * f].to(rows.dtype))


def test_frames_reach_the_writer_clip_by_clip(pipe, tmp_path, monkeypatch):
    """generate_video hands the encoder each clip as it is decoded: when the writer takes the first
    frame only one clip exists, so memory does not grow with the audio's length."""
    import emo.generate as gen_mod
    decoded, seen = [], []
    original = pipe.decode_latents

    def counting(latents):
        decoded.append(1)
        return original(latents)

    def fake_write(out, frames, fps, audio=None, audio_rate=16000):
        for i, _ in enumerate(frames):
            seen.append((i, len(decoded)))
        return out
    monkeypatch.setattr(pipe, "decode_latents", counting)
    monkeypatch.setattr(gen_mod, "write_video", fake_write)
    generate_video(pipe, np.full((64, 64, 3), 100, np.uint8), speech_like(1.0), tmp_path / "x.mp4",
                   steps=1, guidance=1.0, crop=False)
    assert len(seen) == 25 and len(decoded) == 3
    assert seen[0] == (0, 1) and seen[12] == (12, 2) and seen[24] == (24, 3)


def test_bf16_generation_on_cpu(checkpoint):
    """The bf16 path end to end on the CPU (a smoke test of the dtype plumbing; speed is a GPU
    matter): trained networks in bf16, wav2vec2 in fp32, frames close to the fp32 ones."""
    import torch
    p16 = EMOPipeline.from_checkpoint(checkpoint, device="cpu", dtype="bf16")
    p32 = EMOPipeline.from_checkpoint(checkpoint, device="cpu", dtype="fp32")
    assert p16.model.backbone.dtype == torch.bfloat16 and p16.model.vae.dtype == torch.bfloat16
    assert next(p16.model.audio_encoder.parameters()).dtype == torch.float32
    image = np.random.default_rng(5).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    a = p16(image, speech_like(0.5), num_steps=2, crop=False).astype(np.float32)
    b = p32(image, speech_like(0.5), num_steps=2, crop=False).astype(np.float32)
    assert a.shape == b.shape == (12, 64, 64, 3)
    # bf16 keeps 8 significant bits (~0.4% per rounding): a few grey levels, far from a wrong video
    assert np.abs(a - b).mean() < 4.0, np.abs(a - b).mean()


def test_unknown_generation_setting_is_an_error_before_any_work(checkpoint, tmp_path):
    from emo.typed_config import ConfigError
    with pytest.raises(ConfigError, match="num_steps"):
        generate_batch(checkpoint, [("a", "x.png", "y.wav")], tmp_path / "out", num_steps=3)
    with pytest.raises(ConfigError, match="dtype must be one of"):
        generate_batch(checkpoint, [("a", "x.png", "y.wav")], tmp_path / "out", dtype="half")
    assert not (tmp_path / "out").exists()


def test_cli_generate_dtype_option(checkpoint, tmp_path):
    wav = tmp_path / "s.wav"
    save_wav(wav, speech_like(0.3))
    image = tmp_path / "face.png"
    from PIL import Image
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(image)
    res = CliRunner().invoke(cli, ["generate", "--image", str(image), "--audio", str(wav), "--checkpoint",
                                   str(checkpoint), "--out", str(tmp_path / "o.mp4"), "--steps", "1",
                                   "--no-crop", "--dtype", "bf16", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert probe_video(tmp_path / "o.mp4").n_frames == 8
    res = CliRunner().invoke(cli, ["generate", "--image", str(image), "--audio", str(wav), "--checkpoint",
                                   str(checkpoint), "--out", str(tmp_path / "p.mp4"), "--dtype", "int8"])
    assert res.exit_code != 0 and "int8" in res.output


def test_pretrained_paths_follow_the_checkpoint_not_the_working_directory(tmp_path, monkeypatch):
    """A checkpoint whose VAE and wav2vec2 are named pretrained folders (as sd15's are) loads from
    any working directory, and a re-saved copy elsewhere still finds them."""
    import torch
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    monkeypatch.chdir(project)
    model = EMOModel.from_config("tiny", seed=0)
    model.vae.save_pretrained(project / "models" / "vae")
    model.audio_encoder.save_pretrained(project / "models" / "wav2vec2")
    model.cfg.model.pretrained.vae = "models/vae"               # relative to where training runs
    model.cfg.model.pretrained.wav2vec2 = "models/wav2vec2"
    model.save_checkpoint("runs/a/step-000001")
    ckpt = project / "runs" / "a" / "step-000001"
    assert not (ckpt / "vae").exists()                           # named pretrained: not copied
    stored = (ckpt / "config.yaml").read_text()
    assert "vae: ../../../models/vae" in stored and "wav2vec2: ../../../models/wav2vec2" in stored
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "models").mkdir(parents=True)                   # a decoy that must not be picked
    monkeypatch.chdir(elsewhere)
    loaded = EMOModel.from_checkpoint(ckpt)
    for a, b in zip(loaded.vae.parameters(), model.vae.parameters()):
        assert torch.equal(a, b)
    loaded.save_checkpoint(tmp_path / "copy")                    # re-saved from the other directory
    assert "vae: ../project/models/vae" in (tmp_path / "copy" / "config.yaml").read_text()
    (project / "models" / "vae").rename(project / "models" / "vae-moved")
    with pytest.raises(FileNotFoundError, match=str(ckpt / "../../../models/vae").replace(".", r"\.")):
        EMOModel.from_checkpoint(ckpt)


def test_download_commands_use_the_current_hf_cli():
    from emo.models.pretrained import SOURCES
    assert all(s["get"].startswith("hf download ") for s in SOURCES.values())
