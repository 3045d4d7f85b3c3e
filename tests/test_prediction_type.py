"""model.prediction_type (epsilon | v_prediction): the training target and every sampler agree on
what the network outputs. The exact training target, given to the inference scheduler's DDIM step,
must give back the clean latent and the deterministic (eta = 0) previous latent; a saved checkpoint
keeps the setting."""
import pytest
import torch
from diffusers import DDIMScheduler

from emo.config import load_config
from emo.diagnose import Diagnoser
from emo.models.emo_model import EMOModel
from emo.pipeline import EMOPipeline
from emo.training.step import StageLoss
from emo.typed_config import ConfigError

KINDS = ("epsilon", "v_prediction")


@pytest.fixture(scope="module")
def models():
    out = {}
    for kind in KINDS:
        cfg = load_config("tiny")
        cfg.model.prediction_type = kind
        out[kind] = EMOModel.from_config(cfg, seed=0)
    return out


def _one_ddim_step(sched: DDIMScheduler, output: torch.Tensor, t: int, noisy: torch.Tensor):
    return sched.step(output, torch.tensor(t), noisy, eta=0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_the_exact_training_target_makes_each_sampler_recover_the_clean_latent(models, kind):
    model = models[kind]
    loss_fn = StageLoss(model, 1, 4)
    samplers = {"pipeline": EMOPipeline(model).scheduler, "diagnose": Diagnoser(model, steps=5).ddim}
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 2, 4, 8, 8, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    for where, sched in samplers.items():
        assert sched.config.prediction_type == kind, where
        sched.set_timesteps(5)
        ts = [int(t) for t in sched.timesteps]
        ab = sched.alphas_cumprod
        for i, t in enumerate(ts):
            tt = torch.tensor([t])
            noisy = loss_fn.scheduler.add_noise(x0, noise, tt)
            out = _one_ddim_step(sched, loss_fn.prediction_target(x0, noise, tt), t, noisy)
            assert torch.allclose(out.pred_original_sample, x0, atol=1e-4), (where, t)
            # eta = 0 with the true noise: the next latent is the same x0 and noise at the next level
            ab_prev = ab[ts[i + 1]] if i + 1 < len(ts) else sched.final_alpha_cumprod
            expected = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * noise
            assert torch.allclose(out.prev_sample, expected, atol=1e-4), (where, t)


def test_a_mismatched_sampler_does_not_recover_the_clean_latent(models):
    # The check above can fail: v targets read as noise (or noise read as v) give a wrong x0.
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(1, 2, 4, 8, 8, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    for kind, other in (("epsilon", "v_prediction"), ("v_prediction", "epsilon")):
        loss_fn = StageLoss(models[kind], 1, 4)
        sched = EMOPipeline(models[other]).scheduler
        sched.set_timesteps(5)
        t = int(sched.timesteps[0])
        tt = torch.tensor([t])
        noisy = loss_fn.scheduler.add_noise(x0, noise, tt)
        out = _one_ddim_step(sched, loss_fn.prediction_target(x0, noise, tt), t, noisy)
        assert (out.pred_original_sample - x0).abs().mean() > 0.5, (kind, other)


def test_v_target_is_the_velocity_of_salimans_and_ho(models):
    loss_fn = StageLoss(models["v_prediction"], 1, 4)
    g = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(2, 3, 1, 4, 8, 8, generator=g)
    t = torch.tensor([10, 500, 999])
    ab = loss_fn.scheduler.alphas_cumprod[t].float()[:, None, None, None, None]
    assert torch.allclose(loss_fn.prediction_target(x0, noise, t), ab.sqrt() * noise - (1 - ab).sqrt() * x0, atol=1e-6)
    assert torch.equal(StageLoss(models["epsilon"], 1, 4).prediction_target(x0, noise, t), noise)


def test_the_checkpoint_keeps_the_prediction_type(models, tmp_path):
    ckpt = models["v_prediction"].save_checkpoint(tmp_path / "ck")
    back = EMOModel.from_checkpoint(ckpt)
    assert back.cfg.model.prediction_type == "v_prediction"
    assert back.noise_scheduler_config["prediction_type"] == "v_prediction"
    assert load_config("sd15").model.prediction_type == "epsilon"     # SD-1.5's weights predict noise


def test_an_unknown_prediction_type_is_refused(tmp_path):
    cfg = load_config("tiny")
    cfg.model.prediction_type = "sample"            # diffusers knows it; training here does not
    cfg.to_yaml(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="prediction_type"):
        load_config(tmp_path / "c.yaml")
