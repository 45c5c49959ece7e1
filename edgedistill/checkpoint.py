"""Model checkpoints: weights plus everything needed to rebuild and feed the model on its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgedistill.errors import ArtifactCorrupt, ModelMismatch
from edgedistill.io import atomic_path
from edgedistill.nets import build_model

META_KEYS = ("arch", "config", "in_channels", "n_classes", "window", "channels", "labels",
             "sample_rate_hz", "norm")


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """meta: arch, config, in_channels, n_classes, window, channels, labels, sample_rate_hz,
    norm ({mean, std} per channel); extra keys (metrics, epoch) are kept."""
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"checkpoint meta lacks {missing}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({**meta, "state_dict": state}, tmp)


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model (eval mode, CPU) and return it with its meta."""
    path = Path(path)
    if not path.is_file():
        raise ModelMismatch(f"{path}: checkpoint not found", hint="Run the training stage first (`dvc repro`).")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ArtifactCorrupt(f"{path}: not a readable checkpoint ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(blob, dict) or "state_dict" not in blob or any(k not in blob for k in META_KEYS):
        raise ArtifactCorrupt(f"{path}: not an edgedistill checkpoint (missing keys)")
    model = build_model(blob["arch"], blob["config"], blob["in_channels"], blob["n_classes"])
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as e:
        raise ArtifactCorrupt(f"{path}: weights do not match architecture {blob['arch']}: {str(e)[:200]}") from None
    model.eval()
    meta = {k: v for k, v in blob.items() if k != "state_dict"}
    return model, meta


def check_compatible(meta: dict[str, Any], x_shape: tuple[int, ...], what: str) -> None:
    """Fail clearly when data [N, C, W] does not match what the checkpoint was trained on."""
    if len(x_shape) != 3 or x_shape[1] != meta["in_channels"] or x_shape[2] != meta["window"]:
        raise ModelMismatch(
            f"{what}: data has shape [N, C, W]={list(x_shape)} but the model expects "
            f"C={meta['in_channels']} channels and W={meta['window']} readings per window"
        )


def weights_sha256(path: str | Path) -> str:
    """Hash of the checkpoint's tensors (names, dtypes, shapes, bytes). Unlike the file's sha256 it is the
    same for two saves of the same weights: torch.save writes a random serialization id into every file."""
    import hashlib

    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    h = hashlib.sha256()
    for name, t in sorted(blob["state_dict"].items()):
        h.update(f"{name}:{t.dtype}:{list(t.shape)}".encode())
        h.update(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
