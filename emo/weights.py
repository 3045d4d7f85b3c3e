"""The registry of every third-party pretrained network the toolkit measures with (evaluation's
metrics, and SyncNet, which dataprep's sync stage shares with Sync-C/D): file, official source,
checksum, expected location; status listing, fetching (urllib, never in tests) and pickle-free
loading. It lives in `emo` so that `dataprep` and `eval` both read the one registry.

Location: `weights_dir()` = the argument, else `$EMO_EVAL_WEIGHTS`, else `~/.cache/emo/eval`.

Checksums: `sha256` is stated only where it is published; otherwise `sha256_prefix` holds the
prefix that the official file name carries (torch.hub's convention: the first 8 hex digits of the
file's sha256) and is checked; where nothing is published both are None and the note says so (the
file's hash is still recorded in every results JSON, so a run says exactly what it used).

Loading: `.safetensors` through safetensors; `.pth`/`.pt`/`.model` state dicts through
`torch.load(weights_only=True)` (no arbitrary unpickling). The one TorchScript file (StyleGAN-V's
`i3d_torchscript.pt`) is never loaded at metric time: `convert_i3d_torchscript` turns it, once and
on request (`eval.weights.convert_i3d_torchscript`), into a safetensors state dict for eval's InceptionI3d after checking that
both give the same output (see that function).
"""
from __future__ import annotations

import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from emo.fileio import atomic_path, sha256_file

FETCH_COMMAND = "python -m eval weights fetch"


@dataclass(frozen=True)
class WeightSpec:
    name: str
    files: tuple[str, ...]            # accepted file names; the first is the one fetch writes
    url: str | None                   # official direct download; None = manual (see source)
    source: str                       # where it comes from (page, paper, repository)
    used_by: tuple[str, ...]          # metric names
    key_names: str                    # where our module's state-dict key names come from
    sha256: str | None = None
    sha256_prefix: str | None = None
    note: str = ""
    derived_from: str | None = None   # registry name this file is converted from


