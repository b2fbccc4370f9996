"""The toy Wan model's components (configs only; weights come from bench/train_toy.py).

A real WanPipeline at toy scale: a word-level tokenizer over the caption vocabulary, a small
UMT5 text encoder (kept at its random initialisation: a fixed, distinct embedding per caption
is all the transformer needs), a residual Wan 2.2-style VAE (4x spatial, 2x temporal) and a
4-layer Wan transformer. 64 x 64 x 17 clips give 16 x 9 x 16 x 16 latents, 576 tokens.
"""

from __future__ import annotations

from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
from transformers import T5TokenizerFast, UMT5Config, UMT5EncoderModel

from pipeline.toy_data import caption_words

SIZE, FRAMES, FPS = 64, 17, 8
Z_DIM, TEXT_DIM = 16, 64
SHIFT = 3.0


def tokenizer() -> T5TokenizerFast:
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("\u2581" + w, -1.0 - i) for i, w in enumerate(caption_words())]
    vocab += [(c, -100.0) for c in "abcdefghijklmnopqrstuvwxyz"] + [("\u2581", -90.0)]
    return T5TokenizerFast(vocab=vocab, extra_ids=0)


def text_encoder(vocab_size: int) -> UMT5EncoderModel:
    return UMT5EncoderModel(UMT5Config(
        vocab_size=vocab_size, d_model=TEXT_DIM, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8,
    ))


def vae(latents_mean: list[float] | None = None, latents_std: list[float] | None = None) -> AutoencoderKLWan:
    return AutoencoderKLWan(
        base_dim=32, z_dim=Z_DIM, dim_mult=[1, 1], num_res_blocks=1, temperal_downsample=[True],
        is_residual=True, patch_size=2, in_channels=12, out_channels=12,
        scale_factor_spatial=4, scale_factor_temporal=2,
        latents_mean=latents_mean or [0.0] * Z_DIM, latents_std=latents_std or [1.0] * Z_DIM,
    )


def transformer() -> WanTransformer3DModel:
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=32, in_channels=Z_DIM,
        out_channels=Z_DIM, text_dim=TEXT_DIM, freq_dim=64, ffn_dim=512, num_layers=4, rope_max_seq_len=64,
    )


def pipeline(tok, text, autoencoder, dit) -> WanPipeline:
    return WanPipeline(tokenizer=tok, text_encoder=text, vae=autoencoder, transformer=dit,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=SHIFT))
