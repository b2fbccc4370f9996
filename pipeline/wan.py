"""HSA for diffusers' Wan transformers (Wan 2.1 / 2.2: T2V, I2V, two experts, TI2V), from outside.

Nothing of diffusers' model code is changed or copied. We attach, at the same points diffusers'
own context parallelism splits the sequence (``WanTransformer3DModel._cp_plan``):

- the transformer's forward: pick the step's active tokens A (shared by all guidance branches),
  slice per-token timesteps (TI2V) to A;
- ``rope``: slice the rotary tables to A;
- ``blocks.0``: gather the hidden states of A (this is where token evaluations are counted);
- every ``attn1``: project Q/K/V for A only, write K/V of A into the branch's cache, attend Q(A)
  against all N cached keys;
- every ``attn2``: the text (and image) K/V is constant over a run: computed once per branch;
- ``proj_out``: scatter A's outputs into the branch's last full output, so inactive tokens
  return their cached velocity and the scheduler's Euler step becomes the cached Euler update.

A full step (A = None) runs every token and refills every cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import WanImageToVideoPipeline, WanPipeline, WanTransformer3DModel
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.transformers.transformer_wan import _get_added_kv_projections, _get_qkv_projections

from hsa import KVCache, active_query_attention
from pipeline.parallel import Comm

HOOK = "hsa"
CFG_HOOK = "hsa_cfg_parallel"
BRANCHES = ("cond", "uncond")  # the pipelines' cache_context names, in call order
# WanAttnProcessor splits image from text context at this text length; we split the same way.
TEXT_CONTEXT_TOKENS = 512
PIPELINES = (WanPipeline, WanImageToVideoPipeline)
TRANSFORMERS = (WanTransformer3DModel,)

# select(model, num_tokens, grid) -> sorted indices of the active tokens, or None for all
Selector = Callable[[torch.nn.Module, int, tuple[int, int, int]], "torch.Tensor | None"]


@dataclass
class _Branch(BaseState):
    """What one guidance branch ('cond', 'uncond') keeps between steps."""

    self_kv: dict[int, KVCache] = field(default_factory=dict)
    cross_kv: dict[int, tuple[torch.Tensor, ...]] = field(default_factory=dict)
    output: torch.Tensor | None = None  # proj_out's last full output (tokens)
    result: Any = None  # the transformer's last full return value

    def reset(self, *args: Any, **kwargs: Any) -> None:
        self.self_kv.clear()
        self.cross_kv.clear()
        self.output = self.result = None


class _Call:
    """The state of the forward call in flight, shared by the hooks and processors of one model.

    ``index``: the step's active tokens over the whole sequence (None = every token): the rows
    written into K/V caches and outputs. ``local``: the rows this rank evaluates (with Ulysses,
    the active tokens of its shard; otherwise ``index``).
    """

    def __init__(self, comm: Comm | None, kv_sync: bool = True) -> None:
        self.comm, self.kv_sync = comm, kv_sync
        self.branch: _Branch | None = None
        self.index: torch.Tensor | None = None
        self.local: torch.Tensor | None = None
        self._checked: torch.Tensor | None = None  # the last index whose per-shard balance was checked

    def set_active(self, index: torch.Tensor | None, num_tokens: int, device: torch.device) -> None:
        self.index = self.local = index
        if self.comm is None:
            return
        p, r = self.comm.sequence, self.comm.seq_rank
        if num_tokens % p:
            raise ValueError(f"{num_tokens} tokens do not split over {p} sequence-parallel ranks")
        shard = num_tokens // p
        if index is None:
            self.local = torch.arange(r * shard, (r + 1) * shard, device=device)
            return
        # the same check on every rank (identical index), so all raise or none: no rank is left
        # waiting in a collective. Once per step: every branch of a step gets the same index
        # object, and the check syncs with the host.
        if index is not self._checked:
            counts = torch.bincount(index // shard, minlength=p)
            if not bool((counts == counts[0]).all()):
                raise RuntimeError(f"active tokens per sequence shard differ ({counts.tolist()}): per-rank quotas broken")
            self._checked = index
        quota = index.numel() // p
        self.local = index[r * quota : (r + 1) * quota]


def _arg(args: tuple, kwargs: dict, position: int, name: str) -> Any:
    return kwargs[name] if name in kwargs else args[position]


def _with_arg(args: tuple, kwargs: dict, position: int, name: str, value: Any) -> tuple[tuple, dict]:
    if name in kwargs:
        return args, {**kwargs, name: value}
    return args[:position] + (value,) + args[position + 1 :], kwargs


class _ForwardHook(ModelHook):
    _is_stateful = True

    def __init__(self, call: _Call, select: Selector, counter: WanHSA) -> None:
        super().__init__()
        self.call, self.select, self.counter = call, select, counter
        self.state_manager = StateManager(_Branch)

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        hidden = _arg(args, kwargs, 0, "hidden_states")
        grid = token_grid(module, hidden.shape)
        num_tokens = grid[0] * grid[1] * grid[2]
        self.call.set_active(self.select(module, num_tokens, grid), num_tokens, hidden.device)
        self.call.branch = self.state_manager.get_state()
        self.counter.calls += 1
        self.counter.dense_tokens += num_tokens // (self.call.comm.sequence if self.call.comm else 1)
        timestep = _arg(args, kwargs, 1, "timestep")
        if self.call.local is not None and timestep.ndim == 2:
            args, kwargs = _with_arg(args, kwargs, 1, "timestep", timestep[:, self.call.local])
        return args, kwargs

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        # No active token (every rank sees the same index): every token returns its cached
        # velocity, so the step costs no model work at all.
        call = self.call
        if call.index is not None and call.index.numel() == 0 and call.branch.result is not None:
            result = call.branch.result
            return (result[0].clone(),) if isinstance(result, tuple) else type(result)(sample=result.sample.clone())
        return self.fn_ref.original_forward(*args, **kwargs)

    def post_forward(self, module: torch.nn.Module, output: Any) -> Any:
        self.call.branch.result = output
        return output

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.state_manager.reset()
        return module


class _RopeHook(ModelHook):
    def __init__(self, call: _Call) -> None:
        super().__init__()
        self.call = call

    def post_forward(self, module: torch.nn.Module, output: Any) -> Any:
        if self.call.local is None:
            return output
        return tuple(t[:, self.call.local] for t in output)


class _GatherHook(ModelHook):
    def __init__(self, call: _Call, counter: WanHSA) -> None:
        super().__init__()
        self.call, self.counter = call, counter

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        if self.call.local is not None:
            hidden = _arg(args, kwargs, 0, "hidden_states")
            args, kwargs = _with_arg(args, kwargs, 0, "hidden_states", hidden[:, self.call.local])
        self.counter.token_evaluations += _arg(args, kwargs, 0, "hidden_states").shape[1]
        return args, kwargs


class _ScatterHook(ModelHook):
    def __init__(self, call: _Call) -> None:
        super().__init__()
        self.call = call

    def post_forward(self, module: torch.nn.Module, output: torch.Tensor) -> torch.Tensor:
        branch = self.call.branch
        if self.call.comm is not None:
            output = self.call.comm.gather_tokens(output)
        if self.call.index is None:
            branch.output = output
            return output
        if branch.output is None:
            raise RuntimeError("sparse Wan forward before a full step filled this branch's caches")
        branch.output.index_copy_(1, self.call.index, output.to(branch.output.dtype))
        return branch.output.clone()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on interleaved pairs; the tables repeat every frequency twice, as diffusers builds them."""
    even, odd = x[..., 0::2], x[..., 1::2]
    c, s = cos[..., 0::2], sin[..., 1::2]
    return torch.stack([even * c - odd * s, even * s + odd * c], dim=-1).flatten(-2).type_as(x)


