"""Input normalisation as a torch module: fitted on training windows, run on raw readings in the exported graph.

Methods (params `prepare.normalization`):
- `global`: (x - mean) / std per channel, statistics of the training readings.
- `robust`: (x - median) / IQR per channel, statistics of the training readings (outliers do not set the scale).
- `per_window`: each window z-scored per channel over time, plus two amplitude channels per input channel
  (log σ and a signed log of the mean, asinh(mean / epsilon)), standardised with training statistics, so the
  shape is learnt at any amplitude and the amplitude stays available as a feature.

The epsilon (the floor of a window's std) is per channel, `prepare.norm_epsilon` times the channel's training
std (`channel_epsilon`), so it means the same in any unit. per_window takes each window's statistics after
shifting it by its first reading: a near-constant window far from zero then sums exact small multiples of
its float32 step, and PyTorch, onnxruntime and the MCU agree on it (unshifted, their rounding of the mean,
divided by a window std near the epsilon, differed by up to the whole z-score).
- `auto`: `per_window` when the training windows' amplitudes span more decades than an 8-bit activation can
  resolve, else `robust` when heavy tails inflate the std, else `global` (see `choose`).

The same module normalises the training windows (edgedistill.train.training) and sits at the input of the
exported ONNX graph in FP32, so a device feeds raw readings.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, TypedDict

import numpy as np
import torch
from torch import nn

from edgedistill.data.exactstats import RowMoments

METHODS = ("global", "robust", "per_window")
AMPLITUDE_FEATURES = (
    "log_std",
    "asinh_mean",
)  # per input channel, in this order after the z-scored channels


class NormSpec(TypedDict, total=False):
    """A normalisation as norm.json's `normalization` (and a checkpoint's `norm`) records it: the method,
    per-channel constants, per_window's amplitude statistics, and how `auto` decided."""

    method: str
    epsilon: float | list[float]
    epsilon_relative: float
    mean: list[float]
    std: list[float]
    center: list[float]
    scale: list[float]
    out_channels: int
    amp_mean: list[float]
    amp_std: list[float]
    amplitude_features: list[str]
    requested: str
    reason: str
    statistics: WindowStats
    rule: AutoRule


class AutoRule(TypedDict):
    """The thresholds `auto` decided by, and on which split the statistics were taken."""

    max_decades: float
    max_tail_ratio: float
    fitted_on: str


class WindowStats(TypedDict):
    """What `auto` decides on, per channel."""

    window_std_decades: list[float]
    median_window_std_global_z: list[float]
    std_over_iqr_sigma: list[float]


class AmplitudeStats(TypedDict):
    amp_mean: list[float]
    amp_std: list[float]
    amplitude_features: list[str]


class PreparedNorm(TypedDict, total=False):
    """data/prepared/norm.json: what a model is fed (channels, window, rate, labels, layout) and the
    normalisation fitted on the training split (`mean`/`std` alone: a file from before normalisation
    methods)."""

    channels: list[str]
    labels: list[str]
    window: int
    sample_rate_hz: float
    layout: str
    input: str
    mean: list[float]
    std: list[float]
    normalization: NormSpec


