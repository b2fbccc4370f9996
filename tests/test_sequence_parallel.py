"""Sequence-parallel (Ulysses over active tokens) and CFG-parallel HSA on spawned gloo ranks."""

from __future__ import annotations

import numpy as np
import pytest
from dist_harness import run_ranks

from hsa import HSAConfig
from pipeline.render import RenderRequest, render


def _request(budget, steps=8, size=64, frames=9):
    return RenderRequest(prompt="a red circle moves left over grass", height=size, width=size,
                         num_frames=frames, steps=steps, budget=budget)


def _cpu_ring_shim():
    """Test-only shim: yunchang's PyTorch ring calls the CUDA-only flash SDPA op; give it the CPU one."""
    import torch
    import yunchang.ring.ring_pytorch_attn as ring

    def forward(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, **_):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p, causal, scale=softmax_scale
        )[:2]
        return out.transpose(1, 2), lse.to(q.dtype)

    ring.pytorch_attn_forward = forward


def _render_on_rank(rank, model_dir, request, ulysses, cfg, ring=1):
    from pipeline.parallel import Comm, ParallelConfig
    from pipeline.tiny_wan import VARIANTS

    if ring > 1:
        _cpu_ring_shim()
    pipe = VARIANTS["t2v"][0].from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    comm = Comm(ParallelConfig(ulysses=ulysses, ring=ring, cfg=cfg))
    result = render(pipe, request, HSAConfig(), comm=comm)
    return {"frames": result.frames, "stats": result.stats, "a2a": dict(comm.all_to_all_bytes)}


def _single(tiny_pipe, request, quota_shards=1):
    return render(tiny_pipe("t2v"), request, HSAConfig(quota_shards=quota_shards))


def test_ulysses_two_ranks_budget_one_equals_single_process(tiny_pipe, tiny_dirs):
    request = _request(1.0)
    ranks = run_ranks(2, _render_on_rank, tiny_dirs("t2v"), request, 2, 1)
    assert ranks[1]["frames"] is None
    assert np.abs(ranks[0]["frames"] - _single(tiny_pipe, request).frames).max() <= 1e-5


def test_ulysses_two_ranks_budget_half_equals_single_process_with_quotas(tiny_pipe, tiny_dirs):
    request = _request(0.5, steps=20)
    ranks = run_ranks(2, _render_on_rank, tiny_dirs("t2v"), request, 2, 1)
    single = _single(tiny_pipe, request, quota_shards=2)
    assert np.abs(ranks[0]["frames"] - single.frames).max() <= 1e-5
    for r in ranks:  # every rank evaluated the same share
        assert r["stats"].achieved_fraction == pytest.approx(single.stats.achieved_fraction)


def test_cfg_parallel_two_ranks_equals_single_process(tiny_pipe, tiny_dirs):
    request = _request(0.5, steps=20)
    ranks = run_ranks(2, _render_on_rank, tiny_dirs("t2v"), request, 1, 2)
    single = _single(tiny_pipe, request)
    assert np.abs(ranks[0]["frames"] - single.frames).max() <= 1e-5
    assert [r["stats"].transformer_calls for r in ranks] == [20, 20]  # one branch each


@pytest.mark.slow
def test_ulysses_times_cfg_on_four_ranks_equals_single_process(tiny_pipe, tiny_dirs):
    request = _request(0.5, steps=20)
    ranks = run_ranks(4, _render_on_rank, tiny_dirs("t2v"), request, 2, 2)
    single = _single(tiny_pipe, request, quota_shards=2)
    assert np.abs(ranks[0]["frames"] - single.frames).max() <= 1e-5


def test_xfuser_ring_attention_two_ranks_equals_single_process(tiny_pipe, tiny_dirs):
    request = _request(1.0)
    ranks = run_ranks(2, _render_on_rank, tiny_dirs("t2v"), request, 1, 1, 2)
    assert np.abs(ranks[0]["frames"] - _single(tiny_pipe, request).frames).max() <= 1e-5
    assert ranks[0]["a2a"] == {}  # attention went through the ring, not our all-to-all


def test_ring_refuses_hsa_budgets(tiny_dirs):
    with pytest.raises(Exception, match="dense steps only"):
        run_ranks(2, _render_on_rank, tiny_dirs("t2v"), _request(0.5), 1, 1, 2)


def test_all_to_all_bytes_scale_with_active_fraction(tiny_pipe, tiny_dirs):
    request = _request(0.25, steps=40, size=128, frames=17)
    ranks = run_ranks(2, _render_on_rank, tiny_dirs("t2v"), request, 2, 1)
    from hsa import plan_budget

    plan = plan_budget(40, HSAConfig(budget=0.25))
    sent = {k: ranks[0]["a2a"].get(k, 0) for k in range(40)}  # a step without active tokens sends nothing
    kinds = [plan.kind(k) for k in range(40)]
    dense = sent[0]  # a full warm-up step
    assert all(sent[k] == dense for k in range(40) if kinds[k] in ("full", "sync"))
    assert all(sent[k] == 0 for k in range(40) if kinds[k] == "skip")
    window = [sent[k] for k in range(40) if k // plan.stride in plan.window]
    assert sum(window) / len(window) <= 0.30 * dense
    sparse = [sent[k] / dense for k in range(40) if kinds[k] == "sparse"]
    fractions = [plan.active_fraction(k) for k in range(40) if kinds[k] == "sparse"]
    assert np.allclose(sparse, fractions, atol=0.02)  # traffic follows the active fraction step by step
