"""Distillation losses, kept in a few visible lines (Hinton et al. 2015; Beyer et al. CVPR 2022; Zhao et al.
CVPR 2022)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T² · KL(softmax(z_t/T) ‖ softmax(z_s/T)), batch mean. T² keeps gradient size independent of T."""
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean") * (t * t)


def hinton_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    y: torch.Tensor,
    temperature: float,
    alpha: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """L = α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) + (1−α)·CE(y, z_s)."""
    ce = F.cross_entropy(student_logits.float(), y, label_smoothing=label_smoothing)
    return alpha * kd_kl(student_logits, teacher_logits, temperature) + (1 - alpha) * ce


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    y: torch.Tensor,
    temperature: float,
    alpha: float,
    beta: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Decoupled KD: L = CE(y, z_s) + α·TCKD + β·NCKD, both KL terms at temperature T and scaled by T².
    TCKD matches the binary (target class vs the rest) probabilities, NCKD the distribution over the
    non-target classes alone, so a confident teacher's "dark knowledge" is not drowned by its target mass."""
    t = temperature
    zs, zt = student_logits.float() / t, teacher_logits.float() / t
    gt = F.one_hot(y, zs.shape[-1]).bool()
    p_s, p_t = F.softmax(zs, dim=-1), F.softmax(zt, dim=-1)
    b_s = torch.stack([(p_s * gt).sum(-1), (p_s * ~gt).sum(-1)], dim=-1).clamp_min(1e-8)
    b_t = torch.stack([(p_t * gt).sum(-1), (p_t * ~gt).sum(-1)], dim=-1).clamp_min(1e-8)
    tckd = F.kl_div(b_s.log(), b_t, reduction="batchmean") * (t * t)
    big = 1000.0 * gt  # drops the target class from both softmaxes
    nckd = F.kl_div(
        F.log_softmax(zs - big, dim=-1),
        F.log_softmax(zt - big, dim=-1),
        log_target=True,
        reduction="batchmean",
    ) * (t * t)
    ce = F.cross_entropy(student_logits.float(), y, label_smoothing=label_smoothing)
    return ce + alpha * tckd + beta * nckd