REGISTRY: dict[str, WeightSpec] = {s.name: s for s in [
    WeightSpec(
        name="inception_fid",
        files=("pt_inception-2015-12-05-6726825d.pth", "weights-inception-2015-12-05-6726825d.pth"),
        url="https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
        source="TF Inception 2015-12-05 (the FID reference graph) converted by pytorch-fid / torch-fidelity; "
               "same file at https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
        used_by=("fid", "kid"),
        key_names="torch_fidelity/feature_extractor_inceptionv3.py (Conv2d_1a_3x3.conv.weight, Mixed_5b.branch1x1.conv.weight, ..., fc.weight)",
        sha256_prefix="6726825d"),
    WeightSpec(
        name="i3d_torchscript",
        files=("i3d_torchscript.pt",),
        url="https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",
        source="StyleGAN-V (universome/stylegan-v, src/metrics/frechet_video_distance.py): TorchScript port of the "
               "TF-Hub i3d-kinetics-400 model used by the FVD reference code",
        used_by=(),
        key_names="TorchScript archive; converted by `python -m eval weights convert` into i3d_fvd",
        note="TorchScript (code + weights): fetched, then converted once; never loaded by the metrics"),
    WeightSpec(
        name="i3d_fvd",
        files=("i3d_kinetics400_fvd.safetensors",),
        url=None,
        source="written by `python -m eval weights convert` from i3d_torchscript.pt",
        used_by=("fvd",),
        key_names="piergiaj/pytorch-i3d pytorch_i3d.py InceptionI3d (Conv3d_1a_7x7.conv3d.weight, Mixed_3b.b1b.bn.running_mean, ..., logits.conv3d.bias)",
        derived_from="i3d_torchscript",
        note="conversion checks our InceptionI3d against the TorchScript output before writing"),
    WeightSpec(
        name="syncnet",
        files=("syncnet_v2.model",),
        url="http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model",
        source="joonson/syncnet_python (download_model.sh), Chung & Zisserman 2016",
        used_by=("sync_c", "sync_d"),
        key_names="joonson/syncnet_python SyncNetModel.py class S (netcnnaud.0.weight, netfcaud.0.weight, netcnnlip.0.weight, netfclip.3.bias)",
        note="no published checksum"),
    WeightSpec(
        name="arcface_r100",
        files=("backbone.pth", "arcface_r100_backbone.pth"),
        url=None,
        source="deepinsight/insightface recognition/arcface_torch model zoo (ms1mv3_arcface_r100_fp16/backbone.pth; "
               "OneDrive/Baidu links in that README, no direct URL)",
        used_by=("f_sim",),
        key_names="deepinsight/insightface recognition/arcface_torch/backbones/iresnet.py (conv1.weight, layer1.0.prelu.weight, fc.weight, features.running_var)",
        note="manual download; no published checksum"),
    WeightSpec(
        name="alexnet",
        files=("alexnet-owt-7be5be79.pth",),
        url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        source="torchvision AlexNet ImageNet weights (the backbone LPIPS v0.1 'alex' uses)",
        used_by=("lpips",),
        key_names="torchvision.models.alexnet (features.0.weight ... features.10.bias; classifier.* unused)",
        sha256_prefix="7be5be79"),
    WeightSpec(
        name="lpips_alex",
        files=("alex.pth",),
        url="https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth",
        source="richzhang/PerceptualSimilarity lpips/weights/v0.1/alex.pth (Zhang et al. 2018)",
        used_by=("lpips",),
        key_names="lpips/pretrained_networks + lpips.NetLinLayer (lin0.model.1.weight ... lin4.model.1.weight)",
        note="no published checksum"),
    WeightSpec(
        name="s3fd",
        files=("sfd_face.pth",),
        url="https://www.robots.ox.ac.uk/~vgg/software/lipsync/data/sfd_face.pth",
        source="joonson/syncnet_python download_model.sh (S3FD, Zhang et al. 2017; syncnet_python's key layout, not face_alignment's conv1_1 ... names)",
        used_by=("sync_c", "sync_d"),
        key_names="joonson/syncnet_python detectors/s3fd/nets.py S3FDNet (vgg.0.weight ... vgg.33.bias, L2Norm3_3.weight, "
                  "extras.0.weight, loc.0.weight, conf.0.weight ... conf.5.bias)",
        note="no published checksum; used by the syncnet_python face-box route of Sync-C/D"),
    WeightSpec(
        name="deep3dfacerecon",
        files=("epoch_20.pth",),
        url=None,
        source="sicxu/Deep3DFaceRecon_pytorch (Deng et al. 2019, MIT licence) checkpoints/face_recon/epoch_20.pth: "
               "README 'Download the pre-trained model using this link (google drive)' "
               "https://drive.google.com/drive/folders/1liaIxn9smpudjjqMaWWRpP0mXRW_qRPP (no direct URL)",
        used_by=("e_fid_3dmm",),
        key_names="Deep3DFaceRecon_pytorch models/networks.py ReconNetWrapper under the checkpoint's 'net_recon' entry "
                  "(backbone.conv1.weight, backbone.layer4.2.bn3.running_var, final_layers.0.weight ... final_layers.6.bias)",
        note="manual download; no published checksum. Only the regressor is needed (not the BFM basis)"),
    WeightSpec(
        name="lm3d_std",
        files=("similarity_Lm3D_all.mat",),
        url="https://raw.githubusercontent.com/sicxu/Deep3DFaceRecon_pytorch/9167c7136aebef0c54d3ac74f4b0396222a491c1/BFM/similarity_Lm3D_all.mat",
        source="sicxu/Deep3DFaceRecon_pytorch BFM/similarity_Lm3D_all.mat (994 bytes, 68 standard 3D landmarks; "
               "five of them define Deep3DFaceRecon's input alignment)",
        used_by=("e_fid_3dmm",),
        key_names="MATLAB file, variable 'lm' (68, 3)",
        sha256="53b83ce6e35c50ddc3e97603650cef4970320c157e75c241c844f29c1dcba65a",
        note="sha256 of the file at the pinned commit"),
]}


def weights_dir(path: str | os.PathLike | None = None) -> Path:
    if path:
        return Path(path)
    env = os.environ.get("EMO_EVAL_WEIGHTS")
    return Path(env) if env else Path.home() / ".cache" / "emo" / "eval"


