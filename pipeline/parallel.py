"""Sequence parallelism for HSA (Ulysses over active tokens) and CFG parallelism.

P = ulysses x ring x cfg ranks in one torch.distributed group (gloo on CPU, nccl on GPU). The
sequence is split into S = ulysses x ring contiguous shards; rank r holds shard r % S and
computes guidance branch r // S. Every rank runs the same pipeline call (SPMD); inside the
transformer (ring = 1, the HSA path):

- each rank evaluates the active tokens of its contiguous shard; HSA gives every shard the
  same number of active tokens (per-rank quotas), so every all-to-all is balanced;
- per attention layer: Q/K/V of the local active tokens -> all-to-all (sequence shards -> head
  shards) -> write K/V of all active tokens into this rank's cache, which holds all N tokens
  for its H/P heads -> attend -> all-to-all back. Traffic is proportional to active tokens;
- the output head's active rows are all-gathered, so every rank holds the full velocity and the
  stock pipeline loop (guidance, scheduler, HSA scores) runs unchanged and identically.

The latent (8 MB at 480p, 81 frames) is replicated; hidden states, K/V caches and attention
are sharded. Collectives go through ``Comm``, which counts the bytes each rank sends per step.
With ring > 1, attention is xfuser's dense Ulysses x ring (pipeline/xfuser_backend.py) and the
run must be dense (budget 1.0).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ParallelConfig:
    ulysses: int = 1
    ring: int = 1
    cfg: int = 1

    def __post_init__(self) -> None:
        for name in ("ulysses", "ring"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} degree must be >= 1, got {getattr(self, name)}")
        if self.cfg not in (1, 2):
            raise ValueError(f"cfg degree must be 1 or 2 (one rank group per guidance branch), got {self.cfg}")

    @property
    def sequence(self) -> int:
        return self.ulysses * self.ring

    @property
    def world_size(self) -> int:
        return self.sequence * self.cfg


class Comm:
    """This rank's place in the groups, and counted collectives."""

    def __init__(self, config: ParallelConfig) -> None:
        if not dist.is_initialized():
            raise RuntimeError("sequence parallelism needs torch.distributed initialised (init_process_group)")
        if dist.get_world_size() != config.world_size:
            raise ValueError(
                f"ulysses {config.ulysses} x ring {config.ring} x cfg {config.cfg} needs {config.world_size} ranks, "
                f"the process group has {dist.get_world_size()}"
            )
        self.config = config
        self.rank = dist.get_rank()
        s = config.sequence
        self.seq_rank, self.cfg_rank = self.rank % s, self.rank // s
        # every rank creates every group, in the same order
        self.seq_group = self._my_group([[c * s + i for i in range(s)] for c in range(config.cfg)])
        self.cfg_group = self._my_group([[c * s + i for c in range(config.cfg)] for i in range(s)])
        self.ulysses_group = self._my_group(
            [[c * s + j * config.ulysses + i for i in range(config.ulysses)] for c in range(config.cfg) for j in range(config.ring)]
        )
        self.ring_attention = None
        if config.ring > 1:
            from pipeline.xfuser_backend import RingAttention

            self.ring_attention = RingAttention(config.ulysses, config.ring)
        self.step = 0
        self.all_to_all_bytes: dict[int, int] = defaultdict(int)  # step -> bytes this rank sent
        self.gather_bytes: dict[int, int] = defaultdict(int)

    def reset_counters(self) -> None:
        self.step = 0
        self.all_to_all_bytes.clear()
        self.gather_bytes.clear()

    def _my_group(self, all_ranks: list[list[int]]) -> dist.ProcessGroup:
        mine = None
        for ranks in all_ranks:
            group = dist.new_group(ranks)
            if self.rank in ranks:
                mine = group
        return mine

    @property
    def ulysses(self) -> int:
        return self.config.ulysses

    @property
    def sequence(self) -> int:
        return self.config.sequence

    def seq_to_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, s, H, D] local tokens, all heads -> [B, P*s, H/P, D] all ranks' tokens, local heads."""
        p = self.ulysses
        b, s, h, d = x.shape
        if h % p:
            raise ValueError(f"{h} attention heads do not split over {p} Ulysses ranks")
        send = x.reshape(b, s, p, h // p, d).permute(2, 0, 1, 3, 4).contiguous()
        recv = self._all_to_all(send)
        return recv.permute(1, 0, 2, 3, 4).reshape(b, p * s, h // p, d)

    def heads_to_seq(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of seq_to_heads: [B, P*s, H/P, D] -> [B, s, H, D]."""
        p = self.ulysses
        b, ps, hp, d = x.shape
        send = x.reshape(b, p, ps // p, hp, d).permute(1, 0, 2, 3, 4).contiguous()
        recv = self._all_to_all(send)
        return recv.permute(1, 2, 0, 3, 4).reshape(b, ps // p, p * hp, d)

    def _all_to_all(self, send: torch.Tensor) -> torch.Tensor:
        recv = torch.empty_like(send)
        dist.all_to_all_single(recv, send, group=self.ulysses_group)
        self.all_to_all_bytes[self.step] += send.nbytes * (self.ulysses - 1) // self.ulysses
        return recv

    def gather_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """All-gather [B, s, C] over the sequence group in rank order -> [B, S*s, C]."""
        return self._gather(x, self.seq_group, self.sequence, dim=1)

    def gather_branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every CFG rank's tensor, in CFG-rank order (the guidance branches)."""
        return list(self._gather(x.unsqueeze(0), self.cfg_group, self.config.cfg, dim=0).unbind(0))

    def _gather(self, x: torch.Tensor, group: dist.ProcessGroup, size: int, dim: int) -> torch.Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x, group=group)
        self.gather_bytes[self.step] += x.nbytes * (size - 1)
        return torch.cat(parts, dim=dim)
