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