class _SelfAttention:
    """attn1 with K/V synchronisation: Q/K/V for the active tokens, keys of all tokens."""

    def __init__(self, call: _Call, layer: int) -> None:
        self.call, self.layer = call, layer

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        q, k, v = _get_qkv_projections(attn, hidden_states, None)
        q = attn.norm_q(q).unflatten(2, (attn.heads, -1))
        k = attn.norm_k(k).unflatten(2, (attn.heads, -1))
        v = v.unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            q, k = _rotate(q, *rotary_emb), _rotate(k, *rotary_emb)
        comm = self.call.comm
        if comm is not None and comm.ring_attention is not None:  # dense Ulysses x ring (xfuser)
            if self.call.index is not None:
                raise RuntimeError("ring attention runs dense steps only (budget 1.0)")
            out = comm.ring_attention(q, k, v).flatten(2, 3).type_as(q)
            return attn.to_out[1](attn.to_out[0](out))
        if comm is not None:  # sequence shards -> head shards, all active tokens
            q, k, v = comm.seq_to_heads(q), comm.seq_to_heads(k), comm.seq_to_heads(v)
        if self.call.kv_sync or self.call.index is None:
            cache = self.call.branch.self_kv.setdefault(self.layer, KVCache())
            k, v = cache.update(k, v, self.call.index)
        out = active_query_attention(q, k, v)  # without sync (an ablation): active tokens only
        if comm is not None:
            out = comm.heads_to_seq(out)
        out = out.flatten(2, 3).type_as(q)
        return attn.to_out[1](attn.to_out[0](out))


