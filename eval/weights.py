"""Evaluation's view of the weights registry (`emo.weights`, shared with dataprep), plus the one
conversion only evaluation needs: StyleGAN-V's TorchScript I3D into a safetensors state dict."""
from __future__ import annotations

import os
from pathlib import Path

from emo.weights import (FETCH_COMMAND, REGISTRY, WeightSpec, checksum_problem, fetch, find_weights,  # noqa: F401
                         how_to_get, load_state_dict, load_strict, save_state_dict_atomic, sha256_of, spec,
                         status_table, weights_dir, weights_hashes, weights_status_line)


def convert_i3d_torchscript(directory: str | os.PathLike | None = None) -> Path:
    """`python -m eval weights convert`: i3d_torchscript.pt -> i3d_kinetics400_fvd.safetensors
    (checked against the TorchScript module's own output; see eval.networks.i3d)."""
    from eval.networks.i3d import convert_torchscript_file
    src = find_weights("i3d_torchscript", directory)
    if src is None:
        raise FileNotFoundError(how_to_get("i3d_torchscript", directory))
    bad = checksum_problem("i3d_torchscript", src)
    if bad:
        raise ValueError(bad)
    return convert_torchscript_file(src, weights_dir(directory) / spec("i3d_fvd").files[0])
