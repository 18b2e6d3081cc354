"""The fine-tuning objective: cross-entropy, optionally with distillation from a teacher.

``loss = (1 − α)·CE(s, y) + α·τ²·KL(softmax(t/τ) ‖ softmax(s/τ))`` (Hinton et al. 2015), with
``s`` the student's logits, ``t`` the teacher's and τ the temperature; the τ² keeps the gradient
scale of the soft term independent of τ. α = 0 is plain (label-smoothed) cross-entropy.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DistillationLoss(nn.Module):
    """Cross-entropy blended with KL divergence to a teacher's softened predictions.

    Args:
        alpha: weight α of the distillation term in [0, 1].
        temperature: τ > 0 softening both distributions.
        label_smoothing: of the cross-entropy target.
    """

    def __init__(self, alpha: float = 0.0, temperature: float = 1.0, label_smoothing: float = 0.0):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"distillation weight alpha must be in [0, 1], got {alpha}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.alpha, self.temperature, self.label_smoothing = alpha, temperature, label_smoothing

    def forward(self, student: torch.Tensor, labels: torch.Tensor,
                teacher: torch.Tensor | None = None) -> torch.Tensor:
        ce = F.cross_entropy(student, labels, label_smoothing=self.label_smoothing)
        if self.alpha == 0.0:
            return ce
        if teacher is None:
            raise ValueError("distillation (alpha > 0) needs the teacher's logits")
        tau = self.temperature
        kl = F.kl_div(F.log_softmax(student / tau, -1), F.log_softmax(teacher / tau, -1),
                      reduction="batchmean", log_target=True)
        return (1.0 - self.alpha) * ce + self.alpha * tau * tau * kl
