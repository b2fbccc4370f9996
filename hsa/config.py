"""User-facing knobs of HSA, validated once."""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("divisor", "topk")
SCORES = ("relative", "absolute", "magnitude", "random")
KV_POLICIES = ("sync", "drop")
SKIPPED_UPDATES = ("euler", "freeze")


@dataclass(frozen=True)
class HSAConfig:
    """How a render spends its budget.

    budget: fraction of the reference's token evaluations to spend, in (0, 1]. 1.0 is the
        reference itself (every token, every step).
    mode: "divisor" (tokens get divisors 1, 2, 4, ... and meet on sync steps) or "topk"
        (RAS-style ablation: one keep ratio per step, re-ranked every step).
    score: how tokens are ranked at a re-score: "magnitude" |v|_1 of the latest guided
        velocity (default: the best ranking on bench/tune.py's prompts), "absolute" |v - v_prev|_1,
        "relative" |v - v_prev|_1 / |v_prev|_1, or the ablation "random".
    warmup_steps / tail_steps: full steps before / after the window; None derives them
        from the step count and budget (tail 2.5% of the steps; warm-up 5%, lengthened up to 15%
        while the budget allows: see hsa/plan.py).
    max_divisor: largest divisor (a power of two); also the period of sync steps. None picks
        the smallest period whose full steps leave at least 10% of the budget to sparse steps
        (4 at budget 0.5 and 8 at 0.25 for 40 steps): fresh K/V and re-ranking often pay more
        than long skips (docs/BENCHMARKS.md).
    stride: plan on every stride-th step only; the steps between evaluate no token (every token
        moves with its cached velocity). None: 2 below budget 0.4 (32 steps or more), else 1.
    dilate: radius in tokens of a 3D max-filter over scores, so rims of moving regions stay
        active (0 = off).
    per_sigma: divide scores by the sigma gap since the token's previous evaluation.
    kv: "sync" (inactive tokens' cached keys and values stay in attention) or the ablation
        "drop" (active tokens attend to active tokens only).
    skipped: how a skipped token moves: "euler" (with its cached velocity: cached Euler) or
        the ablation "freeze" (it stays where it is).
    quota_shards: split every allocation into this many equal contiguous shards of the
        sequence, each with the same number of active tokens (set to the Ulysses degree by the
        sequence-parallel runner; a single process can use it to reproduce a parallel run).
    """

    budget: float = 0.5
    mode: str = "divisor"
    score: str = "magnitude"
    warmup_steps: int | None = None
    tail_steps: int | None = None
    max_divisor: int | None = None
    stride: int | None = None
    dilate: int = 0
    per_sigma: bool = False
    kv: str = "sync"
    skipped: str = "euler"
    quota_shards: int = 1
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if not isinstance(self.budget, (int, float)) or not 0.0 < float(self.budget) <= 1.0:
            raise ValueError(f"budget must be in (0, 1], got {self.budget!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {self.score!r}")
        if self.kv not in KV_POLICIES:
            raise ValueError(f"kv must be one of {KV_POLICIES}, got {self.kv!r}")
        if self.skipped not in SKIPPED_UPDATES:
            raise ValueError(f"skipped must be one of {SKIPPED_UPDATES}, got {self.skipped!r}")
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride!r}")
        d = self.max_divisor
        if d is not None and (d < 1 or d & (d - 1)):
            raise ValueError(f"max_divisor must be a power of two >= 1, got {d!r}")
        if self.warmup_steps is not None and self.warmup_steps < 1:
            raise ValueError(
                f"warmup_steps must be >= 1 (scores compare a token's velocity with its previous one), "
                f"got {self.warmup_steps!r}"
            )
        if self.tail_steps is not None and self.tail_steps < 0:
            raise ValueError(f"tail_steps must be >= 0, got {self.tail_steps!r}")
        if self.quota_shards < 1:
            raise ValueError(f"quota_shards must be >= 1, got {self.quota_shards!r}")
        if self.dilate < 0:
            raise ValueError(f"dilate must be >= 0, got {self.dilate!r}")