class InputNorm(nn.Module):
    """raw [N, C, W] -> normalised [N, C_out, W]; C_out = C, or 3C for per_window. Constants are buffers."""

    def __init__(self, spec: NormSpec):
        super().__init__()
        self.method = spec["method"]
        if self.method not in METHODS:
            raise ValueError(f"unknown normalisation {self.method!r}; choose one of {METHODS}")
        self.in_channels = len(spec["center"])
        eps = spec[
            "epsilon"
        ]  # per channel (channel_epsilon); a spec written before that holds one number
        eps = [float(eps)] * self.in_channels if isinstance(eps, int | float) else eps
        self.register_buffer("center", _col(spec["center"]), persistent=False)
        self.register_buffer("scale", _col(spec["scale"]), persistent=False)
        # buffers, not Python floats: the ONNX exporter's optimiser drops `+ 1e-12` (a scalar it takes for
        # zero), so a constant window became 0/0 in ONNX while PyTorch added the epsilon
        self.register_buffer("epsilon", _col(eps), persistent=False)
        self.register_buffer("epsilon_sq", _col([float(e) ** 2 for e in eps]), persistent=False)
        if self.method == "per_window":
            self.register_buffer(
                "amp_mean",
                _col(spec.get("amp_mean") or [0.0] * 2 * self.in_channels),
                persistent=False,
            )
            self.register_buffer(
                "amp_std",
                _col(spec.get("amp_std") or [1.0] * 2 * self.in_channels),
                persistent=False,
            )

    @property
    def out_channels(self) -> int:
        return out_channels(self.method, self.in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.method != "per_window":
            return (x - self.center) / self.scale
        # shifted by each window's first reading (the shifted-data variance algorithm): the mean is taken
        # over values near zero, so its float rounding scales with the window's spread, not its offset
        x0 = x[..., :1]
        xs = x - x0
        m = xs.mean(dim=-1, keepdim=True)
        d = xs - m
        var = (d * d).mean(dim=-1, keepdim=True) + self.epsilon_sq
        z = d / torch.sqrt(var)
        mu = x0 + m
        amp = torch.cat([0.5 * torch.log(var), torch.asinh(mu / self.epsilon)], dim=1)  # [N, 2C, 1]
        amp = (amp - self.amp_mean) / self.amp_std
        return torch.cat([z, amp.expand(-1, -1, x.shape[-1])], dim=1)


def _col(values: Any) -> torch.Tensor:
    return torch.tensor([float(v) for v in values], dtype=torch.float32).view(1, -1, 1)


def out_channels(method: str, in_channels: int) -> int:
    return in_channels * (1 + len(AMPLITUDE_FEATURES)) if method == "per_window" else in_channels


class NormalizedModel(nn.Module):
    """What a device runs: normalisation then the network. `net` is trained on normalised windows."""

    def __init__(self, norm: InputNorm, net: nn.Module):
        super().__init__()
        self.norm = norm
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x))


def spec_of(norm: PreparedNorm | NormSpec) -> NormSpec:
    """The spec in a norm.json or a checkpoint's `norm` (one written before normalisation methods existed
    holds only mean/std: global)."""
    if "normalization" in norm:
        return dict(norm["normalization"])
    if "method" in norm:
        return dict(norm)
    return {
        "method": "global",
        "epsilon": 1e-8,
        "mean": list(norm["mean"]),
        "std": list(norm["std"]),
        "center": list(norm["mean"]),
        "scale": list(norm["std"]),
        "out_channels": len(norm["mean"]),
    }


def build_normalized(spec: NormSpec, net: nn.Module) -> NormalizedModel:
    return NormalizedModel(InputNorm(spec_of(spec)), net)


# ------------------------------------------------------------------ choosing and fitting on training data


def spread_stats(
    sd: np.ndarray, gstd: np.ndarray, epsilon: float
) -> tuple[list[float], list[float]]:
    """Per channel, from per-window stds sd [N, C] and the global std of the window values gstd [C]: the
    spread of the window std in decades (log10 p90/p10, stds floored at channel_epsilon) and the median
    window std in global-z units."""
    floor = channel_epsilon(gstd, epsilon)
    decades, median_z = [], []
    for c in range(sd.shape[1]):
        s = np.maximum(sd[:, c], floor[c])
        lo, hi = np.percentile(s, [10, 90])
        decades.append(float(math.log10(hi / lo)))
        median_z.append(float(np.median(sd[:, c]) / max(gstd[c], floor[c])))
    return decades, median_z


def tail_ratios(gstd: np.ndarray, iqr_sigma: np.ndarray, epsilon: float) -> list[float]:
    """std / IQR-sigma per channel (1.0 where the IQR is below channel_epsilon: a near-constant bulk)."""
    floor = channel_epsilon(gstd, epsilon)
    return [float(g / i) if i > f else 1.0 for g, i, f in zip(gstd, iqr_sigma, floor, strict=True)]


def window_stats(x: np.ndarray, epsilon: float) -> WindowStats:
    """The statistics `auto` decides on, from raw training windows x [N, C, W] (float)."""
    x = x.astype(np.float64, copy=False)
    sd = x.std(axis=2)  # [N, C] per-window std
    gstd = x.transpose(1, 0, 2).reshape(x.shape[1], -1).std(axis=1)
    decades, median_z = spread_stats(sd, gstd, epsilon)
    flat = x.transpose(1, 0, 2).reshape(x.shape[1], -1)
    q1, q3 = np.percentile(flat, [25, 75], axis=1)
    iqr_sigma = (q3 - q1) / 1.349  # the std of a normal distribution with this IQR
    return {
        "window_std_decades": decades,
        "median_window_std_global_z": median_z,
        "std_over_iqr_sigma": tail_ratios(gstd, iqr_sigma, epsilon),
    }