class _CrossAttention:
    """attn2 with the text (and image) keys and values computed once per branch and run."""

    def __init__(self, call: _Call, layer: int) -> None:
        self.call, self.layer = call, layer

    def _context_kv(self, attn, context: torch.Tensor) -> tuple[torch.Tensor, ...]:
        image = None
        if attn.add_k_proj is not None:
            split = context.shape[1] - TEXT_CONTEXT_TOKENS
            image, context = context[:, :split], context[:, split:]
        if attn.fused_projections:
            k, v = attn.to_kv(context).chunk(2, dim=-1)
        else:
            k, v = attn.to_k(context), attn.to_v(context)
        kv = (attn.norm_k(k).unflatten(2, (attn.heads, -1)), v.unflatten(2, (attn.heads, -1)))
        if image is not None:
            k_img, v_img = _get_added_kv_projections(attn, image)
            kv += (attn.norm_added_k(k_img).unflatten(2, (attn.heads, -1)), v_img.unflatten(2, (attn.heads, -1)))
        return kv

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        cross = self.call.branch.cross_kv
        if self.layer not in cross:
            cross[self.layer] = self._context_kv(attn, encoder_hidden_states)
        kv = cross[self.layer]
        q = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))
        out = active_query_attention(q, kv[0], kv[1]).flatten(2, 3).type_as(q)
        if len(kv) == 4:
            out = active_query_attention(q, kv[2], kv[3]).flatten(2, 3).type_as(q) + out
        return attn.to_out[1](attn.to_out[0](out))


class _NoState(BaseState):
    def reset(self, *args: Any, **kwargs: Any) -> None:
        pass


class _CfgSplitHook(ModelHook):
    """CFG parallel: this rank computes one guidance branch; its peer's output arrives by all-gather.

    The pipeline calls 'cond' then 'uncond' each step and reads neither output before the second
    call returns. The rank that owns 'uncond' answers the 'cond' call with an empty buffer and
    fills it in place at the exchange during the 'uncond' call.
    """

    _is_stateful = True

    def __init__(self, comm: Comm) -> None:
        super().__init__()
        self.comm, self.mine = comm, BRANCHES[comm.cfg_rank]
        self.state_manager = StateManager(_NoState)
        self.computed: torch.Tensor | None = None
        self.placeholder: torch.Tensor | None = None

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        name = self.state_manager.context.name
        if name not in BRANCHES:
            raise RuntimeError(f"CFG parallel expects cache contexts {BRANCHES}, got {name!r}")
        wrap_tuple = not kwargs.get("return_dict", True)
        if name == self.mine:
            out = self.fn_ref.original_forward(*args, **kwargs)
            self.computed = out[0] if wrap_tuple else out.sample
        if name == "cond":
            if self.mine == "cond":
                return out
            hidden = _arg(args, kwargs, 0, "hidden_states")
            shape = (hidden.shape[0], module.config.out_channels, *hidden.shape[2:])
            self.placeholder = hidden.new_empty(shape)
            return (self.placeholder,) if wrap_tuple else Transformer2DModelOutput(sample=self.placeholder)
        cond, uncond = self.comm.gather_branches(self.computed)
        if self.mine == "uncond":
            self.placeholder.copy_(cond)
            return out
        return (uncond,) if wrap_tuple else Transformer2DModelOutput(sample=uncond)

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.computed = self.placeholder = None
        return module


class WanHSA:
    """HSA attached to one WanTransformer3DModel; ``detach()`` restores the stock model.

    With ``comm`` (see pipeline/parallel.py) the transformer runs Ulysses over the active tokens
    and, with a CFG degree of 2, computes only this rank's guidance branch. ``kv_sync=False`` is
    the ablation that drops inactive tokens from self-attention instead of using their cached K/V.
    """

    def __init__(
        self,
        transformer: WanTransformer3DModel,
        select: Selector,
        comm: Comm | None = None,
        kv_sync: bool = True,
    ) -> None:
        if not isinstance(transformer, TRANSFORMERS):
            raise TypeError(f"expected a WanTransformer3DModel, got {type(transformer).__name__}")
        heads = transformer.config.num_attention_heads
        if comm is not None and heads % comm.ulysses:
            raise ValueError(f"{heads} attention heads do not split over {comm.ulysses} Ulysses ranks")
        self.transformer = transformer
        self.calls = self.dense_tokens = self.token_evaluations = 0
        self._original_processors = transformer.attn_processors
        call = _Call(comm, kv_sync)
        processors = {}
        for name in self._original_processors:
            layer = int(name.split(".")[1])
            processors[name] = (_SelfAttention if ".attn1." in name else _CrossAttention)(call, layer)
        transformer.set_attn_processor(processors)
        registry = HookRegistry.check_if_exists_or_initialize
        registry(transformer).register_hook(_ForwardHook(call, select, self), HOOK)
        registry(transformer.rope).register_hook(_RopeHook(call), HOOK)
        registry(transformer.blocks[0]).register_hook(_GatherHook(call, self), HOOK)
        registry(transformer.proj_out).register_hook(_ScatterHook(call), HOOK)
        if comm is not None and comm.config.cfg > 1:
            registry(transformer).register_hook(_CfgSplitHook(comm), CFG_HOOK)
        registry(transformer).invalidate_child_registries_cache()

    def reset(self) -> None:
        """Forget every branch's caches (a new run, or a new network)."""
        HookRegistry.check_if_exists_or_initialize(self.transformer).reset_stateful_hooks(recurse=False)

    def detach(self) -> None:
        registry = HookRegistry.check_if_exists_or_initialize(self.transformer)
        registry.remove_hook(CFG_HOOK, recurse=False)
        registry.remove_hook(HOOK, recurse=True)
        registry.invalidate_child_registries_cache()
        self.transformer.set_attn_processor(self._original_processors)


