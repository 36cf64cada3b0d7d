"""What training minimises and how fast: label-smoothed cross-entropy, the LR schedules."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def inverse_sqrt_lr(step: int, peak: float, warmup: int) -> float:
    """Linear warmup to peak over `warmup` steps, then peak * sqrt(warmup / step)."""
    step = max(step, 1)
    return peak * min(step / warmup, math.sqrt(warmup / step))


def continued_lr(step: int, peak: float, warmup: int, offset: int, rewarm: int) -> float:
    """The schedule of a run that starts from weights trained `offset` updates already: the
    inverse-sqrt curve continues where it was, reached by a short linear re-warmup over
    `rewarm` updates because the optimiser's moment estimates start empty."""
    step = max(step, 1)
    return inverse_sqrt_lr(offset + step, peak, warmup) * min(1.0, step / max(rewarm, 1))


def loss_fn(
    logits: torch.Tensor, target: torch.Tensor, smoothing: float, pad_id: int
) -> torch.Tensor:
    """Label-smoothed cross-entropy summed over non-pad target tokens."""
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)),
        target.reshape(-1),
        ignore_index=pad_id,
        label_smoothing=smoothing,
        reduction="sum",
    )
