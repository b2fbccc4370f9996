"""Train the toy Wan model that ships with the project: a one-off run, at most 90 minutes on 2 CPU cores.

    python bench/train_toy.py --out pipeline/assets/toy-wan --vae-minutes 15 --dit-minutes 70

Stages: (1) the VAE on random 32 x 32 crops of synthetic clips (it is fully convolutional and
runs on 64 x 64 afterwards); (2) encode a fixed set of 64 x 64 x 17 clips, measure per-channel
latent mean and std (written into the VAE config, as Wan's pipelines expect); (3) the Wan
transformer with flow matching (target noise - x0, sigma on the shifted grid, 10% empty
captions for guidance), keeping an EMA of its weights; (4) save the whole WanPipeline and a
JSON log summary. Caption combinations listed in HELD_OUT never appear in training, so tests
can render captions the model has not seen verbatim.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from diffusers import WanPipeline  # noqa: E402

from pipeline import toy_model  # noqa: E402
from pipeline.toy_data import ClipSpec, random_spec, render_clip  # noqa: E402

HELD_OUT = {  # (colour, shape, direction, background): never rendered for training
    ("red", "circle", "left", "sand"), ("yellow", "square", "down", "water"), ("white", "circle", "right", "grass"),
    ("blue", "square", "up", "stone"), ("black", "circle", "down", "sky"), ("red", "square", "right", "water"),
    ("yellow", "circle", "up", "stone"), ("white", "square", "left", "sky"), ("blue", "circle", "left", "grass"),
    ("black", "square", "up", "sand"),
}


def held_out(spec: ClipSpec) -> bool:
    return (spec.colour, spec.shape, spec.direction, spec.background) in HELD_OUT


def training_specs(rng: np.random.Generator):
    while True:
        spec = random_spec(rng)
        if not held_out(spec):
            yield spec


def to_tensor(clips: list[np.ndarray]) -> torch.Tensor:
    """uint8 [B][F, H, W, 3] -> float [B, 3, F, H, W] in [-1, 1]."""
    x = torch.from_numpy(np.stack(clips)).float().div(127.5).sub(1.0)
    return x.permute(0, 4, 1, 2, 3).contiguous()


def train_vae(vae, minutes: float, rng: np.random.Generator, log: list) -> None:
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3)
    specs, start, step = training_specs(rng), time.monotonic(), 0
    while time.monotonic() - start < minutes * 60:
        clips = []
        for _ in range(4):
            clip = render_clip(next(specs), rng)
            y, x = rng.integers(0, clip.shape[1] - 32 + 1, size=2)
            clips.append(clip[:, y : y + 32, x : x + 32])
        x = to_tensor(clips)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        mse = F.mse_loss(recon, x)
        loss = mse + 1e-6 * posterior.kl().mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            psnr = 10 * math.log10(4.0 / mse.item())  # range [-1, 1]
            log.append({"stage": "vae", "step": step, "minutes": (time.monotonic() - start) / 60, "psnr_db": psnr})
            print(json.dumps(log[-1]), flush=True)


@torch.no_grad()
def encode_dataset(pipe, count: int, rng: np.random.Generator) -> tuple[torch.Tensor, list[str]]:
    specs, latents, captions = training_specs(rng), [], []
    for _ in range(0, count, 16):
        batch = [next(specs) for _ in range(16)]
        clips = [render_clip(s, rng, toy_model.SIZE, toy_model.FRAMES) for s in batch]
        latents.append(pipe.vae.encode(to_tensor(clips)).latent_dist.mode())
        captions += [s.caption for s in batch]
    return torch.cat(latents)[:count], captions[:count]


@torch.no_grad()
def text_embeddings(pipe, captions: list[str]) -> dict[str, torch.Tensor]:
    """Exactly what the pipeline feeds the transformer at inference (padded to 512 tokens)."""
    table = {}
    for caption in sorted(set(captions)) + [""]:
        table[caption] = pipe.encode_prompt(caption, do_classifier_free_guidance=False, device="cpu")[0][0]
    return table


def motion_weights(latents: torch.Tensor, strength: float) -> torch.Tensor:
    """Per latent position loss weight 1 + strength * (temporal deviation / its dataset mean).

    Moving objects cover a few percent of the tokens, so an unweighted loss is dominated by
    static background; weighting by how far each position strays from its temporal mean makes
    the model pay for getting motion wrong. Shape [N, 1, F, H, W].
    """
    deviation = (latents - latents.mean(dim=2, keepdim=True)).abs().mean(dim=1, keepdim=True)
    return 1.0 + strength * deviation / deviation.mean()


def train_transformer(pipe, latents, captions, table, minutes: float, rng: np.random.Generator, log: list,
                      motion_weight: float = 0.0, lr: float = 5e-4, warmup: int = 200):
    dit = pipe.transformer
    weights = motion_weights(latents, motion_weight) if motion_weight > 0 else None
    ema = copy.deepcopy(dit).requires_grad_(False)
    opt = torch.optim.AdamW(dit.parameters(), lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
    start, step, running = time.monotonic(), 0, []
    while time.monotonic() - start < minutes * 60:
        idx = torch.from_numpy(rng.integers(0, latents.shape[0], size=8))
        x0 = latents[idx]
        noise = torch.randn(x0.shape, generator=gen)
        u = torch.rand(x0.shape[0], generator=gen)
        sigma = toy_model.SHIFT * u / (1 + (toy_model.SHIFT - 1) * u)
        s = sigma.view(-1, 1, 1, 1, 1)
        xt = (1 - s) * x0 + s * noise
        text = torch.stack([table["" if rng.random() < 0.1 else captions[i]] for i in idx.tolist()])
        pred = dit(xt, sigma * 1000, text, return_dict=False)[0]
        if weights is None:
            loss = F.mse_loss(pred, noise - x0)
        else:
            w = weights[idx]
            loss = (w * (pred - (noise - x0)) ** 2).mean() / w.mean()
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dit.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(0.999, (1 + step) / (10 + step))
            for p_ema, p in zip(ema.parameters(), dit.parameters()):
                p_ema.lerp_(p, 1 - decay)
        step += 1
        running.append(loss.item())
        if step % 100 == 0:
            log.append({"stage": "transformer", "step": step, "minutes": (time.monotonic() - start) / 60,
                        "loss": float(np.mean(running))})
            running = []
            print(json.dumps(log[-1]), flush=True)
    pipe.transformer = ema


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--vae-minutes", type=float, default=15)
    parser.add_argument("--dit-minutes", type=float, default=70)
    parser.add_argument("--clips", type=int, default=3000, help="encoded 64 x 64 x 17 clips for the transformer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", type=Path, help="continue from this saved pipeline (its VAE and latent statistics are kept)")
    parser.add_argument("--motion-weight", type=float, default=0.0, help="extra loss weight on moving latent positions")
    parser.add_argument("--lr", type=float, default=5e-4)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    started, log = time.monotonic(), []

    if args.init:
        pipe = WanPipeline.from_pretrained(args.init)
        parent = json.loads((args.init / "training_log.json").read_text())
        if args.vae_minutes:
            parser.error("--init keeps the saved VAE: pass --vae-minutes 0")
    else:
        tok = toy_model.tokenizer()
        pipe = toy_model.pipeline(tok, toy_model.text_encoder(len(tok)), toy_model.vae(), toy_model.transformer())
        parent = None
        train_vae(pipe.vae.train(), args.vae_minutes, rng, log)
    pipe.vae.eval()
    latents, captions = encode_dataset(pipe, args.clips, rng)
    if parent is None:
        mean = latents.mean(dim=(0, 2, 3, 4))
        std = latents.std(dim=(0, 2, 3, 4))
        pipe.vae.register_to_config(latents_mean=mean.tolist(), latents_std=std.tolist())
    else:  # the transformer was trained on latents normalised with the saved statistics
        mean, std = torch.tensor(pipe.vae.config.latents_mean), torch.tensor(pipe.vae.config.latents_std)
    latents = (latents - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1)
    table = text_embeddings(pipe, captions)
    train_transformer(pipe, latents, captions, table, args.dit_minutes, rng, log, args.motion_weight, args.lr,
                      warmup=200 if parent is None else 20)

    args.out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(args.out)
    minutes = (time.monotonic() - started) / 60
    summary = {
        "command": "python bench/train_toy.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "minutes": minutes, "clips": args.clips, "torch": torch.__version__,
        "minutes_with_parents": minutes + (parent.get("minutes_with_parents", parent["minutes"]) if parent else 0.0),
        "parent": {k: v for k, v in parent.items() if k != "log"} if parent else None,
        "vae_final": next((e for e in reversed(log) if e["stage"] == "vae"), None),
        "transformer_final": next((e for e in reversed(log) if e["stage"] == "transformer"), None),
        "log": log,
    }
    (args.out / "training_log.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "log"}, indent=1))


if __name__ == "__main__":
    main()
