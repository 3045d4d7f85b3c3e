"""The tiny model learns to LOOK at its reference image (issue 12).

Trained on a few synthetic identities (emo/training/synthetic.py: each clip its own background
and face colour), the model's generated frames must follow a swapped reference: their coarse
colour layout moves towards the new reference's (emo.diagnose.colour_follow, 1 = all the way,
0 = not at all). The untrained model, run the same way, is the control: a broken reference path
(tokens not reaching the backbone, a VAE that decodes every latent to the same colours, a stage-1
reference from another clip) keeps colour_follow near 0 after training too.

Margins: colour_follow >= 0.5 (half-way towards the new reference, on average over the clips)
and the noise prediction changes by more than 5% (relative L2) when the reference is swapped;
the issue's failing demo model showed 0.8% and identical mean colours.

The identities' backgrounds are drawn over the whole colour range (`background=(0, 255)`): two
identities then differ by about 85 grey levels a channel on average, well above the fitted tiny
VAE's reconstruction error (PSNR 18-24 dB, 16-32 grey levels RMS). With the generator's default
range (40-90) they differ by about 17, below that error; there the recipe measured colour_follow
0.01-0.08 (v) and 0.001-0.009 (epsilon), and this test failed. (Our reading, not proven: the
difference to be seen was under the VAE's error; the demo's drawn faces, whose backgrounds differ
widely, show the same recipe looking on held-out clips.)

Measured 2026-12-02, this recipe (4 identities, backgrounds 0-255, VAE fit 1000 steps, 200 stage-1
steps, seed 0): v-prediction (the tiny config's) colour_follow 0.82 (every clip >= 0.76), swap
change 99%, every clip nearer its own reference; the same with epsilon prediction: colour_follow
0.10, swap change 8.5%, 3 of 4 clips nearer their own (the test would fail).
Also tried on the narrow-colour identities, without effect on colour_follow: one colour transform
on each sample's reference, target and motion frames (train.joint_colour_augment_prob) and
truncated-SNR loss weighting (train.loss_weighting); figures in the issue 12 note.
"""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from emo.config import load_config
from emo.diagnose import colour_follow, diagnose
from emo.training.synthetic import make_synthetic_dataset
from emo.training.train import main

N_CLIPS = 4
STAGE1_STEPS = 200


# -- the instrument itself (fast) ----------------------------------------------------------------

def test_colour_follow_measures_the_share_of_the_reference_change():
    rng = np.random.default_rng(0)
    ref_own, ref_other = rng.integers(0, 255, (2, 64, 64, 3)).astype(np.uint8)
    gen_own = rng.integers(0, 255, (12, 64, 64, 3)).astype(np.float32)
    half = gen_own + 0.5 * (ref_other.astype(np.float32) - ref_own)
    assert colour_follow(gen_own, half, ref_own, ref_other) == pytest.approx(0.5, abs=1e-4)
    assert colour_follow(gen_own, gen_own, ref_own, ref_other) == pytest.approx(0.0, abs=1e-6)


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    from emo.models.emo_model import EMOModel
    root = tmp_path_factory.mktemp("diag")
    data = make_synthetic_dataset(root / "data", n_clips=2, n_frames=14, size=64, seed=3)
    ckpt = EMOModel.from_config("emo/configs/tiny.yaml", seed=0).save_checkpoint(root / "ckpt", meta={"step": 0})
    return data, ckpt


def test_diagnose_sees_a_cut_reference_path_as_ignored(untrained):
    # A model whose reference tokens never reach the backbone must read exactly 0 for the
    # reference; the same model with the path intact must not (random weights still mix it in).
    from emo.models.emo_model import EMOModel
    data, ckpt = untrained
    intact = diagnose(ckpt, data, split="train", n_clips=2, timesteps=(500,), generate=False)
    assert intact["noise_prediction"]["rel_change"]["ref_swapped"] > 1e-3
    cut = EMOModel.from_checkpoint(ckpt)
    full_bank = cut.reference_bank
    cut.reference_bank = lambda *a, **k: full_bank(*a, **k).without_reference()
    blind = diagnose(ckpt, data, split="train", n_clips=2, timesteps=(500,), generate=False, model=cut)
    assert blind["noise_prediction"]["rel_change"]["ref_swapped"] == 0.0
    assert blind["verdict"]["reference"] == "ignored"


def test_diagnose_cli_writes_json_beside_the_checkpoint_and_the_report_renders_it(untrained):
    from emo.cli import main as cli
    from eval.report.sensitivity import render_paths
    data, ckpt = untrained
    res = CliRunner().invoke(cli, ["diagnose", str(ckpt), "--dataset", str(data), "--split", "train",
                                   "--clips", "2", "--steps", "1", "--guidance", "1.0"])
    assert res.exit_code == 0, res.output
    result = json.loads((ckpt / "diagnose.json").read_text())
    assert result["n_clips"] == 2 and set(result["frames"]["mean_abs_change"]) == {
        "ref_swapped", "ref_dropped", "audio_swapped", "audio_dropped"}
    html, md = render_paths([ckpt])
    assert "<table>" in html and ckpt.name in md and "| colour follow |" in md


# -- learning (slow: trains) ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("learning")
    data = make_synthetic_dataset(root / "data", n_clips=N_CLIPS, n_frames=24, size=64, seed=0,
                                  background=(0, 255))
    cfg = load_config("emo/configs/tiny.yaml")
    # Stage 1 alone: it is where the reference path learns (single frames, reference from the clip).
    # The VAE is fitted with the config's own vae_fit_steps: too few leaves it blind to colour.
    cfg.train.update(stages={1: {"steps": STAGE1_STEPS, "batch_size": 2}}, save_steps=[], log_every=50)
    cfg.data.update(audio_cache=False, num_workers=0)
    result = main(cfg, data, root / "run", log_with=None)
    return data, result.checkpoints[-1]


def _figures(checkpoint, data):
    return diagnose(checkpoint, data, split="train", n_clips=N_CLIPS, steps=5, guidance=1.0)


@pytest.mark.slow
def test_swapping_the_reference_moves_the_frames_towards_it(trained):
    data, checkpoint = trained
    after = _figures(checkpoint, data)
    assert after["noise_prediction"]["rel_change"]["ref_swapped"] > 0.05, after["noise_prediction"]
    assert after["looking"]["colour_follow"] >= 0.5, after["looking"]
    assert after["looking"]["closer_to_own"] >= 0.75, after["looking"]
    assert after["verdict"]["reference"] == "used" and after["verdict"]["frames_follow_reference"]


@pytest.mark.slow
def test_the_untrained_model_does_not_look(trained, tmp_path):
    # The control: the same measure on the initial weights (with the fitted VAE, so only the
    # denoiser's training differs) stays far from the margin.
    from emo.models.emo_model import EMOModel
    data, checkpoint = trained
    fitted = EMOModel.from_checkpoint(checkpoint)
    init = EMOModel.from_config(fitted.cfg, seed=0)
    init.vae = fitted.vae
    init.set_stage(fitted.stage)
    before = diagnose(checkpoint, data, split="train", n_clips=N_CLIPS, steps=5, guidance=1.0, model=init)
    assert before["looking"]["colour_follow"] < 0.5, before["looking"]
