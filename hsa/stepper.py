"""Per-token state across the steps of one run: which tokens to evaluate, and what we learnt.

The stepper keeps, per token, the last computed velocity (v_buf), the one before (v_prev) and
its divisor. It never calls a model: a driver asks ``active(step)``, evaluates those tokens, and
reports the velocities back with ``observe``. The same stepper drives a diffusers pipeline (the
velocities are the guided ones the scheduler consumes) and the analytic oracle sampler.
"""

from __future__ import annotations

import torch

from hsa.allocation import assign_divisors, divisor_active_indices, top_k_indices
from hsa.config import HSAConfig
from hsa.plan import HSAPlan
from hsa.scores import dilate_scores, velocity_change_score


class TokenStepper:
    def __init__(
        self,
        plan: HSAPlan,
        config: HSAConfig,
        grid: tuple[int, int, int] | None = None,
        sigmas: torch.Tensor | None = None,
    ) -> None:
        if config.dilate and grid is None:
            raise ValueError("score dilation needs the token grid (frames, height, width)")
        if config.per_sigma and sigmas is None:
            raise ValueError("per_sigma scores need the sigma grid")
        self.plan, self.config, self.grid = plan, config, grid
        self.sigmas = None if sigmas is None else sigmas.double().cpu()
        self.v_buf: torch.Tensor | None = None
        self.v_prev: torch.Tensor | None = None
        self.scores: torch.Tensor | None = None
        self.divisor: torch.Tensor | None = None
        self.last_eval: torch.Tensor | None = None  # step of each token's latest evaluation
        self.prev_eval: torch.Tensor | None = None
        self.evaluations = 0  # token evaluations handed out by active()

    def active(self, step: int, num_tokens: int, force_full: bool = False) -> torch.Tensor | None:
        """Sorted indices of the tokens to evaluate at ``step``; None means every token."""
        kind = self.plan.kind(step)
        if kind == "skip" and not force_full:
            return torch.empty(0, dtype=torch.long, device=self.v_buf.device)
        if force_full or kind != "sparse" or self.scores is None:
            self.evaluations += num_tokens
            return None
        if self.plan.mode == "divisor":
            index = divisor_active_indices(self.divisor, self.plan.window_step(step))
        else:  # age keeps low scores from starving
            age = (step - self.last_eval).to(self.scores.dtype)
            index = top_k_indices(self._ranking_scores() * age, self.plan.keep_ratio, self.config.quota_shards)
        self.evaluations += index.numel()
        return index

    def observe(self, step: int, velocity: torch.Tensor, index: torch.Tensor | None, rescore: bool = True) -> None:
        """Record velocities [B, |A|, C] of the tokens at ``index`` (None = all) computed at ``step``.

        ``rescore=False`` keeps scores and divisors (for example on the first step of a new
        network, whose velocities are not comparable with the previous network's).
        """
        if self.v_buf is None:
            if index is not None:
                raise RuntimeError("the first evaluation of a run must cover every token")
            n = velocity.shape[1]
            self.v_buf = velocity.clone()
            self.v_prev = torch.zeros_like(velocity)
            self.last_eval = torch.full((n,), step, dtype=torch.long, device=velocity.device)
            self.prev_eval = self.last_eval.clone()
            return
        sel = slice(None) if index is None else index
        self.v_prev[:, sel] = self.v_buf[:, sel]
        self.v_buf[:, sel] = velocity
        self.prev_eval[sel] = self.last_eval[sel]
        self.last_eval[sel] = step
        if not rescore:
            return
        if self.plan.mode == "topk":
            self._rescore(step, index)
        elif self.plan.is_sync_position(step):
            self._rescore(step, None)
            self.divisor = assign_divisors(
                self._ranking_scores(), self.plan.divisors, self.plan.fractions, self.config.quota_shards
            )

    def velocity(self, step: int) -> torch.Tensor:
        """Every token's velocity [B, N, C] for the update at ``step`` (call after ``observe``):
        the latest one of each token, zero for skipped tokens when ``config.skipped == "freeze"``.
        """
        if self.config.skipped != "freeze":
            return self.v_buf
        v = self.v_buf.clone()
        v[:, self.last_eval != step] = 0
        return v

    def _ranking_scores(self) -> torch.Tensor:
        if self.config.dilate:
            return dilate_scores(self.scores, self.grid, self.config.dilate)
        return self.scores

    def _rescore(self, step: int, index: torch.Tensor | None) -> None:
        sel = slice(None) if index is None else index
        score = self.config.score
        if score == "magnitude":
            fresh = self.v_buf[:, sel].float().abs().sum(-1).mean(0)
        elif score == "random":  # seeded by the step, so a run is reproducible
            n = self.v_buf[:, sel].shape[1]
            fresh = torch.rand(n, generator=torch.Generator().manual_seed(step)).to(self.v_buf.device)
        else:
            fresh = velocity_change_score(
                self.v_buf[:, sel], self.v_prev[:, sel], relative=score == "relative", eps=self.config.eps
            )
        if self.config.per_sigma:
            gap = self.sigmas[self.prev_eval[sel].cpu()] - self.sigmas[self.last_eval[sel].cpu()]
            fresh = fresh / gap.clamp_min(self.config.eps).to(fresh)
        if self.scores is None:
            self.scores = torch.zeros(self.v_buf.shape[1], dtype=fresh.dtype, device=fresh.device)
        self.scores[sel] = fresh
