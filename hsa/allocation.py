"""Scores -> divisors -> the active token set of a step.

Every split is done per shard (contiguous equal chunks of the sequence) so that with sequence
parallelism every rank holds the same number of active tokens; one shard is the plain case.
"""

from __future__ import annotations

import torch


def divisor_set(max_divisor: int) -> tuple[int, ...]:
    return tuple(1 << i for i in range(max_divisor.bit_length()))


def _shard_counts(n: int, fractions: tuple[float, ...]) -> list[int]:
    """Token counts per divisor for a shard of n tokens, by cumulative rounding (sums to n)."""
    bounds, acc = [0], 0.0
    for f in fractions:
        acc += f
        bounds.append(min(n, round(acc * n)))
    bounds[-1] = n
    return [b - a for a, b in zip(bounds, bounds[1:])]


def assign_divisors(
    scores: torch.Tensor, divisors: tuple[int, ...], fractions: tuple[float, ...], shards: int = 1
) -> torch.Tensor:
    """Give the highest-scoring fraction f_1 divisor 1, the next f_2 divisor 2, and so on."""
    n = scores.numel()
    if n % shards:
        raise ValueError(f"{n} tokens do not split into {shards} equal shards")
    per_shard = n // shards
    counts = _shard_counts(per_shard, fractions)
    ranked_divisors = torch.repeat_interleave(
        torch.tensor(divisors, device=scores.device), torch.tensor(counts, device=scores.device)
    )
    result = torch.empty(n, dtype=torch.long, device=scores.device)
    for s in range(shards):
        chunk = scores[s * per_shard : (s + 1) * per_shard]
        order = torch.argsort(chunk, descending=True, stable=True)
        result[s * per_shard + order] = ranked_divisors
    return result


def divisor_active_indices(divisor: torch.Tensor, window_step: int) -> torch.Tensor:
    """Sorted indices of tokens whose divisor divides the window step."""
    return torch.nonzero(window_step % divisor == 0).flatten()


def top_k_indices(priority: torch.Tensor, keep_ratio: float, shards: int = 1) -> torch.Tensor:
    """Sorted indices of the round(keep_ratio * n) highest priorities in every shard."""
    n = priority.numel()
    per_shard = n // shards
    k = max(1, min(per_shard, round(keep_ratio * per_shard)))
    chunks = priority.reshape(shards, per_shard)
    top = torch.topk(chunks, k, dim=1, sorted=False).indices
    offsets = torch.arange(shards, device=priority.device).unsqueeze(1) * per_shard
    return torch.sort((top + offsets).flatten()).values
