"""Heterogeneous Step Allocation: the algorithm in pure torch (no diffusers, no ray).

Read in this order: ``schedule`` (sigma grid), ``plan`` (budget -> window, sync steps, divisor
fractions), ``scores`` (velocity dynamics), ``allocation`` (scores -> divisors -> active set),
``stepper`` (per-token state across steps), ``euler`` (cached Euler update), ``kv_cache``
(K/V synchronisation and active-query attention), ``sampler`` (the whole loop over any
velocity function).
"""

from hsa.allocation import assign_divisors, divisor_set
from hsa.config import HSAConfig
from hsa.euler import cached_euler_step
from hsa.kv_cache import KVCache, active_query_attention
from hsa.plan import HSAPlan, plan_budget
from hsa.sampler import sample
from hsa.schedule import shifted_sigmas
from hsa.scores import velocity_change_score
from hsa.stepper import TokenStepper

__all__ = [
    "HSAConfig",
    "HSAPlan",
    "KVCache",
    "TokenStepper",
    "active_query_attention",
    "assign_divisors",
    "cached_euler_step",
    "divisor_set",
    "plan_budget",
    "sample",
    "shifted_sigmas",
    "velocity_change_score",
]
