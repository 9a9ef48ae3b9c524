"""Losses as (value, gradient w.r.t. logits) pairs on client-stacked batches, plus the matching accuracy.

``cross_entropy``: integer class labels, softmax output (HAR, one label per client).
``bce``: float labels in {0, 1} per output with NaN for "no label", sigmoid outputs, missing labels masked (the
paper's joint face model with five sigmoid outputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["LOSSES", "check_loss", "loss_value", "loss_grad", "correct_and_count"]

LOSSES = ("cross_entropy", "bce")


def check_loss(name: str) -> str:
    from fedmtl.errors import ConfigError

    if name not in LOSSES:
        raise ConfigError(f"loss {name!r} is unknown (known: {', '.join(LOSSES)})")
    return name


def _bce_weight(y: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-entry weights: each client's batch mean over labelled entries only."""
    labelled = torch.isfinite(y) & (weight > 0).unsqueeze(-1)
    per_client = labelled.flatten(1).sum(1).clamp(min=1).view(-1, *([1] * (y.dim() - 1)))
    return labelled.float() / per_client, torch.nan_to_num(y, nan=0.0)


def loss_value(name: str, logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Sum over clients of each client's weighted batch loss (so per-client gradients stay independent)."""
    if name == "cross_entropy":
        nll = F.cross_entropy(logits.flatten(0, -2), y.flatten(), reduction="none").view_as(weight)
        return (nll * weight).sum()
    w, target = _bce_weight(y, weight)
    return (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * w).sum()


def loss_grad(name: str, logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """d loss_value / d logits in closed form, for backends that do their own backward pass."""
    if name == "cross_entropy":
        grad = torch.softmax(logits, dim=-1)
        grad.scatter_add_(-1, y.unsqueeze(-1), torch.full_like(grad[..., :1], -1.0))
        return grad.mul_(weight.unsqueeze(-1))
    w, target = _bce_weight(y, weight)
    return (torch.sigmoid(logits) - target).mul_(w)


def correct_and_count(name: str, logits: torch.Tensor, y: torch.Tensor, valid: torch.Tensor) -> tuple:
    """Per-client (correct, total) over valid rows; for ``bce`` every labelled output counts once."""
    if name == "cross_entropy":
        hit = (logits.argmax(-1) == y) & valid
        return hit.sum(-1), valid.sum(-1)
    labelled = torch.isfinite(y) & valid.unsqueeze(-1)
    hit = ((logits > 0).float() == torch.nan_to_num(y, nan=-1.0)) & labelled
    return hit.flatten(1).sum(-1), labelled.flatten(1).sum(-1)
