"""Input normalisation as a torch module: fitted on training windows, run on raw readings in the exported graph.

Methods (params `prepare.normalization`):
- `global`: (x - mean) / std per channel, statistics of the training readings.
- `robust`: (x - median) / IQR per channel, statistics of the training readings (outliers do not set the scale).
- `per_window`: each window z-scored per channel over time, plus two amplitude channels per input channel
  (log σ and a signed log of the mean, asinh(mean / epsilon)), standardised with training statistics, so the
  shape is learnt at any amplitude and the amplitude stays available as a feature.
- `auto`: `per_window` when the training windows' amplitudes span more decades than an 8-bit activation can
  resolve, else `robust` when heavy tails inflate the std, else `global` (see `choose`).

The same module normalises the training windows (edgedistill.training) and sits at the input of the
exported ONNX graph in FP32, so a device feeds raw readings.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

METHODS = ("global", "robust", "per_window")
AMPLITUDE_FEATURES = ("log_std", "asinh_mean")  # per input channel, in this order after the z-scored channels


class InputNorm(nn.Module):
    """raw [N, C, W] -> normalised [N, C_out, W]; C_out = C, or 3C for per_window. Constants are buffers."""

    def __init__(self, spec: dict[str, Any]):
        super().__init__()
        self.method = spec["method"]
        if self.method not in METHODS:
            raise ValueError(f"unknown normalisation {self.method!r}; choose one of {METHODS}")
        self.in_channels = len(spec["center"])
        self.epsilon = float(spec["epsilon"])
        self.register_buffer("center", _col(spec["center"]), persistent=False)
        self.register_buffer("scale", _col(spec["scale"]), persistent=False)
        if self.method == "per_window":
            self.register_buffer("amp_mean", _col(spec.get("amp_mean") or [0.0] * 2 * self.in_channels),
                                 persistent=False)
            self.register_buffer("amp_std", _col(spec.get("amp_std") or [1.0] * 2 * self.in_channels),
                                 persistent=False)

    @property
    def out_channels(self) -> int:
        return out_channels(self.method, self.in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.method != "per_window":
            return (x - self.center) / self.scale
        mu = x.mean(dim=-1, keepdim=True)
        d = x - mu
        var = (d * d).mean(dim=-1, keepdim=True) + self.epsilon * self.epsilon
        z = d / torch.sqrt(var)
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


def spec_of(norm: dict[str, Any]) -> dict[str, Any]:
    """The spec in a norm.json or a checkpoint's `norm` (one written before normalisation methods existed
    holds only mean/std: global)."""
    if "normalization" in norm:
        return dict(norm["normalization"])
    if "method" in norm:
        return dict(norm)
    return {"method": "global", "epsilon": 1e-8, "mean": list(norm["mean"]), "std": list(norm["std"]),
            "center": list(norm["mean"]), "scale": list(norm["std"]), "out_channels": len(norm["mean"])}


def build_normalized(spec: dict[str, Any], net: nn.Module) -> NormalizedModel:
    return NormalizedModel(InputNorm(spec_of(spec)), net)


# ------------------------------------------------------------------ choosing and fitting on training data

def spread_stats(sd: np.ndarray, gstd: np.ndarray, floor: float) -> tuple[list[float], list[float]]:
    """Per channel, from per-window stds sd [N, C] and the global std of the window values gstd [C]: the
    spread of the window std in decades (log10 p90/p10) and the median window std in global-z units."""
    decades, median_z = [], []
    for c in range(sd.shape[1]):
        s = np.maximum(sd[:, c], floor)
        lo, hi = np.percentile(s, [10, 90])
        decades.append(float(math.log10(hi / lo)))
        median_z.append(float(np.median(sd[:, c]) / max(gstd[c], floor)))
    return decades, median_z


def window_stats(x: np.ndarray, floor: float) -> dict[str, Any]:
    """The statistics `auto` decides on, from raw training windows x [N, C, W] (float)."""
    x = x.astype(np.float64, copy=False)
    sd = x.std(axis=2)  # [N, C] per-window std
    gstd = x.transpose(1, 0, 2).reshape(x.shape[1], -1).std(axis=1)
    decades, median_z = spread_stats(sd, gstd, floor)
    flat = x.transpose(1, 0, 2).reshape(x.shape[1], -1)
    q1, q3 = np.percentile(flat, [25, 75], axis=1)
    iqr_sigma = (q3 - q1) / 1.349  # the std of a normal distribution with this IQR
    tail = [float(g / i) if i > floor else 1.0 for g, i in zip(gstd, iqr_sigma, strict=True)]
    return {"window_std_decades": decades, "median_window_std_global_z": median_z, "std_over_iqr_sigma": tail}


def choose(stats: dict[str, Any], max_decades: float, max_tail_ratio: float) -> tuple[str, str]:
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
        return "robust", f"window std spans {d:.2f} decades <= {max_decades}; std/IQR-sigma {t:.2f} > {max_tail_ratio}"
    return "global", f"window std spans {d:.2f} decades <= {max_decades}; std/IQR-sigma {t:.2f} <= {max_tail_ratio}"


def fit(method: str, train_rows: np.ndarray, train_windows: np.ndarray, epsilon: float) -> dict[str, Any]:
    """The spec of `method` fitted on training readings [R, C] and training windows [N, C, W] (raw)."""
    rows = train_rows.astype(np.float64, copy=False)
    mean, std = rows.mean(axis=0), rows.std(axis=0)
    std = np.where(std < epsilon, 1.0, std)  # a constant channel must not become inf/NaN
    spec: dict[str, Any] = {"method": method, "epsilon": epsilon, "mean": mean.tolist(), "std": std.tolist()}
    if method == "robust":
        q1, med, q3 = np.percentile(rows, [25, 50, 75], axis=0)
        iqr = q3 - q1
        spec |= {"center": med.tolist(), "scale": np.where(iqr < epsilon, std, iqr).tolist()}
    elif method == "global":
        spec |= {"center": mean.tolist(), "scale": std.tolist()}
    else:
        c = rows.shape[1]
        spec |= {"center": [0.0] * c, "scale": [1.0] * c}
        with torch.no_grad():
            out = InputNorm(spec)(torch.from_numpy(train_windows.astype(np.float32, copy=False)))
        amp = out[:, c:, 0].double().numpy()  # [N, 2C] amplitude features before standardisation
        a_std = amp.std(axis=0)
        spec |= {"amp_mean": amp.mean(axis=0).tolist(), "amp_std": np.where(a_std < 1e-6, 1.0, a_std).tolist(),
                 "amplitude_features": list(AMPLITUDE_FEATURES)}
    spec["out_channels"] = out_channels(method, rows.shape[1])
    return spec


@torch.no_grad()
def apply(spec: dict[str, Any], x: torch.Tensor, batch: int = 8192) -> torch.Tensor:
    """Normalise raw windows with the same module the exported graph holds."""
    m = InputNorm(spec).to(x.device)
    return torch.cat([m(x[i : i + batch]) for i in range(0, len(x), batch)]) if len(x) else x
