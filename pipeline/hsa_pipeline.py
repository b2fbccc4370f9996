"""Apply HSA to a diffusers pipeline, and remove it again, in diffusers' style.

    controller = apply_hsa(pipe, HSAConfig(budget=0.5))
    frames = pipe(prompt=..., ...).frames      # an ordinary call, now with HSA
    controller.stats()                         # planned / achieved fraction of that run
    remove_hsa(pipe)                           # the stock pipeline again

The controller listens to the scheduler: ``set_timesteps`` starts a run (plan, fresh caches),
``step`` hands it the guided velocity the Euler update consumes (scores are computed on it). The
transformer hooks ask it which tokens are active; every guidance branch of a step gets the same
set. A change of network (Wan 2.2's expert switch) forces a full step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from hsa import HSAConfig, HSAPlan, TokenStepper, plan_budget
from pipeline import wan
from pipeline.parallel import Comm


@dataclass(frozen=True)
class RunStats:
    budget: float
    planned_fraction: float
    achieved_fraction: float
    token_evaluations: int
    dense_token_evaluations: int
    transformer_calls: int
    steps: int


class _Run:
    def __init__(self, plan: HSAPlan, sigmas: torch.Tensor) -> None:
        self.plan, self.sigmas = plan, sigmas
        self.stepper: TokenStepper | None = None
        self.step = 0
        self.selected_step = -1
        self.index: torch.Tensor | None = None
        self.model: torch.nn.Module | None = None
        self.switched = False  # this step runs a different network than the last one


class HSAController:
    def __init__(self, pipe: Any, config: HSAConfig, comm: Comm | None = None) -> None:
        if not isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler):
            raise TypeError(
                f"HSA needs FlowMatchEulerDiscreteScheduler (its cached Euler update is the scheduler's Euler "
                f"step); this pipeline has {type(pipe.scheduler).__name__}. Use "
                "pipeline.loading.use_flow_match_euler(pipe) first."
            )
        if comm is not None:
            if comm.config.ring > 1 and config.budget < 1.0:
                raise ValueError(
                    f"ring attention (ring degree {comm.config.ring}) runs dense steps only: use budget 1.0, "
                    "or Ulysses parallelism for HSA budgets"
                )
            config = replace(config, quota_shards=comm.sequence)
        self.pipe, self.config, self.comm = pipe, config, comm
        self.run: _Run | None = None
        self.attachments = [
            wan.WanHSA(t, self._select, comm, kv_sync=config.kv == "sync") for t in wan.transformers_of(pipe)
        ]
        scheduler = pipe.scheduler
        set_timesteps, step = scheduler.set_timesteps, scheduler.step

        def set_timesteps_and_plan(*args: Any, **kwargs: Any) -> Any:
            result = set_timesteps(*args, **kwargs)
            self._begin_run()
            return result

        def step_and_observe(model_output: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            index = self._observe(model_output)
            # cached Euler needs nothing more: skipped tokens' outputs already are their cached velocity
            if index is not None and config.skipped == "freeze":
                velocity = self.run.stepper.velocity(self.run.step - 1)
                patch = self.run.model.config.patch_size
                model_output = wan.unpatchify(velocity, model_output.shape, patch).to(model_output.dtype)
            return step(model_output, *args, **kwargs)

        scheduler.set_timesteps, scheduler.step = set_timesteps_and_plan, step_and_observe

    def _begin_run(self) -> None:
        if self.comm is not None and self.comm.config.cfg > 1 and not self.pipe.do_classifier_free_guidance:
            raise ValueError("CFG parallel needs classifier-free guidance (guidance_scale > 1)")
        timesteps = self.pipe.scheduler.timesteps
        switch = wan.expert_switch_step(self.pipe, timesteps)
        plan = plan_budget(len(timesteps), self.config, forced_full={switch} if switch is not None else set())
        self.run = _Run(plan, self.pipe.scheduler.sigmas)
        if self.comm is not None:
            self.comm.reset_counters()
        for attachment in self.attachments:
            attachment.reset()
            attachment.calls = attachment.dense_tokens = attachment.token_evaluations = 0

    def _select(self, model: torch.nn.Module, num_tokens: int, grid: tuple[int, int, int]) -> torch.Tensor | None:
        run = self.run
        if run is None:
            raise RuntimeError("HSA run not started: call the pipeline (its set_timesteps starts a run)")
        if run.selected_step == run.step:
            return run.index
        if run.stepper is None:
            run.stepper = TokenStepper(run.plan, self.config, grid=grid, sigmas=run.sigmas)
        # Each network keeps its own caches (emptied when the run began); a full step fills them.
        run.switched = run.model is not None and model is not run.model
        run.index = run.stepper.active(run.step, num_tokens, force_full=run.switched)
        run.selected_step, run.model = run.step, model
        if self.comm is not None:
            self.comm.step = run.step
        return run.index

    def _observe(self, velocity: torch.Tensor) -> torch.Tensor | None:
        """Hand the step's guided velocity to the stepper; returns the step's active tokens."""
        run = self.run
        tokens = wan.patchify(velocity, run.model.config.patch_size)
        index = run.index
        # a new network's first velocities say nothing about how settled a token is
        run.stepper.observe(run.step, tokens if index is None else tokens[:, index], index, rescore=not run.switched)
        run.step += 1
        return index

    def stats(self) -> RunStats:
        """Counts of the last run, taken inside the transformers."""
        if self.run is None:
            raise RuntimeError("no HSA run yet")
        evaluations = sum(a.token_evaluations for a in self.attachments)
        dense = sum(a.dense_tokens for a in self.attachments)
        return RunStats(
            budget=self.config.budget,
            planned_fraction=self.run.plan.predicted_fraction,
            achieved_fraction=evaluations / dense if dense else 0.0,
            token_evaluations=evaluations,
            dense_token_evaluations=dense,
            transformer_calls=sum(a.calls for a in self.attachments),
            steps=self.run.plan.steps,
        )

    def detach(self) -> None:
        for attachment in self.attachments:
            attachment.detach()
        del self.pipe.scheduler.set_timesteps, self.pipe.scheduler.step


def apply_hsa(pipe: Any, config: HSAConfig, comm: Comm | None = None) -> HSAController:
    """Attach HSA to a Wan pipeline; returns the controller (also kept as ``pipe.hsa``).

    With ``comm`` every rank of the group runs the same pipeline call and the transformer is
    sharded across them (pipeline/parallel.py).
    """
    if not isinstance(pipe, wan.PIPELINES):
        raise TypeError(f"HSA supports {[p.__name__ for p in wan.PIPELINES]}, got {type(pipe).__name__}")
    if getattr(pipe, "hsa", None) is not None:
        raise RuntimeError("HSA is already applied to this pipeline; call remove_hsa(pipe) first")
    controller = HSAController(pipe, config, comm)
    pipe.hsa = controller
    return controller


def remove_hsa(pipe: Any) -> None:
    controller = getattr(pipe, "hsa", None)
    if controller is None:
        return
    controller.detach()
    pipe.hsa = None
