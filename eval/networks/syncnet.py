"""SyncNet (Chung & Zisserman 2016) as released in joonson/syncnet_python (`syncnet_v2.model`).

Key names follow syncnet_python's `SyncNetModel.S`: four `nn.Sequential`s, `netcnnaud` (audio
CNN over a 13 x 20 MFCC window), `netfcaud`, `netcnnlip` (3D CNN over 5 consecutive frames of a
224 x 224 face crop, in OpenCV's BGR channel order) and `netfclip`. Indices inside each Sequential count ReLUs and pools,
as in the original (`netcnnaud.0.weight`, `netcnnaud.1.running_mean`, `netfcaud.3.weight`,
`netcnnlip.24.weight`...), so `syncnet_v2.model` loads with `load_state_dict(strict=True)`.

Input conventions of the released model (kept by `eval.metrics.sync`): lip input is
(N, 3, 5, 224, 224) float BGR in 0..255, unnormalised; audio input is (N, 1, 13, 20) MFCCs from
python_speech_features with its defaults, 100 MFCC frames per second, 4 per video frame at 25 fps.
"""
from __future__ import annotations

import torch
from torch import nn


def _conv2d_block(cin, cout, kernel, pool=None, padding=(1, 1), relu_inplace=True):
    layers = [nn.Conv2d(cin, cout, kernel_size=kernel, stride=(1, 1), padding=padding),
              nn.BatchNorm2d(cout), nn.ReLU(inplace=relu_inplace)]
    if pool is not None:
        layers.append(pool)
    return layers


def _conv3d_block(cin, cout, kernel, stride=(1, 1, 1), padding=0, pool=None):
    layers = [nn.Conv3d(cin, cout, kernel_size=kernel, stride=stride, padding=padding),
              nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]
    if pool is not None:
        layers.append(pool)
    return layers


def _embedding_head(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, dim))


class SyncNet(nn.Module):
    def __init__(self, embedding_dim: int = 1024):
        super().__init__()
        self.netcnnaud = nn.Sequential(
            *_conv2d_block(1, 64, (3, 3), nn.MaxPool2d(kernel_size=(1, 1), stride=(1, 1))),
            *_conv2d_block(64, 192, (3, 3), nn.MaxPool2d(kernel_size=(3, 3), stride=(1, 2))),
            *_conv2d_block(192, 384, (3, 3)),
            *_conv2d_block(384, 256, (3, 3)),
            *_conv2d_block(256, 256, (3, 3), nn.MaxPool2d(kernel_size=(3, 3), stride=(2, 2))),
            *_conv2d_block(256, 512, (5, 4), padding=(0, 0), relu_inplace=False),
        )
        self.netfcaud = _embedding_head(embedding_dim)
        self.netfclip = _embedding_head(embedding_dim)
        self.netcnnlip = nn.Sequential(
            *_conv3d_block(3, 96, (5, 7, 7), stride=(1, 2, 2),
                           pool=nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2))),
            *_conv3d_block(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1),
                           pool=nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))),
            *_conv3d_block(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            *_conv3d_block(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            *_conv3d_block(256, 256, (1, 3, 3), padding=(0, 1, 1),
                           pool=nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2))),
            *_conv3d_block(256, 512, (1, 6, 6)),
        )
        self.eval()

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(N, 1, 13, 20) MFCC windows -> (N, embedding_dim)."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_lip(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, 5, 224, 224) BGR 0..255 -> (N, embedding_dim)."""
        return self.netfclip(self.netcnnlip(frames).flatten(1))
