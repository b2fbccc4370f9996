import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from hsa import HSAConfig, assign_divisors, plan_budget, shifted_sigmas
from hsa.allocation import divisor_active_indices, top_k_indices

BUDGETS = [0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0]


@pytest.mark.parametrize("steps,shift", [(40, 5.0), (20, 3.0), (50, 1.0)])
def test_sigmas_match_diffusers_scheduler(steps, shift):
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(steps)
    torch.testing.assert_close(shifted_sigmas(steps, shift), scheduler.sigmas, atol=1e-6, rtol=0)


@pytest.mark.parametrize("steps", [20, 40, 50])
@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("mode", ["divisor", "topk"])
def test_predicted_fraction_meets_budget(steps, budget, mode):
    plan = plan_budget(steps, HSAConfig(budget=budget, mode=mode))
    assert abs(plan.predicted_fraction - budget) <= 0.02 * budget
    assert abs(sum(plan.fractions) - 1.0) < 1e-9


def test_budget_one_is_every_token_every_step():
    plan = plan_budget(40, HSAConfig(budget=1.0))
    assert all(plan.kind(k) == "full" for k in range(40))


def test_window_and_sync_steps():
    plan = plan_budget(40, HSAConfig(budget=0.25, stride=1))
    assert plan.warmup >= 1 and plan.kind(0) == "full" and plan.kind(39) == "full"
    syncs = [k for k in plan.window if plan.kind(k) == "sync"]
    assert syncs == list(range(plan.warmup, plan.steps - plan.tail, plan.max_divisor))


def test_divisor_groups_meet_on_sync_steps():
    torch.manual_seed(0)
    plan = plan_budget(40, HSAConfig(budget=0.35))
    divisor = assign_divisors(torch.rand(1000), plan.divisors, plan.fractions)
    window = len(plan.window)
    active_steps = {t: [] for t in range(1000)}
    for j in range(window):
        for t in divisor_active_indices(divisor, j).tolist():
            active_steps[t].append(j)
    for t, d in enumerate(divisor.tolist()):
        assert active_steps[t] == list(range(0, window, d))  # every d-th window step
    for k in plan.window:
        if plan.kind(k) == "sync":
            assert divisor_active_indices(divisor, k - plan.warmup).numel() == 1000


def test_assign_divisors_meets_fractions_and_ranks_by_score():
    plan = plan_budget(40, HSAConfig(budget=0.4))
    scores = torch.randperm(1000).float()
    divisor = assign_divisors(scores, plan.divisors, plan.fractions)
    for d, f in zip(plan.divisors, plan.fractions):
        assert abs((divisor == d).sum().item() - f * 1000) <= 1
    # higher score never gets a larger divisor
    order = torch.argsort(scores, descending=True)
    assert torch.all(divisor[order][1:] >= divisor[order][:-1])


def test_shards_get_equal_quotas():
    plan = plan_budget(40, HSAConfig(budget=0.3))
    scores = torch.cat([torch.zeros(500), torch.ones(500)])  # all the action in shard 1
    divisor = assign_divisors(scores, plan.divisors, plan.fractions, shards=2)
    for j in range(16):
        active = divisor_active_indices(divisor, j)
        assert (active < 500).sum() == (active >= 500).sum()
    top = top_k_indices(scores, 0.1, shards=2)
    assert (top < 500).sum() == (top >= 500).sum() == 50


def test_infeasible_budget_names_the_floor():
    with pytest.raises(ValueError, match="budget 0.05 is below"):
        plan_budget(8, HSAConfig(budget=0.05))
    # explicit warm-up 4 and tail 6 of 40 steps, syncs every 16: (4 + 6 + 2) / 40
    with pytest.raises(ValueError, match=r"warm-up 4 and tail 6 \(about 0\.300"):
        plan_budget(40, HSAConfig(budget=0.25, warmup_steps=4, tail_steps=6))
    assert plan_budget(40, HSAConfig(budget=0.31, warmup_steps=4, tail_steps=6)).warmup == 4


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan")])
def test_config_rejects_budget_outside_unit_interval(bad):
    with pytest.raises(ValueError, match="budget"):
        HSAConfig(budget=bad)


def test_expert_switch_is_planned_full():
    plan = plan_budget(40, HSAConfig(budget=0.5), forced_full={13})
    assert plan.kind(13) == "full"
    assert abs(plan.predicted_fraction - 0.5) <= 0.01


def test_topk_first_window_step_evaluates_everyone():
    plan = plan_budget(40, HSAConfig(budget=0.3, mode="topk", stride=1))
    assert plan.kind(plan.warmup) == "sync" and plan.kind(plan.warmup + 1) == "sparse"


def test_warmup_of_zero_is_refused():
    with pytest.raises(ValueError, match="warmup_steps must be >= 1"):
        HSAConfig(warmup_steps=0)


@pytest.mark.parametrize("budget,warmup,d_max", [(0.75, 6, 2), (0.5, 6, 4), (0.35, 5, 8), (0.25, 2, 8)])
def test_derived_sync_period_and_warmup(budget, warmup, d_max):
    plan = plan_budget(40, HSAConfig(budget=budget, stride=1))
    assert (plan.warmup, plan.tail, plan.max_divisor) == (warmup, 1, d_max)
    assert plan.predicted_fraction == pytest.approx(budget, rel=0.02)
    # explicit values win
    fixed = plan_budget(40, HSAConfig(budget=budget, warmup_steps=3, tail_steps=2, max_divisor=16, stride=1))
    assert (fixed.warmup, fixed.tail, fixed.max_divisor) == (3, 2, 16)


@pytest.mark.parametrize("budget,stride", [(0.75, 1), (0.5, 1), (0.35, 2), (0.25, 2), (0.2, 2)])
def test_derived_stride_plans_every_second_step_at_small_budgets(budget, stride):
    plan = plan_budget(40, HSAConfig(budget=budget))
    assert plan.stride == stride and plan.predicted_fraction == pytest.approx(budget, rel=0.02)
    assert [k for k in range(40) if plan.kind(k) == "skip"] == list(range(1, 40, 2)) * (stride == 2)
    assert plan_budget(40, HSAConfig(budget=budget), forced_full={13}).stride == 1  # an expert switch keeps every step


def test_stride_with_every_grid_step_full_is_euler_on_every_second_sigma():
    plan = plan_budget(40, HSAConfig(budget=0.5, stride=2))
    assert [plan.kind(k) for k in range(4)] == ["full", "skip", "full", "skip"] and plan.predicted_fraction == 0.5
    with pytest.raises(ValueError, match="more than stride 2 can spend"):
        plan_budget(40, HSAConfig(budget=0.6, stride=2))
    with pytest.raises(ValueError, match="stride"):
        HSAConfig(stride=0)
