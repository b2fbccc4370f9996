"""The whole HSA loop over any velocity function (a transformer, or an analytic oracle)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from hsa.config import HSAConfig
from hsa.euler import cached_euler_step
from hsa.plan import HSAPlan, plan_budget
from hsa.stepper import TokenStepper

# velocity_fn(x, index, step) -> velocities [B, |A|, C] of the tokens at index (None = all)
VelocityFn = Callable[[torch.Tensor, "torch.Tensor | None", int], torch.Tensor]


@dataclass
class SampleResult:
    x: torch.Tensor
    plan: HSAPlan
    evaluations: int

    @property
    def achieved_fraction(self) -> float:
        return self.evaluations / (self.plan.steps * self.x.shape[1])


def sample(
    x: torch.Tensor,
    sigmas: torch.Tensor,
    velocity_fn: VelocityFn,
    config: HSAConfig,
    grid: tuple[int, int, int] | None = None,
) -> SampleResult:
    """Integrate x [B, N, C] from sigmas[0] to sigmas[-1] spending ``config.budget``."""
    steps = sigmas.numel() - 1
    plan = plan_budget(steps, config)
    stepper = TokenStepper(plan, config, grid=grid, sigmas=sigmas)
    for k in range(steps):
        index = stepper.active(k, x.shape[1])
        if index is None or index.numel():  # a step with no active token calls no model
            stepper.observe(k, velocity_fn(x, index, k), index)
        x = cached_euler_step(x, stepper.velocity(k), float(sigmas[k]), float(sigmas[k + 1]))
    return SampleResult(x=x, plan=plan, evaluations=stepper.evaluations)
