"""Budget -> plan: which steps are full, which are sync steps, and how tokens split over divisors.

A step's cost is about c0 + c1 * a (a = active fraction; attention is |A| x N, linear in a too),
so the compute fraction of a run is mean_k a_k. The plan predicts that mean and is solved so the
prediction meets the requested budget.

Divisor mode: inside the window [warmup, steps - tail), window step j is a sync step (all tokens
active) when j % d_max == 0; otherwise a token with divisor d is active when j % d == 0. The share
of tokens per divisor follows f_d ~ r ** log2(d), with r solved by bisection: r -> 0 puts every
token on divisor 1 (a = 1), r -> inf puts every token on d_max (only sync steps).
Top-k mode (ablation): the first window step evaluates every token (scores need two velocities
of every token), every later window step keeps the same fraction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from hsa.config import HSAConfig


@dataclass(frozen=True)
class HSAPlan:
    """Which tokens each of ``steps`` sampler steps evaluates.

    The plan lives on a grid of every ``stride``-th step; the steps between grid steps are
    'skip' steps (no token evaluated: every token rides its cached velocity, so a stride of 2
    with every token on divisor 1 is Euler on half the steps). ``warmup``, ``tail``,
    ``forced_full``, the window and the divisors count grid steps.
    """

    steps: int
    budget: float
    mode: str
    warmup: int
    tail: int
    divisors: tuple[int, ...] = (1,)
    fractions: tuple[float, ...] = (1.0,)
    keep_ratio: float = 1.0
    forced_full: frozenset[int] = field(default_factory=frozenset)
    stride: int = 1

    @property
    def grid_steps(self) -> int:
        return -(-self.steps // self.stride)

    @property
    def window(self) -> range:
        """Grid steps between the warm-up and the tail."""
        return range(self.warmup, self.grid_steps - self.tail)

    @property
    def max_divisor(self) -> int:
        return self.divisors[-1]

    def window_step(self, step: int) -> int:
        """The window's own count for sampler step ``step`` (a grid step)."""
        return step // self.stride - self.warmup

    def is_sync_position(self, step: int) -> bool:
        """Window steps that evaluate every token and re-score: every d_max-th step (divisor
        mode), the first window step (top-k mode)."""
        if step % self.stride or step // self.stride not in self.window:
            return False
        j = self.window_step(step)
        return j % self.max_divisor == 0 if self.mode == "divisor" else j == 0

    def kind(self, step: int) -> str:
        """'skip' (off the grid), 'full' (every token, outside the window or forced), 'sync' or
        'sparse'."""
        if step % self.stride:
            return "skip"
        grid = step // self.stride
        if grid not in self.window or grid in self.forced_full:
            return "full"
        return "sync" if self.is_sync_position(step) else "sparse"

    def active_fraction(self, step: int) -> float:
        """Predicted share of tokens evaluated at ``step``."""
        kind = self.kind(step)
        if kind == "skip":
            return 0.0
        if kind != "sparse":
            return 1.0
        if self.mode == "topk":
            return self.keep_ratio
        j = self.window_step(step)
        return sum(f for d, f in zip(self.divisors, self.fractions) if j % d == 0)

    @property
    def predicted_fraction(self) -> float:
        return sum(self.active_fraction(k) for k in range(self.steps)) / self.steps


def _geometric_fractions(levels: int, r: float) -> tuple[float, ...]:
    weights = [r**i for i in range(levels)]
    total = sum(weights)
    return tuple(w / total for w in weights)


def _largest_power_of_two(n: int) -> int:
    return 1 << (max(n, 1).bit_length() - 1)


def _sync_only_cost(base: HSAPlan, period: int, **changes: int) -> float:
    """Predicted fraction of ``base`` (with ``changes``) if every token sat on ``period``: what
    its full and sync steps cost before any sparse evaluation."""
    return replace(base, divisors=(period,), fractions=(1.0,), **changes).predicted_fraction


SPARSE_SHARE = 0.1  # the derived sync period leaves at least this share of the budget to sparse steps


def _auto_max_divisor(base: HSAPlan) -> int:
    """The smallest sync period (2, 4, 8, ...) whose full and sync steps alone cost at most
    (1 - SPARSE_SHARE) of the budget; the longest the window allows if none does."""
    cap = _largest_power_of_two(len(base.window))
    d = 2
    while d < cap:
        if _sync_only_cost(base, d) <= (1 - SPARSE_SHARE) * base.budget:
            return d
        d *= 2
    return cap


WARMUP_SPARE = 0.2  # a derived warm-up grows only while sparse steps keep this share of the budget
MAX_WARMUP = 0.15  # ... and up to this share of the steps


def _longest_warmup(steps: int, config: HSAConfig, warmup: int, tail: int, forced: frozenset[int]) -> int:
    """Lengthen the warm-up while the budget allows: early steps decide the layout, where every
    token's velocity still changes. The sync period found with the shortest warm-up is kept
    (a short period is worth more than a long warm-up), and sparse steps keep WARMUP_SPARE of
    the budget."""
    if warmup + tail >= steps:
        return warmup
    base = HSAPlan(steps=steps, budget=float(config.budget), mode="divisor", warmup=warmup, tail=tail,
                   forced_full=forced)
    d_max = config.max_divisor or _auto_max_divisor(base)
    for w in range(max(warmup, round(MAX_WARMUP * steps)), warmup, -1):
        window = steps - w - tail
        if window < 1:
            continue
        period = min(d_max, _largest_power_of_two(window))
        if _sync_only_cost(base, period, warmup=w) <= (1 - WARMUP_SPARE) * config.budget + 1e-9:
            return w
    return warmup


