"""K/V synchronisation: attend active queries against the keys and values of every token.

Per attention layer and guidance branch we keep the post-RoPE keys and values of all N tokens in
token-major layout [B, N, H, D]. A full step refills the cache (by reference, no copy); a sparse
step writes the fresh K/V of its active tokens in place. Inactive tokens cost nothing and still
shape everyone's attention through their cached K/V.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class KVCache:
    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def update(
        self, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write K/V of the tokens at ``index`` (None = all tokens) and return the full cache."""
        if index is None:  # contiguous: a view into a fused QKV output would pin all of it
            self.k, self.v = k.contiguous(), v.contiguous()
        else:
            if self.k is None:
                raise RuntimeError("sparse K/V write before any full step filled the cache")
            self.k.index_copy_(1, index, k.to(self.k.dtype))
            self.v.index_copy_(1, index, v.to(self.v.dtype))
        return self.k, self.v

    def reset(self) -> None:
        self.k = self.v = None


def active_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention of q [B, A, H, D] against k, v [B, N, H, D]; returns [B, A, H, D]."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)
