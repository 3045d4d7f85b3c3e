"""The memory plan (emo/plan.py), activation checkpointing of the temporal modules, the 8-bit
optimizer option and the shipped accelerate configs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from emo.config import load_config
from emo.plan import Precision, SavedBytes, measure_activations, plan_model, state_bytes

REPO = Path(__file__).resolve().parents[1]


def _tiny_stage2(frames=4, motion=2):
    cfg = load_config("tiny")
    cfg.model.num_frames, cfg.model.num_motion_frames = frames, motion
    torch.manual_seed(0)
    model = plan_model(cfg)
    model.set_stage(2)
    return model.train()


def test_saved_bytes_counts_distinct_storages_only():
    w = torch.nn.Parameter(torch.randn(8, 8))
    counter = SavedBytes({w.untyped_storage()._cdata})
    x = torch.randn(4, 8, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t):
        y = (x @ w).relu()          # matmul saves x (and w: a parameter), relu saves its output
        y.sum().backward()
    assert counter.total == 4 * 8 * 4 + 4 * 8 * 4


@pytest.mark.slow
def test_fake_tensor_count_equals_the_real_one():
    """The plan counts under FakeTensorMode; on the tiny model the count with real tensors agrees."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    real = measure_activations(_tiny_stage2(), 2, 1, 64, 4, 2, checkpointing=True)
    with FakeTensorMode():
        fake = measure_activations(_tiny_stage2(), 2, 1, 64, 4, 2, checkpointing=True)
    # the storages agree to within the attention kernel's small saved statistics
    assert abs(fake["retained"] / real["retained"] - 1) < 0.02, (real, fake)
    assert fake["recompute_peak"] == pytest.approx(real["recompute_peak"], rel=0.02)


def test_checkpointing_covers_the_temporal_modules_and_keeps_gradients():
    from emo.training.activation_checkpointing import enable_checkpointing
    from emo.plan import training_forward
    grads = []
    for checkpointing in (False, True):
        model = _tiny_stage2()
        if checkpointing:
            enable_checkpointing(model)
            wrapped = [n for n in model.backbone.motion_names
                       if getattr(model.backbone.unet.get_submodule(n), "_emo_checkpointed", False)]
            assert wrapped == [n for n in model.backbone.motion_names if not n.startswith("mid_block.")]
        torch.manual_seed(1)
        for p in model.parameters():          # make the zero-initialised layers matter
            if p.requires_grad:
                p.data.add_(0.05 * torch.randn_like(p))
        torch.manual_seed(2)
        out = training_forward(model, 2, 1, 64, 4, 2)
        out["loss"].backward()
        temporal = model.backbone.temporal_modules()[0]
        grads.append(torch.cat([p.grad.flatten() for p in temporal.parameters() if p.grad is not None]))
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_checkpointing_of_temporal_modules_reduces_what_is_kept():
    from torch._subclasses.fake_tensor import FakeTensorMode
    from emo.training import activation_checkpointing as ac
    with FakeTensorMode():
        full = measure_activations(_tiny_stage2(), 2, 1, 64, 4, 2, checkpointing=True)
        original = ac.checkpoint_motion_modules
        ac.checkpoint_motion_modules = lambda unet, fn: 0          # diffusers' own checkpointing only
        try:
            partial = measure_activations(_tiny_stage2(), 2, 1, 64, 4, 2, checkpointing=True)
        finally:
            ac.checkpoint_motion_modules = original
        none = measure_activations(_tiny_stage2(), 2, 1, 64, 4, 2, checkpointing=False)
    assert full["retained"] < partial["retained"] < none["retained"]


def test_state_bytes_per_precision():
    assert sum(state_bytes(10, 0, Precision()).values()) == 10 * 16                  # 4 + 4 + 8
    assert sum(state_bytes(10, 0, Precision(optimizer="adamw8bit")).values()) == pytest.approx(10 * (8 + 2 + 8 / 256))
    assert sum(state_bytes(10, 0, Precision(weights="bf16")).values()) == 10 * (2 + 2 + 8 + 4)
    z2 = state_bytes(8, 4, Precision(zero=2, gpus=4))
    assert z2 == {"weights": 12 * 4, "gradients": 8 * 4 / 4, "optimizer": 8 * 8 / 4}
    assert state_bytes(8, 4, Precision(zero=3, gpus=4))["weights"] == 12 * 4 / 4
    with pytest.raises(ValueError):
        Precision(weights="fp8")


@pytest.mark.slow
def test_scaling_model_fits_the_tiny_architecture():
    """c + B (a + b P) fitted on three (batch, size) points predicts the others within 5%."""
    from emo.plan import activation_scaling
    cfg = load_config("tiny")
    cfg.model.num_frames, cfg.model.num_motion_frames = 4, 2
    cfg.model.sample_size = 128
    sc = activation_scaling(cfg, 2, True, sizes=(32, 64), check_sizes=(96,))
    for chk in sc["retained"]["check"]:
        assert abs(chk["error"]) < 0.05, chk


def test_eight_bit_optimizer_is_a_clear_error_without_a_gpu():
    from emo.training.config import parse_train
    from emo.typed_config import ConfigError
    from emo.training.optimizers import OptimizerUnavailable, make_optimizer
    assert parse_train({"optimizer": "adamw8bit"}).optimizer == "adamw8bit"
    with pytest.raises(ConfigError, match="adamw8bit"):
        parse_train({"optimizer": "sgd"})
    p = [torch.nn.Parameter(torch.zeros(3))]
    assert isinstance(make_optimizer("adamw", p, lr=1e-3), torch.optim.AdamW)
    if not torch.cuda.is_available():
        with pytest.raises(OptimizerUnavailable, match="CUDA"):
            make_optimizer("adamw8bit", p, lr=1e-3)


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "emo/training/accelerate").glob("*.yaml")))
def test_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import load_config_from_file
    cfg = load_config_from_file(str(REPO / "emo/training/accelerate" / name))
    assert cfg.mixed_precision in ("bf16", "fp16", "no")


@pytest.mark.slow
def test_repeated_measurements_on_one_model_agree():
    """activation_scaling reuses one model for every size: each measurement must count the
    checkpointed temporal modules' inputs itself (not through the first counter)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        model = _tiny_stage2()
        first = measure_activations(model, 2, 1, 64, 4, 2, checkpointing=True)
        again = measure_activations(model, 2, 1, 64, 4, 2, checkpointing=True)
    assert first == again


@pytest.mark.slow
def test_cli_plan_tiny(tmp_path):
    import json

    from click.testing import CliRunner

    from emo.cli import main as cli
    out = tmp_path / "plan.json"
    res = CliRunner().invoke(cli, ["plan", "--config", "tiny", "--stage", "3", "--optimizer", "adamw8bit",
                                   "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "parameters:" in res.output and "check at 96px" in res.output and "fits:" in res.output
    doc = json.loads(out.read_text())
    p = doc["parameters"]
    # stage 3 trains the temporal modules and the speed layers only
    assert p["reference_net.trained"] == 0 and p["speed_encoder.trained"] > 0 and p["backbone.trained"] > 0
    assert doc["state"]["optimizer"] == pytest.approx(p["trained"] * (2 + 8 / 256))