def _solve_divisor_plan(base: HSAPlan, max_divisor: int | None) -> HSAPlan | None:
    if max_divisor is None:
        max_divisor = _auto_max_divisor(base)
    d_max = min(max_divisor, _largest_power_of_two(len(base.window)))
    divisors = tuple(1 << i for i in range(d_max.bit_length()))
    if len(divisors) == 1:
        plan = replace(base, divisors=divisors, fractions=(1.0,))
        return plan if abs(plan.predicted_fraction - base.budget) < 1e-9 else None

    def make(r: float) -> HSAPlan:
        fractions = _geometric_fractions(len(divisors), r)
        return replace(base, divisors=divisors, fractions=fractions)

    lo, hi = -30.0, 30.0  # log r; predicted fraction falls as r grows
    if make(math.exp(hi)).predicted_fraction > base.budget + 1e-9:
        return None
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if make(math.exp(mid)).predicted_fraction > base.budget:
            lo = mid
        else:
            hi = mid
    return make(math.exp(hi))


def _solve_topk_plan(base: HSAPlan) -> HSAPlan | None:
    window = [k for k in base.window if base.kind(k) == "sparse"]
    if not window:
        return None
    full = base.steps - len(window)
    keep = (base.budget * base.steps - full) / len(window)
    if keep <= 0:
        return None
    return replace(base, keep_ratio=min(keep, 1.0))


STRIDE_BUDGET = 0.4  # derived stride 2 below this budget (bench/tune.py: +3.8 dB at 0.2, +3.1 at 0.25, +0.7 at 0.35)
MIN_GRID_STEPS = 16


def plan_budget(steps: int, config: HSAConfig, forced_full: frozenset[int] | set[int] = frozenset()) -> HSAPlan:
    """Solve the plan whose predicted compute fraction equals ``config.budget``.

    ``forced_full`` are steps that must evaluate every token (for example an expert switch).
    Small budgets plan on every second step (``stride``; derived unless given): the full steps a
    plan needs (warm-up, tail, syncs) then cost half as much, which leaves more of the budget
    to the window. Derived warm-up/tail lengths shrink when the budget cannot be met otherwise;
    a budget below what the step count allows raises ValueError naming the smallest feasible
    budget.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    forced = frozenset(k for k in forced_full if 0 <= k < steps)
    if config.budget >= 1.0:
        return HSAPlan(steps=steps, budget=1.0, mode=config.mode, warmup=steps, tail=0, forced_full=forced)
    stride = config.stride
    if stride is None:  # derived: not with forced full steps (an expert switch may fall between grid steps)
        stride = 2 if config.budget < STRIDE_BUDGET and not forced and steps >= 2 * MIN_GRID_STEPS else 1
    if stride > 1:
        if forced:
            raise ValueError(f"stride {stride} cannot honour forced full steps {sorted(forced)}: use stride 1")
        grid = -(-steps // stride)
        grid_budget = config.budget * steps / grid
        if grid_budget > 1.0 + 1e-9:
            raise ValueError(f"budget {config.budget} is more than stride {stride} can spend on {steps} steps")
        if grid_budget >= 1.0 - 1e-9:  # every grid step full: Euler on every stride-th sigma
            return HSAPlan(steps=steps, budget=float(config.budget), mode=config.mode, warmup=grid, tail=0,
                           stride=stride)
        try:
            plan = _plan_grid(grid, replace(config, budget=grid_budget), frozenset())
            return replace(plan, steps=steps, budget=float(config.budget), stride=stride)
        except ValueError as e:
            if config.stride is not None:
                raise ValueError(f"on the stride-{stride} grid ({grid} of {steps} steps): {e}") from None
            # a derived stride falls back to planning every step
    return _plan_grid(steps, config, forced)


def _plan_grid(steps: int, config: HSAConfig, forced: frozenset[int]) -> HSAPlan:
    warmup = config.warmup_steps if config.warmup_steps is not None else max(1, round(0.05 * steps))
    tail = config.tail_steps if config.tail_steps is not None else round(0.025 * steps)
    if config.warmup_steps is None and config.mode == "divisor":
        warmup = _longest_warmup(steps, config, warmup, tail, forced)
    candidates = [(warmup, tail)]
    if config.tail_steps is None and tail > 0:
        candidates.append((warmup, 0))
    if config.warmup_steps is None and warmup > 1:
        candidates.append((1, 0 if config.tail_steps is None else tail))

    for w, t in candidates:
        w = min(w, steps)
        t = min(t, steps - w)
        base = HSAPlan(steps=steps, budget=float(config.budget), mode=config.mode, warmup=w, tail=t, forced_full=forced)
        plan = _solve_divisor_plan(base, config.max_divisor) if config.mode == "divisor" else _solve_topk_plan(base)
        if plan is not None:
            return plan
    w, t = candidates[-1]
    w = min(w, steps)
    t = min(t, steps - w)
    period = min(config.max_divisor or steps, _largest_power_of_two(steps - w - t))
    base = HSAPlan(steps=steps, budget=config.budget, mode="divisor", warmup=w, tail=t, forced_full=forced)
    raise ValueError(
        f"budget {config.budget} is below what {steps} steps allow with mode={config.mode!r}, "
        f"warm-up {w} and tail {t} (about {_sync_only_cost(base, period):.3f}: warm-up, tail and sync steps "
        "evaluate every token); raise the budget or the number of steps, or shorten warm-up and tail"
    )
