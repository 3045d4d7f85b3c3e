"""Each stage trains exactly the paper's parameters: requires_grad, and which tensors one optimizer
step of the real loop (emo.training.train.main) changes, on the tiny EMO model."""
import pytest
import torch

from emo.config import load_config
from emo.models.emo_model import EMOModel
from emo.training.stages import STAGE_GROUPS, apply_stage, group_map, stage_mismatches, verify_stage
from emo.training.synthetic import make_synthetic_dataset
from emo.training.train import main


class PerturbedEMO(EMOModel):
    """The tiny model with every parameter nudged: new layers start as exact no-ops (zero output
    projections), which hides the layers behind them from the first step's gradient; nudged, every
    used parameter gets a gradient, so one step must change exactly the trainable tensors."""

    @classmethod
    def from_config(cls, cfg, seed=0):
        model = super().from_config(cfg, seed)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=g))
        return model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    data = make_synthetic_dataset(root / "data", frame_counts=[20], size=64)
    cfg = load_config("emo/configs/tiny.yaml")
    # No weight decay and no condition dropping: a tensor changes only if its gradient is non-zero.
    # No VAE fitting: it happens before the stages (its own test is in test_training_loop.py).
    cfg.train.update(weight_decay=0.0, drop_audio_prob=0.0, drop_reference_prob=0.0, save_every=0,
                     drop_reference_and_audio_prob=0.0, drop_motion_prob=0.0,
                     lr=1e-3, lr_warmup_steps=0, vae_fit_steps=0,
                     stages={1: {"steps": 1}, 2: {"steps": 1}, 3: {"steps": 1}})
    return root, data, cfg


def test_requires_grad_matches_each_stage(setup):
    _, _, cfg = setup
    model = EMOModel.from_config(cfg)
    groups = group_map(model)
    for stage in (1, 2, 3):
        model.set_stage(stage)
        assert stage_mismatches(model, stage) == []
        named = apply_stage(model, stage)          # raises if the model's set_stage disagrees
        trained = {groups[n] for n, _ in named}
        assert trained == STAGE_GROUPS[stage]
        for name, p in model.named_parameters():
            if groups[name] in ("vae", "audio_encoder", "unused"):
                assert not p.requires_grad, name
    # A deliberately wrong setting is caught.
    model.set_stage(3)
    next(model.audio_projection.parameters()).requires_grad_(True)
    with pytest.raises(AssertionError, match="audio_layers"):
        verify_stage(model, 3)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_one_step_changes_only_the_stage_parameters(setup, stage):
    root, data, cfg = setup
    before = PerturbedEMO.from_config(cfg)      # main() builds the same model (same seeds)
    groups = group_map(before)
    trainable = {n for n, _ in apply_stage(before, stage)}
    start = {n: p.detach().clone() for n, p in before.named_parameters()}
    result = main(cfg, data, root / f"run{stage}", stage=stage, max_steps=1, log_with=None,
                  model_cls=PerturbedEMO)
    after = dict(EMOModel.from_checkpoint(result.checkpoints[-1]).named_parameters())
    changed = {n for n in start if not torch.equal(start[n], after[n].detach())}
    assert {groups[n] for n in changed} == STAGE_GROUPS[stage]
    assert changed <= trainable, sorted(changed - trainable)[:5]
    # Trainable tensors that did not move get no gradient by construction in this stage (see
    # emo.training.stages): a handful of norms and the ReferenceNet's last block in stage 1.
    n_all = {n: start[n].numel() for n in start}
    moved = sum(n_all[n] for n in changed) / sum(n_all[n] for n in trainable)
    print(f"stage {stage}: {len(changed)}/{len(trainable)} trainable tensors changed ({moved:.1%} of elements)")
    assert moved > 0.9
    assert all(".norm2." in n or n.startswith("reference_net.unet.up_blocks.") for n in trainable - changed)
