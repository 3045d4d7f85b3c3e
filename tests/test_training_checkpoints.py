"""Checkpoints of a training run: EMA weights where generation loads them, a kill while a step's
folder is replaced, a second run into the same folder, the face-mask ratio in meta.json."""
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from emo.config import load_config
from emo.fileio import atomic_folder, recover_folder, replace_folder
from emo.models.emo_model import EMA_FILE, EMOModel
from emo.training.checkpointing import resolve_checkpoint
from emo.training.synthetic import make_synthetic_dataset
from emo.training.train import main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("ckpt") / "data", frame_counts=[24, 18], size=64)


def _cfg(**train):
    cfg = load_config("emo/configs/tiny.yaml")
    cfg.train.update({"save_every": 0, "log_every": 1, "lr": 1e-3, "lr_warmup_steps": 0, "vae_fit_steps": 0, **train})
    return cfg


@pytest.fixture(scope="module")
def ema_run(data, tmp_path_factory):
    """Stages 2 (2 steps) and 3 (2 steps) with EMA (decay 0.5: far from the raw weights)."""
    out = tmp_path_factory.mktemp("ema") / "run"
    cfg = _cfg(stages={2: {"steps": 2}, 3: {"steps": 2}}, ema={"enabled": True, "decay": 0.5})
    return main(cfg, data, out, log_with=None), cfg


def test_ema_weights_load_by_default_and_raw_on_request(ema_run):
    result, _ = ema_run
    ckpt = result.checkpoints[-1]
    ema = load_file(str(ckpt / EMA_FILE))
    by_default, raw = EMOModel.from_checkpoint(ckpt), EMOModel.from_checkpoint(ckpt, weights="raw")
    assert by_default.weights == "ema" and raw.weights == "raw"
    p_ema, p_raw = dict(by_default.named_parameters()), dict(raw.named_parameters())
    assert all(torch.equal(p_ema[n], t) for n, t in ema.items())
    differ = [n for n in ema if not torch.equal(p_raw[n], ema[n])]
    assert len(differ) > len(ema) // 2          # decay 0.5 over 2 steps: the EMA is not the raw weights
    untouched = [n for n in p_raw if n not in ema]
    assert untouched and all(torch.equal(p_ema[n], p_raw[n]) for n in untouched)
    assert json.loads((ckpt / "meta.json").read_text())["ema"] is True


def test_ema_carries_across_stages(ema_run):
    result, _ = ema_run
    stage2, stage3 = (load_file(str(c / EMA_FILE)) for c in result.checkpoints)
    groups = EMOModel.from_checkpoint(result.checkpoints[-1]).parameter_groups()
    # Parameters stage 3 does not train keep the EMA value stage 2 ended with (not the raw value)...
    spatial = [n for n in stage2 if groups[n] == "backbone_spatial"]
    assert spatial and all(torch.equal(stage2[n], stage3[n]) for n in spatial)
    # ...and stage 3's file holds every parameter averaged so far (stage 2's groups + speed).
    assert set(stage2) < set(stage3)
    assert {groups[n] for n in stage3} == {"backbone_spatial", "reference_net", "face_locator",
                                           "temporal", "audio_layers", "speed"}


def test_checkpoint_without_ema_loads_raw_and_refuses_ema(data, tmp_path):
    result = main(_cfg(stages={1: {"steps": 1}}), data, tmp_path / "run", log_with=None)
    ckpt = result.checkpoints[-1]
    assert not (ckpt / EMA_FILE).exists()
    assert EMOModel.from_checkpoint(ckpt).weights == "raw"
    with pytest.raises(FileNotFoundError, match="no EMA weights"):
        EMOModel.from_checkpoint(ckpt, weights="ema")


def test_face_mask_scale_is_measured_and_stored(ema_run):
    result, _ = ema_run
    meta = json.loads((result.checkpoints[-1] / "meta.json").read_text())
    scale = meta["face_mask_scale"]
    assert scale["clips"] == 2 and scale["x"] > 1.05 and scale["y"] == pytest.approx(1.0, abs=0.02)
    assert EMOModel.from_checkpoint(result.checkpoints[-1]).face_mask_scale == scale


# ---- a kill while a step's folder is replaced ---------------------------------------------------
class Killed(Exception):
    pass


