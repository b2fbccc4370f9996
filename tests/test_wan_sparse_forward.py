"""K/V synchronisation inside a real WanTransformer3DModel is exact when nothing is stale."""

import pytest
import torch

from pipeline.wan import WanHSA, patchify, token_grid


def _inputs(transformer, variant):
    torch.manual_seed(1)
    cfg = transformer.config
    hidden = torch.randn(1, cfg.in_channels, 3, 8, 8)
    n = 3 * 4 * 4
    inputs = dict(hidden_states=hidden, encoder_hidden_states=torch.randn(1, 512, cfg.text_dim))
    if variant == "ti2v":  # per-token timesteps, first frame clean
        inputs["timestep"] = torch.cat([torch.zeros(16), torch.full((n - 16,), 700.0)]).unsqueeze(0)
    else:
        inputs["timestep"] = torch.tensor([700.0])
    if cfg.image_dim is not None:
        inputs["encoder_hidden_states_image"] = torch.randn(1, 17, cfg.image_dim)
    return inputs


def _forward(transformer, inputs, branch="cond"):
    with transformer.cache_context(branch):
        return transformer(**inputs, return_dict=False)[0]


@pytest.mark.parametrize("variant", ["t2v", "ti2v", "i2v"])
def test_sparse_forward_equals_dense(tiny_pipe, variant):
    transformer = tiny_pipe(variant).transformer
    inputs = _inputs(transformer, variant)
    dense = _forward(transformer, inputs)
    patch = transformer.config.patch_size
    n = 48
    selection = {"index": None}
    hsa = WanHSA(transformer, lambda model, num_tokens, grid: selection["index"])
    try:
        assert token_grid(transformer, inputs["hidden_states"].shape) == (3, 4, 4)
        # a full step through our processors is the stock forward
        torch.testing.assert_close(_forward(transformer, inputs), dense, atol=1e-6, rtol=0)
        # A = all tokens through the sparse path
        selection["index"] = torch.arange(n)
        torch.testing.assert_close(_forward(transformer, inputs), dense, atol=1e-5, rtol=0)
        # cache filled by a dense forward at the same input: a subset gets the dense outputs
        subset = torch.tensor([0, 5, 17, 18, 30, 47])
        selection["index"] = subset
        before = hsa.token_evaluations
        sparse = _forward(transformer, inputs)
        assert hsa.token_evaluations - before == subset.numel()
        torch.testing.assert_close(patchify(sparse, patch)[:, subset], patchify(dense, patch)[:, subset], atol=1e-5, rtol=0)
        # inactive tokens return the branch's cached output
        inactive = torch.tensor([t for t in range(n) if t not in subset.tolist()])
        moved = dict(inputs, hidden_states=inputs["hidden_states"] + 0.5)
        stale = _forward(transformer, moved)
        torch.testing.assert_close(patchify(stale, patch)[:, inactive], patchify(dense, patch)[:, inactive])
        assert not torch.allclose(patchify(stale, patch)[:, subset], patchify(dense, patch)[:, subset])
    finally:
        hsa.detach()
    torch.testing.assert_close(_forward(transformer, inputs), dense, atol=0, rtol=0)


def test_branches_keep_separate_caches(tiny_pipe):
    transformer = tiny_pipe("t2v").transformer
    cond, uncond = _inputs(transformer, "t2v"), _inputs(transformer, "t2v")
    uncond["encoder_hidden_states"] = torch.zeros_like(uncond["encoder_hidden_states"])
    dense_cond, dense_uncond = _forward(transformer, cond), _forward(transformer, uncond)
    selection = {"index": None}
    hsa = WanHSA(transformer, lambda *a: selection["index"])
    try:
        _forward(transformer, cond, "cond"), _forward(transformer, uncond, "uncond")
        selection["index"] = torch.tensor([1, 2, 3])
        patch = transformer.config.patch_size
        for inputs, dense, branch in ((cond, dense_cond, "cond"), (uncond, dense_uncond, "uncond")):
            out = _forward(transformer, inputs, branch)
            torch.testing.assert_close(patchify(out, patch), patchify(dense, patch), atol=1e-5, rtol=0)
    finally:
        hsa.detach()
