"""The shifted flow-matching sigma grid (sigma 1 = noise, 0 = data)."""

from __future__ import annotations

import torch


def shift_sigma(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * sigma / (1 + (shift - 1) * sigma)


def shifted_sigmas(steps: int, shift: float = 1.0, num_train_timesteps: int = 1000) -> torch.Tensor:
    """Sigmas of an Euler flow-matching run with ``steps`` steps: ``steps + 1`` values ending in 0.

    Matches diffusers' FlowMatchEulerDiscreteScheduler(shift=shift).set_timesteps(steps): a linear
    grid from 1 to the shifted smallest training sigma, shifted again.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    n = num_train_timesteps
    sigma_min = float(shift_sigma(torch.tensor(1.0 / n, dtype=torch.float64), shift))
    grid = torch.linspace(n * 1.0, sigma_min * n, steps, dtype=torch.float64) / n
    sigmas = shift_sigma(grid, shift).to(torch.float32)
    return torch.cat([sigmas, sigmas.new_zeros(1)])
