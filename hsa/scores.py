"""Velocity dynamics: how undecided each token still is.

With x = (1 - sigma) x0 + sigma eps the ideal velocity is (x - E[x0 | x]) / sigma; once a token's
clean content is determined its velocity stops changing and a cached Euler jump is exact. The
change of a token's velocity between its last two evaluations therefore measures the error a
cached update would make.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def velocity_change_score(
    v_new: torch.Tensor, v_old: torch.Tensor, relative: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """Per-token L1 change between two velocities of shape [B, N, C]; returns [N] (batch mean)."""
    change = (v_new.float() - v_old.float()).abs().sum(-1)
    if relative:
        change = change / (v_old.float().abs().sum(-1) + eps)
    return change.mean(0)


def dilate_scores(scores: torch.Tensor, grid: tuple[int, int, int], radius: int) -> torch.Tensor:
    """Max-filter scores over a (2r+1)^3 neighbourhood of the token grid (frames, height, width)."""
    if radius <= 0:
        return scores
    volume = scores.reshape(1, 1, *grid)
    k = 2 * radius + 1
    return F.max_pool3d(volume, kernel_size=k, stride=1, padding=radius).reshape(-1)