def spec(name: str) -> WeightSpec:
    if name not in REGISTRY:
        raise KeyError(f"unknown weights {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name]


def find_weights(name: str, directory: str | os.PathLike | None = None) -> Path | None:
    d = weights_dir(directory)
    for fname in spec(name).files:
        if (d / fname).is_file():
            return d / fname
    return None


def how_to_get(name: str, directory: str | os.PathLike | None = None) -> str:
    s = spec(name)
    where = weights_dir(directory) / s.files[0]
    if s.derived_from:
        return f"{s.files[0]} missing in {where.parent}: run `{FETCH_COMMAND}` then `python -m eval weights convert`"
    if s.url:
        return f"{s.files[0]} missing in {where.parent}: run `{FETCH_COMMAND}` (or download {s.url} to {where})"
    return f"{s.files[0]} missing in {where.parent}: download it by hand from {s.source} to {where}"


def weights_status_line(name: str, directory: str | os.PathLike | None = None) -> str:
    """'' when the file is present (and its checksum, when known, matches); else why not."""
    path = find_weights(name, directory)
    if path is None:
        return how_to_get(name, directory)
    bad = checksum_problem(name, path)
    return bad or ""


_HASH_CACHE: dict[tuple[str, float, int], str] = {}


def sha256_of(path: str | os.PathLike) -> str:
    """sha256 of a file, cached by (path, mtime, size) so repeated status checks stay cheap."""
    st = os.stat(path)
    key = (str(path), st.st_mtime, st.st_size)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = sha256_file(path)
    return _HASH_CACHE[key]


def checksum_problem(name: str, path: Path) -> str:
    s = spec(name)
    if not (s.sha256 or s.sha256_prefix):
        return ""
    return _digest_problem(name, sha256_of(path), str(path))


def _digest_problem(name: str, digest: str, what: str) -> str:
    s = spec(name)
    if s.sha256 and digest != s.sha256:
        return f"{what} has sha256 {digest}, expected {s.sha256}: delete it and run `{FETCH_COMMAND}`"
    if s.sha256_prefix and not digest.startswith(s.sha256_prefix):
        return (f"{what} has sha256 {digest[:16]}..., expected a hash starting {s.sha256_prefix}: "
                f"delete it and run `{FETCH_COMMAND}`")
    return ""


def status_table(directory: str | os.PathLike | None = None) -> list[dict]:
    rows = []
    for name, s in REGISTRY.items():
        path = find_weights(name, directory)
        problem = weights_status_line(name, directory)
        rows.append({"name": name, "file": s.files[0], "present": path is not None,
                     "status": "ok" if not problem else problem, "path": str(path or weights_dir(directory) / s.files[0]),
                     "url": s.url or "(manual) " + s.source, "used_by": ",".join(s.used_by),
                     "sha256": s.sha256 or (f"{s.sha256_prefix}..." if s.sha256_prefix else None)})
    return rows


def weights_hashes(names=None, directory: str | os.PathLike | None = None) -> dict[str, str | None]:
    """{registry name: sha256 of the file used, or None when absent} (the results JSON's env).
    A name the registry does not know is recorded as None, not guessed."""
    out = {}
    for name in names if names is not None else REGISTRY:
        path = find_weights(name, directory) if name in REGISTRY else None
        out[name] = sha256_of(path) if path is not None else None
    return out


class ChecksumMismatch(ValueError):
    pass


def _download(url: str):
    """Stream `url` into the temporary file."""
    def write(tmp: Path) -> None:
        with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as out:  # noqa: S310
            shutil.copyfileobj(resp, out)
    return write


def _verify(name: str, target: Path):
    """The downloaded bytes must carry the registered checksum (raises ChecksumMismatch)."""
    def verify(tmp: Path) -> None:
        bad = _digest_problem(name, sha256_file(tmp), f"the download of {target.name}")
        if bad:
            raise ChecksumMismatch(bad)
    return verify


def fetch(names=None, directory: str | os.PathLike | None = None, log=print) -> dict[str, str]:
    """Download the missing weights that have a direct URL. Each download is checked BEFORE it is
    moved into place (inside emo.fileio.atomic_path's block): a corrupt download never lands."""
    d = weights_dir(directory)
    d.mkdir(parents=True, exist_ok=True)
    report = {}
    for name in names or REGISTRY:
        s = spec(name)
        if find_weights(name, d) is not None:
            report[name] = "present"
            continue
        if not s.url:
            report[name] = "manual: " + how_to_get(name, d)
            continue
        target = d / s.files[0]
        log(f"fetching {s.url} -> {target}")
        try:
            with atomic_path(target) as tmp:      # moved into place only if the block ends normally
                _download(s.url)(tmp)
                _verify(name, target)(tmp)        # checked BEFORE the move: a bad download never lands
        except Exception as exc:
            report[name] = f"failed: {type(exc).__name__}: {exc}"
            continue
        report[name] = "fetched"
    return report


def load_state_dict(name: str, directory: str | os.PathLike | None = None) -> dict:
    """The state dict of registered weights, loaded without arbitrary unpickling."""
    import torch
    path = find_weights(name, directory)
    if path is None:
        raise FileNotFoundError(how_to_get(name, directory))
    bad = checksum_problem(name, path)
    if bad:
        raise ValueError(bad)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    # Some checkpoints wrap the state dict (e.g. {"state_dict": ...}); unwrap the obvious cases.
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def load_strict(module, state: dict, what: str):
    """`module` with `state` loaded, refusing any file that does not fit the architecture exactly."""
    result = module.load_state_dict(state, strict=False)
    # Files saved by PyTorch < 0.4.1 (syncnet_v2.model) have no BatchNorm `num_batches_tracked`
    # counters; they are not weights and do not affect eval-mode outputs.
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise ValueError(f"{what}: the file does not fit the architecture: missing {missing[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")
    return module.eval()


def save_state_dict_atomic(state: dict, path: str | os.PathLike) -> Path:
    """A safetensors file written through emo.fileio.atomic_path."""
    from safetensors.torch import save_file
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
    return Path(path)