def token_grid(transformer: WanTransformer3DModel, latent_shape: torch.Size) -> tuple[int, int, int]:
    p_t, p_h, p_w = transformer.config.patch_size
    _, _, frames, height, width = latent_shape
    return frames // p_t, height // p_h, width // p_w


def patchify(latent: torch.Tensor, patch_size: tuple[int, int, int]) -> torch.Tensor:
    """[B, C, F, H, W] -> [B, N, C * p_t * p_h * p_w] in the transformer's token order."""
    b, c, f, h, w = latent.shape
    p_t, p_h, p_w = patch_size
    x = latent.reshape(b, c, f // p_t, p_t, h // p_h, p_h, w // p_w, p_w)
    return x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, (f // p_t) * (h // p_h) * (w // p_w), -1)


def unpatchify(tokens: torch.Tensor, latent_shape: torch.Size, patch_size: tuple[int, int, int]) -> torch.Tensor:
    """The inverse of ``patchify``: [B, N, C * p_t * p_h * p_w] -> [B, C, F, H, W]."""
    b, c, f, h, w = latent_shape
    p_t, p_h, p_w = patch_size
    x = tokens.reshape(b, f // p_t, h // p_h, w // p_w, c, p_t, p_h, p_w)
    return x.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(b, c, f, h, w)


def transformers_of(pipe: Any) -> list[WanTransformer3DModel]:
    return [m for m in (getattr(pipe, "transformer", None), getattr(pipe, "transformer_2", None)) if m is not None]


def has_two_experts(pipe: Any) -> bool:
    return pipe.config.get("boundary_ratio") is not None and getattr(pipe, "transformer_2", None) is not None


def expert_switch_step(pipe: Any, timesteps: torch.Tensor) -> int | None:
    """The first step the Wan 2.2 low-noise expert runs (the pipeline's own rule), if any."""
    if not has_two_experts(pipe):
        return None
    boundary = pipe.config.boundary_ratio * pipe.scheduler.config.num_train_timesteps
    below = (timesteps < boundary).nonzero().flatten()
    return int(below[0]) if below.numel() else None


def planned_switch_step(pipe: Any, steps: int) -> int | None:
    """expert_switch_step for a run of ``steps`` steps, on a scratch scheduler (no model work)."""
    if not has_two_experts(pipe):
        return None
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    return expert_switch_step(pipe, scheduler.timesteps)


def token_count(pipe: Any, height: int, width: int, num_frames: int) -> int:
    p_t, p_h, p_w = transformers_of(pipe)[0].config.patch_size
    frames = ((num_frames - 1) // pipe.vae_scale_factor_temporal + 1) // p_t
    return frames * (height // pipe.vae_scale_factor_spatial // p_h) * (width // pipe.vae_scale_factor_spatial // p_w)


@torch.no_grad()
def decode_latents(pipe: Any, latents: torch.Tensor) -> Any:
    """The pipeline's own decode (latent statistics, VAE, post-processing) -> float frames [B, F, H, W, 3]."""
    vae = pipe.vae
    latents = latents.to(vae.device, vae.dtype)
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(latents)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(latents)
    video = vae.decode(latents / inv_std + mean, return_dict=False)[0]
    return pipe.video_processor.postprocess_video(video, output_type="np")


def needs_image(pipe: Any) -> bool:
    return isinstance(pipe, WanImageToVideoPipeline)


def size_factors(pipe: Any) -> tuple[int, int]:
    """(spatial multiple for height and width, temporal factor: num_frames = factor * k + 1)."""
    patch = transformers_of(pipe)[0].config.patch_size
    return pipe.vae_scale_factor_spatial * patch[1], pipe.vae_scale_factor_temporal
