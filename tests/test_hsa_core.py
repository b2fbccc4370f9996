import torch

from hsa import HSAConfig, KVCache, active_query_attention, cached_euler_step, sample, shifted_sigmas
from hsa.scores import dilate_scores, velocity_change_score


def test_cached_euler_telescopes_to_one_jump():
    torch.manual_seed(0)
    x0, v = torch.randn(2, 10, 4), torch.randn(2, 10, 4)
    sigmas = shifted_sigmas(40, 5.0)
    k, d = 7, 8
    x = x0
    for i in range(k, k + d):
        x = cached_euler_step(x, v, float(sigmas[i]), float(sigmas[i + 1]))
    jump = x0 + (sigmas[k + d] - sigmas[k]) * v
    torch.testing.assert_close(x, jump, atol=1e-6, rtol=0)


def test_kv_cache_sparse_write_equals_dense_attention():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 50, 2, 8) for _ in range(3))
    dense = active_query_attention(q, k, v)
    cache = KVCache()
    stale_k, stale_v = torch.randn_like(k), torch.randn_like(v)
    cache.update(stale_k.clone(), stale_v.clone())
    cache.update(k.clone(), v.clone())  # a full step refills
    idx = torch.tensor([3, 10, 11, 40])
    k_all, v_all = cache.update(k[:, idx], v[:, idx], idx)  # nothing stale: rewriting A is a no-op
    torch.testing.assert_close(active_query_attention(q[:, idx], k_all, v_all), dense[:, idx])


def test_kv_cache_refuses_sparse_write_when_empty():
    cache = KVCache()
    try:
        cache.update(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), torch.tensor([0]))
    except RuntimeError as err:
        assert "full step" in str(err)
    else:
        raise AssertionError("expected a RuntimeError")


def test_scores_relative_and_absolute():
    v_old = torch.tensor([[[1.0, 1.0], [2.0, 2.0]]])
    v_new = torch.tensor([[[1.0, 2.0], [2.0, 2.0]]])
    torch.testing.assert_close(velocity_change_score(v_new, v_old, relative=False), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(velocity_change_score(v_new, v_old, relative=True, eps=0.0), torch.tensor([0.5, 0.0]))


def test_dilation_spreads_to_neighbours():
    scores = torch.zeros(3 * 4 * 4)
    scores[1 * 16 + 1 * 4 + 1] = 1.0
    grid = dilate_scores(scores, (3, 4, 4), 1).reshape(3, 4, 4)
    assert grid[0:3, 0:3, 0:3].eq(1).all() and grid.sum() == 27


def _oracle(target):
    """Ideal velocity of a point mass at target: v = (x - target) / sigma, per token."""
    sigmas = shifted_sigmas(40, 5.0)

    def velocity(x, index, step):
        v = (x - target) / sigmas[step]
        return v if index is None else v[:, index]

    return sigmas, velocity


def test_sampler_budget_one_is_plain_euler():
    torch.manual_seed(0)
    target, x = torch.randn(1, 64, 3), torch.randn(1, 64, 3)
    sigmas, velocity = _oracle(target)
    plain = x
    for k in range(40):
        plain = cached_euler_step(plain, velocity(plain, None, k), float(sigmas[k]), float(sigmas[k + 1]))
    result = sample(x, sigmas, velocity, HSAConfig(budget=1.0))
    torch.testing.assert_close(result.x, plain)
    assert result.achieved_fraction == 1.0


def test_sampler_spends_its_budget_and_is_exact_on_settled_velocities():
    torch.manual_seed(0)
    target, x = torch.randn(1, 256, 3), torch.randn(1, 256, 3)
    sigmas, velocity = _oracle(target)
    for budget in (0.5, 0.25):
        result = sample(x, sigmas, velocity, HSAConfig(budget=budget))
        assert abs(result.achieved_fraction - budget) <= 0.03 * budget
        # a point mass has a constant ideal velocity along its path: cached jumps are exact
        torch.testing.assert_close(result.x, target, atol=1e-4, rtol=0)


def test_stepper_keeps_raw_scores_and_skips_rescore_on_request():
    from hsa import TokenStepper, plan_budget

    torch.manual_seed(0)
    config = HSAConfig(budget=0.5, mode="topk", dilate=1, score="relative")
    plan = plan_budget(20, config)
    stepper = TokenStepper(plan, config, grid=(1, 4, 4))
    v = torch.randn(1, 16, 3)
    for k in range(plan.warmup + 3):
        index = stepper.active(k, 16)
        v = v + 0.1 * torch.randn_like(v)
        stepper.observe(k, v if index is None else v[:, index], index)
    raw = velocity_change_score(stepper.v_buf, stepper.v_prev)
    stale = stepper.last_eval < stepper.last_eval.max()  # tokens not evaluated at the last step
    torch.testing.assert_close(stepper.scores[~stale], raw[~stale])  # raw, never dilated in place
    divisor_config = HSAConfig(budget=0.5)
    divisor_plan = plan_budget(40, divisor_config)
    stepper = TokenStepper(divisor_plan, divisor_config)
    for k in range(divisor_plan.warmup + 1):
        stepper.observe(k, torch.randn(1, 16, 3), stepper.active(k, 16))
    before = stepper.divisor.clone()
    sync = divisor_plan.warmup + divisor_plan.max_divisor
    for k in range(divisor_plan.warmup + 1, sync + 1):
        index = stepper.active(k, 16)
        stepper.observe(k, torch.randn(1, 16 if index is None else index.numel(), 3), index, rescore=k != sync)
    assert torch.equal(stepper.divisor, before)  # a new network's first step does not re-rank


def test_stride_two_is_euler_on_every_second_sigma():
    torch.manual_seed(0)
    target, x = torch.randn(1, 64, 3), torch.randn(1, 64, 3)
    sigmas, _ = _oracle(target)
    calls = []

    def velocity(x, index, step):  # depends on x: a held velocity is not exact here
        calls.append(step)
        v = torch.sin(3 * x) + float(sigmas[step])
        return v if index is None else v[:, index]

    coarse = sigmas[::2]
    plain = x
    for k in range(20):
        plain = cached_euler_step(plain, velocity(plain, None, 2 * k), float(coarse[k]), float(coarse[k + 1]))
    calls.clear()
    result = sample(x, sigmas, velocity, HSAConfig(budget=0.5, stride=2))
    torch.testing.assert_close(result.x, plain, atol=1e-5, rtol=0)
    assert calls == list(range(0, 40, 2)) and result.achieved_fraction == 0.5
