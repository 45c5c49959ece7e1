"""Networks: a 1D ResNet teacher and a depthwise-separable 1D CNN student sized for microcontrollers (and the
MiniRocket teacher of edgedistill.train.rocket, rebuilt by the same `build_model`).

Both take [batch, channels, window] float32 (normalised) and return logits [batch, classes].
`build_model(kind, config, in_channels, n_classes)` rebuilds either from a checkpoint's config.
"""

from __future__ import annotations

import copy
import math
from typing import Any, TypedDict

import torch
import torch.nn.functional as F
from pydantic import JsonValue
from torch import nn

from edgedistill.train.rocket import MiniRocketNet


class ResBlock1d(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int):
        super().__init__()
        pad = kernel // 2
        self.body = nn.Sequential(
            nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=pad, bias=False),
            nn.BatchNorm1d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv1d(c_out, c_out, kernel, padding=pad, bias=False),
            nn.BatchNorm1d(c_out),
        )
        self.skip = (
            nn.Identity()
            if c_in == c_out and stride == 1
            else nn.Sequential(
                nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm1d(c_out)
            )
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class ResNet1d(nn.Module):
    """Teacher: stem conv, residual blocks (stride 2 after the first, to keep CPU cost low), GAP, linear."""

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        widths: list[int],
        kernel: int = 7,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv1d(in_channels, widths[0], kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm1d(widths[0]),
            nn.ReLU(inplace=True),
        )
        blocks = []
        c = widths[0]
        for i, w in enumerate(widths):
            blocks.append(ResBlock1d(c, w, kernel, stride=1 if i == 0 else 2))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(c, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(_time_mean(self.blocks(self.stem(x))))


class DSConv1d(nn.Module):
    """Depthwise conv (one filter per channel) then pointwise 1x1 conv: ~k/c_out of a full conv's cost."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int):
        super().__init__()
        self.dw = nn.Conv1d(
            c_in, c_in, kernel, stride=stride, padding=kernel // 2, groups=c_in, bias=False
        )
        self.bn1 = nn.BatchNorm1d(c_in)
        self.pw = nn.Conv1d(c_in, c_out, 1, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn2(self.pw(self.act(self.bn1(self.dw(x))))))


class DSCNN1d(nn.Module):
    """Student: strided stem conv, depthwise-separable blocks, GAP, linear. ~3-5k parameters by default."""

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        widths: list[int],
        kernel: int = 5,
        stem_stride: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv1d(
                in_channels, widths[0], kernel, stride=stem_stride, padding=kernel // 2, bias=False
            ),
            nn.BatchNorm1d(widths[0]),
            nn.ReLU(inplace=True),
        )
        layers = []
        c = widths[0]
        for i, w in enumerate(widths[1:]):
            layers.append(DSConv1d(c, w, kernel, stride=2 if i < 2 else 1))
            c = w
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(c, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(_time_mean(self.blocks(self.stem(x))))


def _time_mean(h: torch.Tensor) -> torch.Tensor:
    """Mean over time of [N, C, W], or of [N, C, 1, W] when the net runs as 2D (channels_last_twin)."""
    return h.mean(dim=-1) if h.dim() == 3 else h.mean(dim=(-2, -1))


class _Conv1dAs2d(nn.Module):
    def __init__(self, conv: nn.Conv1d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return F.conv2d(
            x,
            c.weight.unsqueeze(2),
            c.bias,
            (1, c.stride[0]),
            (0, c.padding[0]),
            (1, c.dilation[0]),
            c.groups,
        )


class _BatchNorm1dAs2d(nn.Module):
    def __init__(self, bn: nn.BatchNorm1d):
        super().__init__()
        self.bn = bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bn
        if b.training and b.track_running_stats:
            b.num_batches_tracked.add_(
                1
            )  # as nn.BatchNorm1d does (momentum is set, so it only counts)
        return F.batch_norm(
            x,
            b.running_mean,
            b.running_var,
            b.weight,
            b.bias,
            b.training or not b.track_running_stats,
            b.momentum,
            b.eps,
        )


def _twin(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.Conv1d) and module.padding_mode == "zeros":
        return _Conv1dAs2d(module)
    if isinstance(module, nn.BatchNorm1d):
        return _BatchNorm1dAs2d(module)
    twin = copy.copy(module)  # shares parameters and buffers; only the child list is the twin's own
    twin._modules = {
        name: _twin(child) if child is not None else None for name, child in module._modules.items()
    }
    return twin


class ChannelsLastTwin(nn.Module):
    """The same network run as 2D on channels-last [N, C, 1, W] tensors, for training on CPU: oneDNN's
    channels-last convolution and batch-norm kernels are much faster there than the 1D ones (student
    forward+backward ~1.8x, teacher ~1.25x on 2 cores; benchmarks/train_throughput.py --breakdown). It shares
    every parameter and buffer with `net`, which is what is saved and exported; its outputs equal `net`'s
    up to float rounding. Only nets of Conv1d/BatchNorm1d/element-wise layers with a time mean at the end."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.twin = _twin(net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.twin(x.unsqueeze(2).contiguous(memory_format=torch.channels_last))


def channels_last_twin(net: nn.Module) -> nn.Module:
    """`ChannelsLastTwin(net)` for the 1D architectures here; other modules are returned as they are."""
    return ChannelsLastTwin(net) if isinstance(net, (ResNet1d, DSCNN1d)) else net


class MemberSpec(TypedDict):
    """One member of an Ensemble: what build_model rebuilds it from."""

    arch: str
    config: dict[str, JsonValue]


class Ensemble(nn.Module):
    """Members' mean class probabilities, as logits: log of the mean of their softmaxes (softmax gives the mean
    back). The teacher teacher.kind auto ships when averaging its candidates wins on val; `members` are
    [{"arch", "config"}] of ARCHS, sharing the input and the classes."""

    def __init__(self, in_channels: int, n_classes: int, members: list[MemberSpec]):
        super().__init__()
        self.members = nn.ModuleList(
            build_model(m["arch"], m["config"], in_channels, n_classes) for m in members
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine([m(x) for m in self.members])

    @staticmethod
    def combine(logits: list[torch.Tensor]) -> torch.Tensor:
        """The members' logits -> the ensemble's: log of the mean of their softmaxes."""
        logp = torch.stack([F.log_softmax(z, dim=1) for z in logits])
        return torch.logsumexp(logp, dim=0) - math.log(len(logits))


ARCHS = {
    "resnet1d": ResNet1d,
    "dscnn1d": DSCNN1d,
    "minirocket": MiniRocketNet,
    "ensemble": Ensemble,
}


def build_model(
    arch: str, config: dict[str, JsonValue], in_channels: int, n_classes: int
) -> nn.Module:
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHS)}")
    return ARCHS[arch](in_channels=in_channels, n_classes=n_classes, **config)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, in_channels: int, window: int) -> int:
    """Multiply-accumulates of one forward pass on one window (conv and linear layers)."""
    macs = 0

    def conv_hook(m: nn.Conv1d, _inp: Any, out: torch.Tensor) -> None:
        nonlocal macs
        macs += out.numel() // out.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0]

    def linear_hook(m: nn.Linear, _inp: Any, out: torch.Tensor) -> None:
        nonlocal macs
        macs += out.numel() // out.shape[0] * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv1d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, in_channels, window))
    model.train(was_training)
    for h in handles:
        h.remove()
    return int(macs)
