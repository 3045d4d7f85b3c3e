"""The TorchScript -> safetensors conversion of StyleGAN-V's I3D: names mapped, outputs checked,
and a file that does not match is refused (no output written). The stand-in TorchScript files are
built here from our own module, with StyleGAN-V's call signature."""
import pytest
import torch
import torch.nn.functional as F

from eval.networks.i3d import InceptionI3d, convert_torchscript_file


class _Detector(torch.nn.Module):
    def __init__(self, traced, scale: float, antialias: bool = False):
        super().__init__()
        self.i3d = traced
        self.scale = scale
        self.antialias = antialias

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False):
        x = x.float()
        if rescale:
            x = x / self.scale - 1.0
        if resize:
            b, c, t, h, w = x.shape
            x = F.interpolate(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w), size=(224, 224),
                              mode="bilinear", align_corners=False, antialias=self.antialias)
            x = x.reshape(b, t, c, 224, 224).permute(0, 2, 1, 3, 4)
        return self.i3d(x).mean(2)


@pytest.mark.slow
def test_conversion_checks_outputs_before_writing(tmp_path):
    torch.manual_seed(0)
    net = InceptionI3d()
    for m in net.modules():       # an init that keeps the signal alive through 60 layers
        if isinstance(m, torch.nn.Conv3d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    with torch.no_grad():
        traced = torch.jit.trace(net, torch.zeros(1, 3, 16, 224, 224), check_trace=False)
    good, bad = tmp_path / "good.pt", tmp_path / "bad.pt"
    torch.jit.script(_Detector(traced, 127.5)).save(str(good))
    torch.jit.script(_Detector(traced, 255.0)).save(str(bad))       # a different input scaling
    aliased = tmp_path / "antialias.pt"   # same upsampling, different downsampling (antialiased resize)
    torch.jit.script(_Detector(traced, 127.5, antialias=True)).save(str(aliased))

    out = convert_torchscript_file(good, tmp_path / "i3d.safetensors")
    from safetensors.torch import load_file
    state = load_file(str(out))
    assert set(state) == set(net.state_dict())
    assert torch.equal(state["Mixed_4c.b1b.conv3d.weight"], net.state_dict()["Mixed_4c.b1b.conv3d.weight"])
    with pytest.raises(ValueError, match="differs .* in the uint8 rescale/resize preprocessing"):
        convert_torchscript_file(bad, tmp_path / "refused.safetensors")
    assert not (tmp_path / "refused.safetensors").exists()
    with pytest.raises(ValueError, match=r"in the uint8 downsampling preprocessing \(512 x 512\)"):
        convert_torchscript_file(aliased, tmp_path / "refused2.safetensors")
    assert not (tmp_path / "refused2.safetensors").exists()


def test_conversion_refuses_unmappable_parameter_names(tmp_path):
    src = tmp_path / "other.pt"
    torch.jit.script(torch.nn.Linear(3, 2)).save(str(src))
    with pytest.raises(ValueError, match="cannot map"):
        convert_torchscript_file(src, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()
