"""The ablation switches of HSAConfig do what the fidelity benchmark says they do."""

import pytest
import torch
from conftest import pipe_kwargs
from test_wan_sparse_forward import _forward, _inputs

from hsa import HSAConfig
from pipeline.hsa_pipeline import apply_hsa, remove_hsa
from pipeline.wan import WanHSA, patchify, unpatchify


class _KeysOnly:
    """The stock attn1 processor with keys outside ``keep`` masked out: the reference for kv=drop."""

    def __init__(self, inner, keep: torch.Tensor, n: int) -> None:
        self.inner = inner
        self.mask = torch.zeros(1, 1, 1, n, dtype=torch.bool)
        self.mask[..., keep] = True

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        return self.inner(attn, hidden_states, encoder_hidden_states, self.mask, rotary_emb)


def test_kv_drop_equals_attention_over_active_keys_only(tiny_pipe):
    transformer = tiny_pipe("t2v").transformer
    inputs, n = _inputs(transformer, "t2v"), 48
    subset = torch.tensor([0, 5, 17, 18, 30, 47])
    stock = transformer.attn_processors
    transformer.set_attn_processor({k: _KeysOnly(p, subset, n) if ".attn1." in k else p for k, p in stock.items()})
    try:
        reference = patchify(_forward(transformer, inputs), transformer.config.patch_size)[:, subset]
    finally:
        transformer.set_attn_processor(stock)
    selection = {"index": None}
    for kv_sync in (False, True):
        hsa = WanHSA(transformer, lambda *a: selection["index"], kv_sync=kv_sync)
        try:
            selection["index"] = None
            _forward(transformer, dict(inputs, hidden_states=inputs["hidden_states"] + 0.3))  # fills the caches
            selection["index"] = subset
            out = patchify(_forward(transformer, inputs), transformer.config.patch_size)[:, subset]
        finally:
            hsa.detach()
        if kv_sync:  # sync attends to the (stale) cached keys of the others: not the reference
            assert not torch.allclose(out, reference, atol=1e-4)
        else:
            torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)


def test_unpatchify_inverts_patchify():
    latent = torch.randn(2, 16, 3, 8, 6)
    assert torch.equal(unpatchify(patchify(latent, (1, 2, 2)), latent.shape, (1, 2, 2)), latent)


@pytest.mark.parametrize("skipped", ["euler", "freeze"])
def test_skipped_tokens_move_with_cached_velocity_or_stay(tiny_pipe, skipped):
    pipe = tiny_pipe("t2v")
    controller = apply_hsa(pipe, HSAConfig(budget=0.25, skipped=skipped))
    latents, active = [], []

    def record(pipe, step, timestep, callback_kwargs):
        latents.append(callback_kwargs["latents"].clone())
        active.append(controller.run.index)
        return {}

    try:
        pipe(**pipe_kwargs(pipe, steps=40, output_type="latent", callback_on_step_end=record))
    finally:
        remove_hsa(pipe)
    patch = pipe.transformer.config.patch_size
    sparse_steps = [k for k in range(1, 40) if active[k] is not None and active[k].numel()]
    assert sparse_steps
    for k in sparse_steps:
        moved = patchify(latents[k] - latents[k - 1], patch).abs()  # [1, N, C]
        inactive = torch.ones(moved.shape[1], dtype=torch.bool)
        inactive[active[k]] = False
        assert moved[:, ~inactive].max() > 0
        if skipped == "freeze":
            assert moved[:, inactive].max() == 0
        else:
            assert moved[:, inactive].min() > 0


@pytest.mark.parametrize("score", ["magnitude", "random"])
def test_other_score_signals_rank_other_tokens(tiny_pipe, score):
    pipe = tiny_pipe("t2v")
    chosen = {}
    for name in ("relative", score):
        controller = apply_hsa(pipe, HSAConfig(budget=0.25, score=name))
        try:
            pipe(**pipe_kwargs(pipe, steps=40, size=128, output_type="latent"))
            chosen[name] = controller.run.stepper.divisor.clone()
            assert abs(controller.stats().achieved_fraction - 0.25) < 0.03  # same budget either way
        finally:
            remove_hsa(pipe)
    assert not torch.equal(chosen["relative"], chosen[score])


def test_ablation_values_are_checked():
    with pytest.raises(ValueError, match="kv"):
        HSAConfig(kv="never")
    with pytest.raises(ValueError, match="skipped"):
        HSAConfig(skipped="teleport")
    with pytest.raises(ValueError, match="score"):
        HSAConfig(score="vibes")
