"""Model checkpoints: weights plus everything needed to rebuild and feed the model on its own."""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
from pydantic import JsonValue
from torch import nn

from edgedistill.data.normalization import NormSpec, PreparedNorm, build_normalized
from edgedistill.errors import ArtifactCorrupt, ModelMismatch
from edgedistill.io import atomic_path
from edgedistill.train.nets import build_model

META_KEYS = (
    "arch",
    "config",
    "in_channels",
    "n_classes",
    "window",
    "channels",
    "labels",
    "sample_rate_hz",
    "norm",
)


class CheckpointMeta(TypedDict, total=False):
    """What a checkpoint needs to be used on its own (META_KEYS are required; net_in_channels is the
    channel count after the normalisation), and what the training stages add: its test accuracy, the KD
    params, which student ships."""

    arch: str
    config: dict[str, JsonValue]
    in_channels: int
    net_in_channels: int
    n_classes: int
    window: int
    channels: list[str]
    labels: list[str]
    sample_rate_hz: float
    norm: NormSpec
    metrics: dict[str, float]
    distill: dict[str, JsonValue]
    shipped: str


def save_checkpoint(path: str | Path, model: nn.Module, meta: CheckpointMeta) -> None:
    """meta: arch, config, in_channels, n_classes, window, channels, labels, sample_rate_hz,
    norm (the normalisation spec, edgedistill.data.normalization), optionally net_in_channels (channels after the
    normalisation); extra keys (metrics, epoch) are kept. `model` is the bare network (trained on normalised
    windows); a NormalizedModel is saved as its network."""
    model = getattr(model, "net", model)
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"checkpoint meta lacks {missing}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    # saved through a file object: torch.save(obj, path) names the zip's records after the file (here the
    # random temp name), so two saves of the same weights would differ and re-run every stage after them
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save({**meta, "state_dict": state}, f)


def load_checkpoint(path: str | Path) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the model (eval mode, CPU) and return it with its meta. The model takes RAW readings
    [N, in_channels, window]: the normalisation from meta["norm"] runs first; `model.net` is the network
    alone, for windows already normalised (edgedistill.train.training.load_prepared)."""
    path = Path(path)
    if not path.is_file():
        raise ModelMismatch(
            f"{path}: checkpoint not found", hint="Run the training stage first (`dvc repro`)."
        )
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ArtifactCorrupt(
            f"{path}: not a readable checkpoint ({str(e).splitlines()[0][:200]})"
        ) from None
    if (
        not isinstance(blob, dict)
        or "state_dict" not in blob
        or any(k not in blob for k in META_KEYS)
    ):
        raise ArtifactCorrupt(f"{path}: not an edgedistill checkpoint (missing keys)")
    net = build_model(
        blob["arch"],
        blob["config"],
        blob.get("net_in_channels", blob["in_channels"]),
        blob["n_classes"],
    )
    try:
        net.load_state_dict(blob["state_dict"])
    except RuntimeError as e:
        raise ArtifactCorrupt(
            f"{path}: weights do not match architecture {blob['arch']}: {str(e)[:200]}"
        ) from None
    try:
        model = build_normalized(blob["norm"], net)
    except (KeyError, ValueError, TypeError) as e:
        raise ArtifactCorrupt(
            f"{path}: unusable normalisation spec in the checkpoint ({e})"
        ) from None
    model.eval()
    meta = {k: v for k, v in blob.items() if k != "state_dict"}
    return model, meta


def check_compatible(
    meta: CheckpointMeta, x_shape: tuple[int, ...], what: str, normalised: bool = False
) -> None:
    """Fail clearly when data [N, C, W] does not match what the checkpoint was trained on (raw readings, or
    with `normalised` the windows after the normalisation, as the network alone takes them)."""
    c = meta.get("net_in_channels", meta["in_channels"]) if normalised else meta["in_channels"]
    if len(x_shape) != 3 or x_shape[1] != c or x_shape[2] != meta["window"]:
        raise ModelMismatch(
            f"{what}: data has shape [N, C, W]={list(x_shape)} but the model expects "
            f"C={c} channels and W={meta['window']} readings per window"
        )


def check_same_norm(meta: CheckpointMeta, other: CheckpointMeta | PreparedNorm, what: str) -> None:
    """Two models (or a model and norm.json) must normalise identically, or one is fed wrongly scaled data."""
    from edgedistill.data.normalization import spec_of

    a, b = spec_of(meta["norm"]), spec_of(other["norm"])
    same = (
        a["method"] == b["method"]
        and list(meta["channels"]) == list(other["channels"])
        and all(
            np.allclose(a.get(k, []), b.get(k, []), rtol=1e-6, atol=1e-9)
            for k in ("center", "scale", "amp_mean", "amp_std")
        )
    )
    if not same:
        raise ModelMismatch(
            f"{what}: trained with normalisation {a['method']} / channels {meta['channels']} that "
            f"differ from the current data's ({b['method']} / {other['channels']}); re-run the "
            "upstream stages so they agree"
        )


def weights_sha256(path: str | Path) -> str:
    """Hash of the checkpoint's tensors (names, dtypes, shapes, bytes): the same for the same weights
    whatever else the file holds (meta) or however it was written (older checkpoints named their zip
    records after a random temp file)."""
    import hashlib

    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    h = hashlib.sha256()
    for name, t in sorted(blob["state_dict"].items()):
        h.update(f"{name}:{t.dtype}:{list(t.shape)}".encode())
        h.update(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
