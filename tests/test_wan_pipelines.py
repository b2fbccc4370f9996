"""HSA inside real diffusers Wan pipelines: exact at budget 1, and spending what it plans."""

import numpy as np
import pytest
from conftest import pipe_kwargs

from hsa import HSAConfig
from pipeline.hsa_pipeline import apply_hsa, remove_hsa
from pipeline.tiny_wan import VARIANTS


def _run(pipe, image, **kw):
    return pipe(**pipe_kwargs(pipe, image, **kw)).frames


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_budget_one_equals_stock_pipeline(tiny_pipe, first_frame, variant):
    pipe = tiny_pipe(variant)
    stock = _run(pipe, first_frame)
    controller = apply_hsa(pipe, HSAConfig(budget=1.0))
    try:
        ours = _run(pipe, first_frame)
        stats = controller.stats()
    finally:
        remove_hsa(pipe)
    assert np.abs(ours - stock).max() <= 1e-5
    assert stats.token_evaluations == stats.dense_token_evaluations > 0  # our hooks did the work
    if VARIANTS[variant][2]:  # two experts: both networks ran under HSA
        assert all(a.calls > 0 for a in controller.attachments)
    assert np.abs(_run(pipe, first_frame) - stock).max() == 0  # removed: the stock pipeline again


@pytest.mark.parametrize("variant", ["t2v", "t2v-a14b", "i2v"])
@pytest.mark.parametrize("budget", [0.5, 0.25])
def test_counted_evaluations_match_plan(tiny_pipe, first_frame, variant, budget):
    pipe = tiny_pipe(variant)
    controller = apply_hsa(pipe, HSAConfig(budget=budget))
    try:
        _run(pipe, first_frame.resize((128, 128)), steps=40, size=128, frames=17, output_type="latent")
        stats = controller.stats()
    finally:
        remove_hsa(pipe)
    assert stats.transformer_calls == 80  # 40 steps x 2 guidance branches
    assert abs(stats.achieved_fraction - stats.planned_fraction) <= 0.03 * stats.planned_fraction
    assert abs(stats.planned_fraction - budget) <= 0.02 * budget


def test_expert_switch_forces_a_full_step(tiny_pipe, first_frame):
    pipe = tiny_pipe("t2v-a14b")
    controller = apply_hsa(pipe, HSAConfig(budget=0.25))
    seen = []
    hooks = [
        t.blocks[0].register_forward_pre_hook(
            lambda m, args, name=name: seen.append((name, args[0].shape[1], controller.run.step))
        )
        for name, t in (("high", pipe.transformer), ("low", pipe.transformer_2))
    ]
    try:
        _run(pipe, None, steps=40, output_type="latent")
        plan = controller.run.plan
    finally:
        for h in hooks:
            h.remove()
        remove_hsa(pipe)
    first_low = next(i for i, (name, _, _) in enumerate(seen) if name == "low")
    _, tokens, step = seen[first_low]
    assert tokens == seen[0][1] == 48  # every token on the new expert's first step
    assert plan.kind(step) == "full" and plan.warmup <= step < plan.steps - plan.tail


def test_text_kv_is_computed_once_per_branch(tiny_pipe):
    pipe = tiny_pipe("t2v")
    calls = []
    hook = pipe.transformer.blocks[1].attn2.to_k.register_forward_hook(lambda *a: calls.append(1))
    try:
        _run(pipe, None, steps=6, output_type="latent")
        stock_calls = len(calls)
        calls.clear()
        apply_hsa(pipe, HSAConfig(budget=0.5))
        _run(pipe, None, steps=6, output_type="latent")
        _run(pipe, None, steps=6, output_type="latent", prompt="a blue square moves up")
    finally:
        hook.remove()
        remove_hsa(pipe)
    assert stock_calls == 12
    assert len(calls) == 4  # two branches, two runs


def test_new_prompt_gets_fresh_text_kv(tiny_pipe):
    pipe = tiny_pipe("t2v")
    stock = _run(pipe, None, prompt="a blue square moves up")
    apply_hsa(pipe, HSAConfig(budget=1.0))
    try:
        _run(pipe, None)
        ours = _run(pipe, None, prompt="a blue square moves up")
    finally:
        remove_hsa(pipe)
    assert np.abs(ours - stock).max() <= 1e-5


def test_apply_twice_is_refused_and_remove_is_idempotent(tiny_pipe):
    pipe = tiny_pipe("t2v")
    apply_hsa(pipe, HSAConfig(budget=0.5))
    with pytest.raises(RuntimeError, match="already applied"):
        apply_hsa(pipe, HSAConfig(budget=0.5))
    remove_hsa(pipe)
    remove_hsa(pipe)
    assert "step" not in vars(pipe.scheduler)


def test_non_euler_scheduler_is_refused(tiny_dirs):
    from diffusers import UniPCMultistepScheduler, WanPipeline

    from pipeline.loading import use_flow_match_euler

    pipe = WanPipeline.from_pretrained(tiny_dirs("t2v"))
    pipe.scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    with pytest.raises(TypeError, match="FlowMatchEulerDiscreteScheduler"):
        apply_hsa(pipe, HSAConfig())
    use_flow_match_euler(pipe)
    assert pipe.scheduler.config.shift == 3.0
    apply_hsa(pipe, HSAConfig())
    remove_hsa(pipe)


def test_step_without_active_tokens_runs_no_block(tiny_pipe):
    pipe = tiny_pipe("t2v")
    # 48 tokens, a long sync period: some window steps round to no token at all
    controller = apply_hsa(pipe, HSAConfig(budget=0.25, max_divisor=16, tail_steps=2))
    blocks_ran, empty_steps = [], []

    def note_empty(pipe, step, timestep, callback_kwargs):
        index = controller.run.index
        if index is not None and index.numel() == 0:
            empty_steps.append(step)
        return {}

    hook = pipe.transformer.blocks[0].register_forward_pre_hook(lambda m, a: blocks_ran.append(controller.run.step))
    try:
        _run(pipe, None, steps=20, output_type="latent", callback_on_step_end=note_empty)
        stats = controller.stats()
    finally:
        hook.remove()
        remove_hsa(pipe)
    assert empty_steps
    assert not set(empty_steps) & set(blocks_ran)
    assert stats.transformer_calls == 40  # the pipeline still called it; our hook answered from cache
