"""Save and resume under FSDP2 (emo/training/accelerate/stage2_fsdp.yaml), on 2 CPU processes over
gloo: a run stopped after 2 steps and resumed gives the same losses, weights, EMA and optimizer state
as an uninterrupted one, bit for bit, and its checkpoint holds whole tensors (not shards).

accelerate enables FSDP only over GPU-like process groups (its state.py lists MULTI_GPU, MULTI_XPU,
..., not MULTI_CPU), so the worker starts the gloo group as a CPU run and then lets accelerate see
a GPU-like type; the training code is the unmodified `emo.training.train.main`."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from emo.config import load_config
from emo.models.emo_model import EMA_FILE, EMOModel
from emo.training.synthetic import make_synthetic_dataset

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
FSDP_CONFIG = ROOT / "emo/training/accelerate/stage2_fsdp.yaml"

WORKER = '''
import json, os, sys
from accelerate.state import PartialState
from accelerate.utils import DistributedType
from emo.training import train

seen = []
make_accelerator = train._accelerator
def recording_accelerator(*args, **kwargs):
    acc = make_accelerator(*args, **kwargs)
    seen.append([str(acc.distributed_type), bool(acc.is_fsdp2), acc.num_processes])
    return acc
train._accelerator = recording_accelerator

state = PartialState(cpu=True)                    # gloo
state.distributed_type = DistributedType.MULTI_GPU  # lets AcceleratorState choose FSDP
# Three runs in one process group: end_training must not destroy it (re-initialising one hung).
PartialState.destroy_process_group = lambda self, group=None: None

config, dataset, root = sys.argv[1:4]
results = {}
for name, out, max_steps in (("whole", "whole", None), ("first", "parts", 2), ("rest", "parts", None)):
    r = train.main(config, dataset, os.path.join(root, out), stage=2, max_steps=max_steps, log_with=None)
    results[name] = {"losses": r.losses, "checkpoint": str(r.checkpoints[-1]), "accelerator": seen[-1]}
with open(os.path.join(root, "result_%s.json" % os.environ["RANK"]), "w") as f:
    json.dump(results, f)
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def fsdp_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    data = make_synthetic_dataset(root / "data", frame_counts=[24, 18], size=64)
    raw = yaml.safe_load((ROOT / "emo/configs/tiny.yaml").read_text())
    # Dropping probabilities of 0.5: the processes drop different conditions, so different
    # parameters go unused on each (FSDP2 must still reduce the same set).
    raw["train"].update({"save_every": 0, "save_steps": [], "log_every": 1, "lr_warmup_steps": 2,
                         "vae_fit_steps": 0, "stages": {2: {"steps": 4}}, "drop_audio_prob": 0.5,
                         "drop_reference_prob": 0.5, "ema": {"enabled": True, "decay": 0.9}})
    raw["data"]["num_workers"] = 0
    config = root / "tiny_fsdp.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    worker = root / "worker.py"
    worker.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP_CONFIG),
           "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(_free_port()),
           str(worker), str(config), str(data), str(root)]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    results = [json.loads((root / f"result_{rank}.json").read_text()) for rank in (0, 1)]
    return results, load_config(str(config))


def test_runs_under_fsdp2_on_two_processes(fsdp_runs):
    results, _ = fsdp_runs
    for r in results:
        assert all(run["accelerator"] == ["DistributedType.FSDP", True, 2] for run in r.values())
    assert results[0] == results[1]            # the logged loss is the mean over processes


def test_resume_gives_the_same_losses_exactly(fsdp_runs):
    r = fsdp_runs[0][0]
    whole, first, rest = r["whole"]["losses"], r["first"]["losses"], r["rest"]["losses"]
    assert [s for s, _, _ in whole] == [1, 2, 3, 4]
    assert [s for s, _, _ in rest] == [3, 4]
    assert first + rest == whole


def test_resumed_checkpoint_equals_the_uninterrupted_one(fsdp_runs):
    r = fsdp_runs[0][0]
    a, b = Path(r["whole"]["checkpoint"]), Path(r["rest"]["checkpoint"])
    assert a.name == b.name == "step-000004"
    for weights in ("raw", "ema"):
        sa = EMOModel.from_checkpoint(a, weights=weights).state_dict()
        sb = EMOModel.from_checkpoint(b, weights=weights).state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), weights
    for name in (EMA_FILE, "training_state/optimizer.safetensors"):
        ta, tb = load_file(str(a / name)), load_file(str(b / name))
        assert ta and ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), name
    assert (a / "training_state/rng_0.safetensors").is_file() and (a / "training_state/rng_1.safetensors").is_file()


def test_checkpoint_holds_whole_weights_and_ema(fsdp_runs):
    r, cfg = fsdp_runs[0][0], fsdp_runs[1]
    ckpt = Path(r["whole"]["checkpoint"])
    init = EMOModel.from_config(cfg, seed=cfg.train["seed"])
    fresh = init.state_dict()
    raw = EMOModel.from_checkpoint(ckpt, weights="raw").state_dict()
    assert raw.keys() == fresh.keys() and all(raw[k].shape == fresh[k].shape for k in fresh)
    init.set_stage(2)
    trainable = {n for n, p in init.named_parameters() if p.requires_grad}
    moved = {k for k in fresh if not torch.equal(raw[k], fresh[k])}
    assert moved and moved <= trainable           # trained, and only what stage 2 trains
    ema = load_file(str(ckpt / EMA_FILE))
    assert set(ema) == trainable and all(ema[k].shape == fresh[k].shape for k in ema)
    # decay 0.9 (diffusers warms it up from 0.1): the EMA of a trained parameter has moved from
    # the initial value and lags the trained one; an untouched one equals both
    for k in trainable:
        if k in moved:
            assert not torch.equal(ema[k], fresh[k]) and not torch.equal(ema[k], raw[k]), k
        else:
            assert torch.equal(ema[k], raw[k]), k