def choose(stats: WindowStats, max_decades: float, max_tail_ratio: float) -> tuple[str, str]:
    """`auto`: (method, reason). per_window when the 10th-90th percentile of per-window std spans more than
    `max_decades` on any channel: after one global scale the quiet windows sit below the loud ones by more
    than an 8-bit activation resolves (log10(127) = 2.1 decades), so their shape is lost to quantisation
    and to the net's first layers alike. robust when the std exceeds the IQR's normal-equivalent sigma by
    `max_tail_ratio` (outliers would squeeze the bulk of the data). Otherwise global."""
    d = max(stats["window_std_decades"])
    if d > max_decades:
        return "per_window", f"window std spans {d:.2f} decades (p10-p90) > {max_decades}"
    t = max(stats["std_over_iqr_sigma"])
    if t > max_tail_ratio:
        return (
            "robust",
            f"window std spans {d:.2f} decades <= {max_decades}; std/IQR-sigma {t:.2f} > {max_tail_ratio}",
        )
    return (
        "global",
        f"window std spans {d:.2f} decades <= {max_decades}; std/IQR-sigma {t:.2f} <= {max_tail_ratio}",
    )


def channel_epsilon(std: np.ndarray, epsilon: float) -> np.ndarray:
    """The floor of a window's std per channel: `epsilon` x the channel's training std (a channel constant
    in training: `epsilon` in its raw units). Relative, so the same default fits readings in any unit."""
    std = np.asarray(std, dtype=np.float64)
    return epsilon * np.where(std > 0, std, 1.0)


def spec_from_moments(
    method: str,
    mean: np.ndarray,
    std: np.ndarray,
    epsilon: float,
    quartiles: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> NormSpec:
    """The spec of `method` from the training readings' per-channel mean and std (and for robust their
    quartiles, computed only then); per_window's amplitude statistics are added by `amplitude_stats`."""
    eps = channel_epsilon(std, epsilon)
    std = np.where(std > 0, std, 1.0)  # a constant channel must not become inf/NaN
    spec: NormSpec = {
        "method": method,
        "epsilon": eps.tolist(),
        "epsilon_relative": epsilon,
        "mean": mean.tolist(),
        "std": std.tolist(),
    }
    if method == "robust":
        q1, med, q3 = quartiles()
        iqr = q3 - q1
        spec |= {"center": med.tolist(), "scale": np.where(iqr > eps, iqr, std).tolist()}
    elif method == "global":
        spec |= {"center": mean.tolist(), "scale": std.tolist()}
    else:
        spec |= {"center": [0.0] * len(mean), "scale": [1.0] * len(mean)}
    spec["out_channels"] = out_channels(method, len(mean))
    return spec


@torch.no_grad()
def amplitude_stats(spec: NormSpec, window_chunks: Iterable[np.ndarray]) -> AmplitudeStats:
    """per_window: the mean and std of the amplitude features over the training windows (raw, [n, C, W])."""
    norm, c = InputNorm(spec), len(spec["center"])
    amp = np.concatenate(
        [
            norm(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))[:, c:, 0]
            .double()
            .numpy()
            for x in window_chunks
        ]
    )  # [N, 2C] before standardisation
    a_std = amp.std(axis=0)
    return {
        "amp_mean": amp.mean(axis=0).tolist(),
        "amp_std": np.where(a_std < 1e-6, 1.0, a_std).tolist(),
        "amplitude_features": list(AMPLITUDE_FEATURES),
    }


def fit(method: str, train_rows: np.ndarray, train_windows: np.ndarray, epsilon: float) -> NormSpec:
    """The spec of `method` fitted on training readings [R, C] and training windows [N, C, W] (raw).
    The readings are taken as float32, as prepare stores them (float64 rows are rounded first); their
    mean and std are exact sums, correctly rounded (edgedistill.data.exactstats), the same numbers as the
    chunked and distributed fit of edgedistill.data.prepare_stats."""
    rows = np.asarray(train_rows, dtype=np.float32)
    mean, std = RowMoments.of(rows).mean_std()
    spec = spec_from_moments(
        method,
        mean,
        std,
        epsilon,
        lambda: tuple(np.percentile(rows.astype(np.float64), [25, 50, 75], axis=0)),
    )
    if method == "per_window":
        spec |= amplitude_stats(spec, [train_windows])
    return spec


@torch.no_grad()
def apply(spec: NormSpec, x: torch.Tensor, batch: int = 8192) -> torch.Tensor:
    """Normalise raw windows with the same module the exported graph holds."""
    m = InputNorm(spec).to(x.device)
    return torch.cat([m(x[i : i + batch]) for i in range(0, len(x), batch)]) if len(x) else x
