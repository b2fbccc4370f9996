"""Wall-clock of the reference against HSA budgets, side by side in one run.

The denoising loop of a real WanPipeline (hooks, scheduler, guidance) on a Wan transformer with
random weights: timing does not depend on what the weights learnt. Text encoding and VAE decode
are left out (prompt embeddings are given, output_type="latent"); they cost the same for every
method.

    python bench/speed.py --preset cpu                      # CPU: 8 layers, hidden 512, 4096 tokens
    python bench/speed.py --preset wan2.1-1.3b --device cuda  # GPU: Wan2.1-T2V-1.3B shapes, 32,760 tokens

Prints a markdown table (and writes JSON with --json): seconds, planned fraction, achieved
fraction counted inside the transformer, measured fraction (seconds / reference seconds) and the
overhead (measured - planned).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hsa import HSAConfig  # noqa: E402
from pipeline.hsa_pipeline import apply_hsa, remove_hsa  # noqa: E402

PRESETS = {
    # name: transformer config, latent (frames, height, width), text tokens, dtype
    "tiny": (dict(num_attention_heads=2, attention_head_dim=32, ffn_dim=128, num_layers=2, text_dim=32), (3, 16, 16), 512, "float32"),
    "cpu": (dict(num_attention_heads=8, attention_head_dim=64, ffn_dim=2048, num_layers=8, text_dim=512), (4, 64, 64), 512, "float32"),
    "wan2.1-1.3b": (dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30, text_dim=4096), (21, 60, 104), 512, "bfloat16"),
}


def build(preset: str, device: str) -> tuple[WanPipeline, dict]:
    config, (f, h, w), text_tokens, dtype_name = PRESETS[preset]
    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    with torch.device(device):  # build in place: a 1.3B model initialised on CPU first takes minutes
        transformer = WanTransformer3DModel(in_channels=16, out_channels=16, freq_dim=256, **config)
    transformer = transformer.to(dtype).eval()
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0))
    pipe.set_progress_bar_config(disable=True)
    gen = torch.Generator("cpu").manual_seed(0)
    inputs = dict(
        latents=torch.randn(1, 16, f, h, w, generator=gen),
        prompt_embeds=torch.randn(1, text_tokens, config["text_dim"], generator=gen).to(device, dtype),
        negative_prompt_embeds=torch.randn(1, text_tokens, config["text_dim"], generator=gen).to(device, dtype),
        height=h * 8, width=w * 8, num_frames=(f - 1) * 4 + 1, output_type="latent",
    )
    return pipe, inputs


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(pipe: WanPipeline, inputs: dict, budget: float | None, steps: int, guidance: float, device: str,
          comm=None) -> dict:
    """One timed pipeline call; budget None = the stock pipeline (or, with comm, budget 1 sharded)."""
    if budget is None and comm is not None:
        budget = 1.0
    controller = apply_hsa(pipe, HSAConfig(budget=budget), comm) if budget is not None else None
    try:
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        _sync(device)
        start = time.perf_counter()
        pipe(**dict(inputs, latents=inputs["latents"].clone()), num_inference_steps=steps, guidance_scale=guidance)
        _sync(device)
        seconds = time.perf_counter() - start
        row = {"method": "reference" if budget is None else f"hsa {budget}", "budget": budget or 1.0, "seconds": seconds}
        if controller is not None:
            stats = controller.stats()
            row.update(planned=stats.planned_fraction, achieved=stats.achieved_fraction)
        else:
            row.update(planned=1.0, achieved=1.0)
        if device.startswith("cuda"):
            row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        return row
    finally:
        if controller is not None:
            remove_hsa(pipe)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.25])
    parser.add_argument("--guidance", type=float, default=1.0, help="> 1 runs both guidance branches")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repeats; the median is reported")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    pipe, inputs = build(args.preset, args.device)
    methods = [None, *args.budgets]
    for budget in (None, 0.5):  # warm-up: allocator, kernels, dense and sparse paths
        timed(pipe, inputs, budget, min(args.steps, 8), args.guidance, args.device)
    runs: dict = {b: [] for b in methods}
    for _ in range(args.repeats):
        for budget in methods:
            runs[budget].append(timed(pipe, inputs, budget, args.steps, args.guidance, args.device))
    rows = []
    for budget in methods:
        row = dict(runs[budget][0], seconds=statistics.median(r["seconds"] for r in runs[budget]))
        rows.append(row)
    reference = rows[0]["seconds"]
    for row in rows:
        row["measured"] = row["seconds"] / reference
        row["overhead"] = row["measured"] - row["planned"]

    tokens = inputs["latents"].shape[2] * inputs["latents"].shape[3] * inputs["latents"].shape[4] // 4
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or platform.machine()
    header = (f"preset {args.preset}, {tokens} tokens, {args.steps} steps, guidance {args.guidance}, "
              f"{args.device} ({device_name}), torch {torch.__version__}, {datetime.date.today()}")
    print(header)
    print("| method | seconds | planned | achieved (counted) | measured | overhead |" + (" peak GiB |" if "peak_gib" in rows[0] else ""))
    print("|---|---|---|---|---|---|" + ("---|" if "peak_gib" in rows[0] else ""))
    for r in rows:
        line = f"| {r['method']} | {r['seconds']:.2f} | {r['planned']:.3f} | {r['achieved']:.3f} | {r['measured']:.3f} | {r['overhead']:+.3f} |"
        print(line + (f" {r['peak_gib']:.1f} |" if "peak_gib" in r else ""))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"setup": header, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
