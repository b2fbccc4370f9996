"""Cached Euler: every token moves with its last computed velocity.

Over skipped steps k .. k+d-1 the per-step updates telescope into one jump
x(sigma_{k+d}) = x(sigma_k) + (sigma_{k+d} - sigma_k) * v_k, so one fused update of all tokens
per step is exact for tokens whose velocity has settled, and costs no model call.
"""

from __future__ import annotations

import torch


def cached_euler_step(x: torch.Tensor, v_buf: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    return x + (sigma_next - sigma) * v_buf
