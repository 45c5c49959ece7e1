"""Distillation losses, kept in a few visible lines (Hinton et al. 2015; Beyer et al. CVPR 2022)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(softmax(z_t/T) ‖ softmax(z_s/T)), batch mean. T² keeps gradient size independent of T."""
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean") * (t * t)


def hinton_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor,
                temperature: float, alpha: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """L = α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) + (1−α)·CE(y, z_s)."""
    ce = F.cross_entropy(student_logits.float(), y, label_smoothing=label_smoothing)
    return alpha * kd_kl(student_logits, teacher_logits, temperature) + (1 - alpha) * ce