def test_kill_between_the_two_renames_leaves_a_loadable_latest(data, tmp_path, monkeypatch):
    """A resumed run writes step-000002 again. Killed after the old folder was renamed aside and
    before the new one was renamed into place, the run folder still leads to a loadable checkpoint
    (the old one, put back), whose weights are those first saved at step 2."""
    cfg = _cfg(stages={1: {"steps": 3}}, save_steps=[1, 2])
    out = tmp_path / "run"
    main(cfg, data, out, log_with=None, max_steps=2)
    before = {n: p.clone() for n, p in EMOModel.from_checkpoint(out / "step-000002").named_parameters()}
    real_replace = os.replace

    def replace(src, dst):
        if Path(src).name == ".step-000002.tmp":      # the second rename: the new folder into place
            raise Killed
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(Killed):
        main(cfg, data, out, log_with=None, resume=out / "step-000001", max_steps=1)
    monkeypatch.setattr(os, "replace", real_replace)
    assert not (out / "step-000002").exists()          # the moment of the kill: the name is empty
    ckpt = resolve_checkpoint(out)                      # latest -> step-000002, put back
    assert ckpt == out / "step-000002"
    after = dict(EMOModel.from_checkpoint(ckpt).named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before)
    # and the run goes on from it
    rest = main(cfg, data, out, log_with=None)
    assert rest.resumed_from == out / "step-000002" and rest.step == 3


def test_atomic_folder_keeps_the_old_folder_on_error(tmp_path):
    dst = tmp_path / "thing"
    with atomic_folder(dst) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_folder(dst) as tmp:
            (tmp / "a").write_text("2")
            raise RuntimeError
    assert (dst / "a").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["thing"]
    new = tmp_path / "new"
    new.mkdir()
    (new / "a").write_text("3")
    replace_folder(new, dst)
    assert (dst / "a").read_text() == "3" and not new.exists() and [p.name for p in tmp_path.iterdir()] == ["thing"]
    assert recover_folder(dst) is False


# ---- a second run into the same folder ---------------------------------------------------------
def test_second_train_into_a_run_folder_continues_or_says_complete(data, tmp_path):
    from emo.cli import main as emo_cli
    cfg = _cfg(stages={1: {"steps": 2}, 2: {"steps": 1}})
    config = tmp_path / "cfg.yaml"
    cfg.to_yaml(config)
    out = tmp_path / "run"
    args = ["train", "--config", str(config), "--dataset", str(data), "--out", str(out), "--no-log"]
    first = CliRunner().invoke(emo_cli, args + ["--max-steps", "2"])
    assert first.exit_code == 0 and "trained to step 2" in first.output, first.output
    second = CliRunner().invoke(emo_cli, args)           # no --resume: continues, as --resume would
    assert second.exit_code == 0, second.output
    assert "continued from" in second.output and "trained to step 3" in second.output
    assert sorted(p.name for p in out.glob("step-*")) == ["step-000002", "step-000003"]
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    third = CliRunner().invoke(emo_cli, args)            # complete: says so, writes nothing
    assert third.exit_code == 0, third.output
    assert "already complete at step 3" in third.output and "trained to" not in third.output
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps
    log = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3]                               # the log was continued, not restarted


def test_cli_generate_weights_option(ema_run, data, tmp_path):
    """`generate --weights ema|raw` reaches the model: the two videos differ; EMA on a checkpoint
    without it is a clear error."""
    import numpy as np
    from PIL import Image

    from emo.cli import main as emo_cli
    from emo.media.audio import save_wav
    from emo.media.video import read_frames
    result, _ = ema_run
    ckpt = result.checkpoints[-1]
    wav, image = tmp_path / "a.wav", tmp_path / "face.png"
    t = np.arange(8000) / 16000
    save_wav(wav, (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32))
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(image)
    videos = {}
    for weights in ("ema", "raw"):
        out = tmp_path / f"{weights}.mp4"
        res = CliRunner().invoke(emo_cli, ["generate", "--image", str(image), "--audio", str(wav), "--checkpoint",
                                           str(ckpt), "--out", str(out), "--steps", "2", "--no-crop",
                                           "--weights", weights])
        assert res.exit_code == 0, res.output
        videos[weights] = read_frames(out).astype(int)
    assert videos["ema"].shape == videos["raw"].shape and np.abs(videos["ema"] - videos["raw"]).max() > 0
    plain = main(_cfg(stages={1: {"steps": 1}}), data, tmp_path / "plain", log_with=None).checkpoints[-1]
    res = CliRunner().invoke(emo_cli, ["generate", "--image", str(image), "--audio", str(wav), "--checkpoint",
                                       str(plain), "--out", str(tmp_path / "x.mp4"), "--weights", "ema"])
    assert res.exit_code != 0 and "no EMA weights" in res.output and "Traceback" not in res.output
