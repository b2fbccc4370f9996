"""Fidelity of an accelerated render against the reference render of the same prompt and seed."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def psnr(video: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in dB of frames in [0, 1] (any matching shape); inf when identical."""
    mse = F.mse_loss(video.double(), reference.double()).item()
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(video: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean SSIM (Wang et al. 2004: 11 x 11 Gaussian window, sigma 1.5) over frames and channels.

    Frames are [F, H, W, C] in [0, 1]; windows are 'valid' (no padding), as in the paper.
    """
    x = video.double().permute(0, 3, 1, 2).reshape(-1, 1, *video.shape[1:3])
    y = reference.double().permute(0, 3, 1, 2).reshape(-1, 1, *reference.shape[1:3])
    w = _gaussian_window()
    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = F.conv2d(x, w), F.conv2d(y, w)
    var_x = F.conv2d(x * x, w) - mu_x**2
    var_y = F.conv2d(y * y, w) - mu_y**2
    cov = F.conv2d(x * y, w) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.mean().item()


def latent_mse(latent: torch.Tensor, reference: torch.Tensor) -> float:
    return F.mse_loss(latent.double(), reference.double()).item()
