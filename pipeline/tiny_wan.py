"""Tiny Wan pipelines built from configs (random weights): test fixtures for every Wan variant.

Every variant is a real diffusers pipeline (tokenizer, UMT5 text encoder, Wan VAE, Wan
transformer(s), and a CLIP image encoder for Wan 2.1 I2V) with random weights, written with
``save_pretrained`` so it is loaded through the same ``from_pretrained`` path as real weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    T5TokenizerFast,
    UMT5Config,
    UMT5EncoderModel,
)

VARIANTS = {
    # name: (pipeline class, transformer input channels, two experts, expand_timesteps, CLIP encoder)
    "t2v": (WanPipeline, 16, False, False, False),
    "t2v-a14b": (WanPipeline, 16, True, False, False),
    "ti2v": (WanPipeline, 16, False, True, False),
    "ti2v-i2v": (WanImageToVideoPipeline, 16, False, True, False),
    "i2v": (WanImageToVideoPipeline, 36, False, False, True),
    "i2v-a14b": (WanImageToVideoPipeline, 36, True, False, False),
}
BOUNDARY_RATIO = {WanPipeline: 0.875, WanImageToVideoPipeline: 0.9}  # Wan 2.2 A14B values
WORDS = (
    "a an the of and with on over in to from moving moves static still camera pans red green blue yellow "
    "white black orange purple circle square triangle ball box left right up down background grass sky "
    "sand water stone wood snow"
).split()
HIDDEN, HEADS, LAYERS, TEXT_DIM, IMAGE_DIM = 64, 2, 2, 32, 32


def _tokenizer() -> T5TokenizerFast:
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("\u2581" + w, -1.0 - i) for i, w in enumerate(WORDS)]
    vocab += [(c, -100.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789"] + [("\u2581", -90.0)]
    return T5TokenizerFast(vocab=vocab, extra_ids=0)


def _transformer(in_channels: int, clip: bool) -> WanTransformer3DModel:
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=HEADS, attention_head_dim=HIDDEN // HEADS,
        in_channels=in_channels, out_channels=16, text_dim=TEXT_DIM, freq_dim=64, ffn_dim=2 * HIDDEN,
        num_layers=LAYERS, rope_max_seq_len=64,
        image_dim=IMAGE_DIM if clip else None, added_kv_proj_dim=HIDDEN if clip else None,
    )


def build_tiny_wan(path: str | os.PathLike, variant: str = "t2v", seed: int = 0) -> Path:
    """Build the ``variant`` pipeline with random weights and save it to ``path``."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown tiny Wan variant {variant!r}; choose from {sorted(VARIANTS)}")
    cls, in_channels, two_experts, expand, clip = VARIANTS[variant]
    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    components = dict(
        tokenizer=tokenizer,
        text_encoder=UMT5EncoderModel(UMT5Config(
            vocab_size=len(tokenizer), d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8,
        )),
        vae=AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                             temperal_downsample=[False, True, True]),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
        transformer=_transformer(in_channels, clip),
        expand_timesteps=expand,
    )
    if two_experts:
        components.update(transformer_2=_transformer(in_channels, clip), boundary_ratio=BOUNDARY_RATIO[cls])
    if cls is WanImageToVideoPipeline:
        components.update(image_encoder=None, image_processor=None)
        if clip:
            components.update(
                image_encoder=CLIPVisionModel(CLIPVisionConfig(
                    hidden_size=IMAGE_DIM, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                    image_size=32, patch_size=8,
                )),
                image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
            )
    pipe = cls(**components)
    path = Path(path)
    pipe.save_pretrained(path)
    return path
