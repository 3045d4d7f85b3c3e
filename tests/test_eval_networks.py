"""The evaluation networks carry the official files' key names and shapes, and load through the
registry strictly (random-initialised networks saved under the official file names)."""
import dataclasses
import os

import pytest
import torch

from eval import weights as registry
from eval.networks import FIDInceptionV3, InceptionI3d, IResNet, LPIPSAlex, SyncNet, arcface_arch_of, load_network

# (module factory, {key: official shape}) -- a few named keys per network, shapes from the
# official files' architectures (see each module's docstring for where the names come from).
OFFICIAL_KEYS = {
    "inception": (FIDInceptionV3, {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3), "Conv2d_1a_3x3.bn.running_var": (32,),
        "Mixed_5b.branch5x5_1.conv.weight": (48, 192, 1, 1), "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1), "fc.weight": (1008, 2048)}),
    "i3d": (InceptionI3d, {
        "Conv3d_1a_7x7.conv3d.weight": (64, 3, 7, 7, 7), "Conv3d_1a_7x7.bn.running_mean": (64,),
        "Mixed_3b.b1b.conv3d.weight": (128, 96, 3, 3, 3), "Mixed_5c.b3b.conv3d.weight": (128, 832, 1, 1, 1),
        "logits.conv3d.weight": (400, 1024, 1, 1, 1), "logits.conv3d.bias": (400,)}),
    "syncnet": (SyncNet, {
        "netcnnaud.0.weight": (64, 1, 3, 3), "netcnnaud.18.weight": (512, 256, 5, 4),
        "netfcaud.0.weight": (512, 512), "netfcaud.3.weight": (1024, 512),
        "netcnnlip.0.weight": (96, 3, 5, 7, 7), "netcnnlip.18.weight": (512, 256, 1, 6, 6),
        "netfclip.1.running_mean": (512,)}),
    "arcface_r100": (lambda: IResNet("iresnet100"), {
        "conv1.weight": (64, 3, 3, 3), "prelu.weight": (64,), "layer1.0.downsample.0.weight": (64, 64, 1, 1),
        "layer2.12.conv2.weight": (128, 128, 3, 3), "layer3.29.prelu.weight": (256,),
        "fc.weight": (512, 25088), "features.running_var": (512,)}),
    "lpips": (LPIPSAlex, {
        "features.0.weight": (64, 3, 11, 11), "features.3.weight": (192, 64, 5, 5), "features.10.weight": (256, 256, 3, 3),
        "heads.lin0.model.1.weight": (1, 64, 1, 1), "heads.lin4.model.1.weight": (1, 256, 1, 1)}),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_KEYS))
def test_official_key_names_and_shapes(name):
    factory, keys = OFFICIAL_KEYS[name]
    state = factory().state_dict()
    for key, shape in keys.items():
        assert key in state, f"{name}: {key} missing"
        assert tuple(state[key].shape) == shape, f"{name}: {key} has {tuple(state[key].shape)}"


def test_arcface_depth_is_read_from_the_file():
    assert arcface_arch_of(IResNet("iresnet50").state_dict()) == "iresnet50"
    assert arcface_arch_of({"layer2.0.conv1.weight": 0}).startswith("unknown")


@pytest.fixture
def no_checksums(monkeypatch):
    """Random files cannot carry the official hashes: switch the checks off for round trips."""
    for name, spec in list(registry.REGISTRY.items()):
        monkeypatch.setitem(registry.REGISTRY, name, dataclasses.replace(spec, sha256=None, sha256_prefix=None))


def _randomise(module):
    torch.manual_seed(0)
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) * 0.2 + 0.9 if t.ndim <= 1 else torch.randn_like(t) * 0.05)
    return module.eval()


def _save(state, path):
    if str(path).endswith(".safetensors"):
        registry.save_state_dict_atomic(state, path)
    else:
        torch.save(state, path)


def test_syncnet_round_trip_through_the_registry(tmp_path, no_checksums):
    net = _randomise(SyncNet())
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}  # as in 2016 files
    _save(state, tmp_path / "syncnet_v2.model")
    loaded = load_network("syncnet", str(tmp_path))
    x = torch.randn(2, 1, 13, 20)
    with torch.no_grad():
        assert torch.allclose(net.forward_aud(x), loaded.forward_aud(x), atol=1e-6)


