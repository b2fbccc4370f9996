"""Dense Ulysses x ring attention through xfuser's sequence-parallel library (yunchang).

What xfuser gives that our HSA path lacks: ring attention. Our Ulysses path keeps, on every rank,
the keys and values of all N tokens for its heads, which is what makes sparse steps cheap; when
even that is too long for one device, ring attention keeps K/V sharded by sequence and passes
blocks around the ring. Ring steps are dense (every token), so a run with ring degree > 1 is a
budget-1.0 run: HSA's sparse steps need the full-sequence K/V cache that ring attention avoids.

We import ``yunchang`` (the USP library xfuser is built on), not ``xfuser`` itself: importing
xfuser pulls triton and checks for an accelerator at import time. On GPU the ring runs
flash-attention kernels (``flash_attn`` when installed, otherwise PyTorch's flash SDPA, bf16);
on CPU yunchang's kernels do not run (its PyTorch ring calls the CUDA-only flash SDPA op): the
CPU tests swap that op in the test process only.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class RingAttention:
    """Ulysses (``ulysses`` ranks) x ring (``ring`` ranks) softmax attention over local shards."""

    def __init__(self, ulysses: int, ring: int) -> None:
        import yunchang
        from yunchang.globals import HAS_FLASH_ATTN

        # creates yunchang's groups (every rank calls it, same order); rank layout as ours:
        # ulysses ranks consecutive, ring ranks strided, guidance branch outermost
        yunchang.set_seq_parallel_pg(ulysses, ring, dist.get_rank(), dist.get_world_size())
        self.attention = yunchang.LongContextAttention(ring_impl_type="basic" if HAS_FLASH_ATTN else "basic_pytorch")

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, k, v [B, s, H, D] of this rank's sequence shard -> [B, s, H, D]."""
        return self.attention(q, k, v)
