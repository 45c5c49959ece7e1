"""The teacher's bank of augmented + mixup views (function matching): generated on the CPU from a seed,
so the teacher_logits and distill stages regenerate exactly the same views, each identified by the
SHA-256 of its bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch

from edgedistill.training import Augment, augment, mixup


def bank_views(x_cpu: torch.Tensor, views: int, aug: Augment, mixup_alpha: float,
               seed: int) -> Iterator[torch.Tensor]:
    """Yield the bank's views one at a time, generated on the CPU from `seed` (identical on every machine)."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    for _ in range(views):
        yield mixup(augment(x_cpu, aug, gen), mixup_alpha, gen)


def view_digest(v: torch.Tensor) -> str:
    """SHA-256 of the view's float32 bytes: any shift, permutation or rescale of a value changes it
    (a sum of magnitudes would not notice the circular shifts and permutations augment applies)."""
    a = v.detach().to("cpu", torch.float32).contiguous().numpy()
    return hashlib.sha256(a.tobytes()).hexdigest() + f":{'x'.join(map(str, a.shape))}"