def test_arcface_and_i3d_round_trip(tmp_path, no_checksums):
    arc = _randomise(IResNet("iresnet50"))
    _save(arc.state_dict(), tmp_path / "backbone.pth")
    i3d = _randomise(InceptionI3d())
    _save(i3d.state_dict(), tmp_path / "i3d_kinetics400_fvd.safetensors")
    got_arc, got_i3d = load_network("arcface", str(tmp_path)), load_network("i3d_fvd", str(tmp_path))
    assert got_arc.arch == "iresnet50"
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        assert torch.allclose(arc(x), got_arc(x), atol=1e-5)
    for key in ("Mixed_4f.b2b.bn.running_var", "logits.conv3d.bias"):
        assert torch.equal(i3d.state_dict()[key], got_i3d.state_dict()[key])


def test_inception_and_lpips_round_trip(tmp_path, no_checksums):
    inc = _randomise(FIDInceptionV3())
    _save(inc.state_dict(), tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    lp = _randomise(LPIPSAlex())
    alex = {f"features.{k}": v for k, v in lp.features.state_dict().items()}
    alex.update({"classifier.1.weight": torch.zeros(2, 9216), "classifier.1.bias": torch.zeros(2)})  # ignored
    _save(alex, tmp_path / "alexnet-owt-7be5be79.pth")
    _save(lp.heads.state_dict(), tmp_path / "alex.pth")
    got_inc, got_lp = load_network("inception_fid", str(tmp_path)), load_network("lpips", str(tmp_path))
    for key in ("Mixed_6b.branch7x7_2.conv.weight", "Conv2d_4a_3x3.bn.running_mean", "fc.bias"):
        assert torch.equal(inc.state_dict()[key], got_inc.state_dict()[key])
    a, b = torch.rand(1, 3, 64, 64) * 2 - 1, torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(lp(a, b), got_lp(a, b), atol=1e-6)
        assert float(got_lp(a, a)) == pytest.approx(0.0, abs=1e-7)


def test_a_file_that_does_not_fit_is_refused(tmp_path, no_checksums):
    state = SyncNet().state_dict()
    state["netfcaud.3.weight"] = torch.zeros(10, 512)            # wrong shape
    _save(state, tmp_path / "syncnet_v2.model")
    with pytest.raises((ValueError, RuntimeError)):
        load_network("syncnet", str(tmp_path))
    del state["netfcaud.3.weight"]
    state["renamed.weight"] = torch.zeros(1)
    _save(state, tmp_path / "syncnet_v2.model")
    load_network.cache_clear()
    with pytest.raises(ValueError, match="missing"):
        load_network("syncnet", str(tmp_path))


def test_checksum_prefix_is_checked(tmp_path):
    bad = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    bad.write_bytes(b"not the official file")
    line = registry.weights_status_line("inception_fid", tmp_path)
    assert "6726825d" in line and "expected" in line
    with pytest.raises(ValueError, match="6726825d"):
        registry.load_state_dict("inception_fid", tmp_path)


def test_weights_dir_and_status_table(tmp_path, monkeypatch):
    monkeypatch.setenv("EMO_EVAL_WEIGHTS", str(tmp_path))
    assert registry.weights_dir() == tmp_path
    rows = {r["name"]: r for r in registry.status_table()}
    assert set(rows) == set(registry.REGISTRY)
    assert not rows["syncnet"]["present"] and "syncnet_v2.model" in rows["syncnet"]["status"]
    assert "python -m eval weights fetch" in rows["syncnet"]["status"]


def test_fetch_downloads_atomically_and_rejects_a_bad_checksum(tmp_path, monkeypatch):
    # A local file:// source stands in for the official URL: no network in tests.
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload")
    spec = registry.REGISTRY["syncnet"]
    monkeypatch.setitem(registry.REGISTRY, "syncnet", dataclasses.replace(spec, url=src.as_uri()))
    out = tmp_path / "w"
    assert registry.fetch(["syncnet"], out, log=lambda *_: None) == {"syncnet": "fetched"}
    assert (out / "syncnet_v2.model").read_bytes() == b"payload"
    assert registry.fetch(["syncnet"], out, log=lambda *_: None) == {"syncnet": "present"}
    monkeypatch.setitem(registry.REGISTRY, "syncnet",
                        dataclasses.replace(spec, url=src.as_uri(), sha256_prefix="00000000"))
    (out / "syncnet_v2.model").unlink()
    result = registry.fetch(["syncnet"], out, log=lambda *_: None)
    assert result["syncnet"].startswith("failed") and not (out / "syncnet_v2.model").exists()
    assert not [p for p in os.listdir(out) if p.endswith(".part")]
