"""Fidelity at a measured runtime: HSA against uniform fewer-step sampling and diffusers' caches.

    python bench/fidelity.py --out bench/results/fidelity

On the shipped toy model (or --model), for a fixed set of prompts and seeds: the 40-step
reference; HSA at budgets 0.75 / 0.5 / 0.35 / 0.25; uniform flow matching with fewer steps;
FirstBlockCache, MagCache (calibrated on this model first), TaylorSeer (Wan identifiers: the
blocks are skipped, proj_out is predicted) and PyramidAttentionBroadcast, each at a few settings
spanning about 0.5 and 0.25 of the reference's runtime; the per-step top-k mode; and the
ablations (score signal, K/V sync, cached Euler, window bounds). Per method and prompt: PSNR and
SSIM of the decoded frames and latent MSE against the reference; the wall-clock of the
denoising loop (text encoding and VAE decode, the same for every method, are left out); and the
machine-independent compute: tokens through the blocks' feed-forward layers, as a fraction of
the reference's (a skipped step, block or token never reaches them; PAB skips attention only).

Writes results.csv (one row per method, means over prompts), per_prompt.csv, summary.md (the
table, with each method's PSNR margin over uniform sampling at the same measured runtime),
pareto.png and report.html (the reference and every method's videos side by side, numbers under
them; --screenshot also saves report.png from headless Chromium).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import io
import math
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import FirstBlockCacheConfig, MagCacheConfig, PyramidAttentionBroadcastConfig, TaylorSeerCacheConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.fidelity_metrics import latent_mse, psnr, ssim  # noqa: E402
from bench.fidelity_report import screenshot, summary_table, write_pareto, write_report  # noqa: E402
from hsa import HSAConfig  # noqa: E402
from pipeline import wan  # noqa: E402
from pipeline.hsa_pipeline import apply_hsa, remove_hsa  # noqa: E402
from pipeline.loading import DEFAULT_MODEL, load_pipeline  # noqa: E402
from pipeline.video_io import write_mp4  # noqa: E402

PROMPTS = [  # (caption, seed): moving objects (the first two held out of training), a still one, a pan
    ("a red circle moves left over sand", 0),
    ("a blue square moves up over stone", 1),
    ("a yellow circle moves right over grass", 2),
    ("a white square moves down over sky", 3),
    ("a black circle moves left over water", 4),
    ("a red square moves up over grass", 5),
    ("a blue circle is still on sand", 6),
    ("the camera pans right over stone", 7),
]
STEPS, GUIDANCE = 40, 5.0


@dataclass
class Method:
    name: str
    family: str  # reference, hsa, uniform, topk, fbc, magcache, taylorseer, pab, ablation
    attach: Callable[[Any], Callable[[], None]] | None = None  # returns its detach
    steps: int = STEPS
    budget: float | None = None


def hsa(name: str, family: str, **config: Any) -> Method:
    def attach(pipe: Any) -> Callable[[], None]:
        apply_hsa(pipe, HSAConfig(**config))
        return lambda: remove_hsa(pipe)

    return Method(name, family, attach, budget=config["budget"])


def cache(name: str, family: str, make_config: Callable[[Any], Any]) -> Method:
    def attach(pipe: Any) -> Callable[[], None]:
        pipe.transformer.enable_cache(make_config(pipe))
        return pipe.transformer.disable_cache

    return Method(name, family, attach)


def methods(mag_ratios: list[float], quick: bool) -> list[Method]:
    out = [Method("reference", "reference")]
    for b in (0.75, 0.5, 0.35, 0.25):
        out.append(hsa(f"hsa {b}", "hsa", budget=b))
    for s in (30, 20, 14, 10):
        out.append(Method(f"uniform {s} steps", "uniform", steps=s))
    if quick:
        return out
    for b in (0.5, 0.25):
        out.append(hsa(f"topk {b}", "topk", budget=b, mode="topk"))
    for t in (0.1, 0.2, 0.4, 1.0):
        out.append(cache(f"fbc {t}", "fbc", lambda pipe, t=t: FirstBlockCacheConfig(threshold=t)))
    for t, k, keep in ((0.06, 3, 0.2), (0.15, 4, 0.1), (0.3, 6, 0.1), (1.0, 8, 0.1)):
        out.append(cache(f"magcache {t} K{k} r{keep}", "magcache", lambda pipe, t=t, k=k, keep=keep: MagCacheConfig(
            threshold=t, max_skip_steps=k, retention_ratio=keep, num_inference_steps=STEPS, mag_ratios=mag_ratios)))
    for n in (2, 3, 4, 6):
        out.append(cache(f"taylorseer every {n}", "taylorseer", lambda pipe, n=n: TaylorSeerCacheConfig(
            cache_interval=n, disable_cache_before_step=3, max_order=1, taylor_factors_dtype=torch.float32,
            skip_predict_identifiers=[r"blocks\.\d+"], cache_identifiers=[r"proj_out"])))
    for r, lo, hi in ((2, 100, 800), (3, 0, 950), (6, 0, 1000)):
        out.append(cache(f"pab self+cross {r} [{lo},{hi}]", "pab", lambda pipe, r=r, lo=lo, hi=hi: PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=r, cross_attention_block_skip_range=r,
            spatial_attention_timestep_skip_range=(lo, hi), cross_attention_timestep_skip_range=(lo, hi),
            current_timestep_callback=lambda: pipe.current_timestep)))
    for b in (0.5, 0.25):
        out += [
            hsa(f"ablation score=relative {b}", "ablation", budget=b, score="relative"),
            hsa(f"ablation score=absolute {b}", "ablation", budget=b, score="absolute"),
            hsa(f"ablation score=random {b}", "ablation", budget=b, score="random"),
            hsa(f"ablation kv=drop {b}", "ablation", budget=b, kv="drop"),
            hsa(f"ablation skipped=freeze {b}", "ablation", budget=b, skipped="freeze"),
            hsa(f"ablation sync every 16 {b}", "ablation", budget=b, max_divisor=16),
            hsa(f"ablation window 1/0 {b}", "ablation", budget=b, warmup_steps=1, tail_steps=0),
            hsa(f"ablation window 2/1 {b}", "ablation", budget=b, warmup_steps=2, tail_steps=1),
            hsa(f"ablation window 6/3 {b}", "ablation", budget=b, warmup_steps=6, tail_steps=3),
        ]
    return out


def embeddings(pipe: Any, caption: str) -> dict[str, torch.Tensor]:
    cond, uncond = pipe.encode_prompt(caption, negative_prompt="", do_classifier_free_guidance=True, device="cpu")
    return {"prompt_embeds": cond, "negative_prompt_embeds": uncond}


def denoise(pipe: Any, inputs: dict, seed: int, steps: int) -> tuple[torch.Tensor, float]:
    generator = torch.Generator("cpu").manual_seed(seed)
    start = time.perf_counter()
    latents = pipe(**inputs, num_inference_steps=steps, guidance_scale=GUIDANCE, generator=generator,
                   output_type="latent").frames
    return latents, time.perf_counter() - start


def calibrate_magcache(pipe: Any, inputs: dict, seed: int) -> list[float]:
    """MagCache's own calibration run: no skipping, the per-step residual magnitude ratios."""
    pipe.transformer.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=STEPS))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        denoise(pipe, inputs, seed, STEPS)
    pipe.transformer.disable_cache()
    lists = re.findall(r"\[([-0-9.e, ]+)\]", printed.getvalue())
    if not lists:
        raise RuntimeError(f"MagCache calibration printed no ratios: {printed.getvalue()!r}")
    return [float(x) for x in lists[0].split(",")]  # the 'cond' context's ratios


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help="use the first N prompts")
    parser.add_argument("--report-prompts", type=int, default=4, help="prompts whose videos the report shows")
    parser.add_argument("--quick", action="store_true", help="reference, HSA and uniform only (a smoke run)")
    parser.add_argument("--screenshot", action="store_true", help="also save report.png from headless Chromium")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=17)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    pipe = load_pipeline(args.model, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    prompts = PROMPTS[: args.prompts]
    shape = dict(height=args.size, width=args.size, num_frames=args.frames)
    inputs = [{**embeddings(pipe, caption), **shape} for caption, _ in prompts]
    videos = args.out / "videos"
    videos.mkdir(parents=True, exist_ok=True)

    denoise(pipe, inputs[0], 0, 4)  # warm-up: first calls allocate
    mag_ratios = [] if args.quick else calibrate_magcache(pipe, inputs[0], prompts[0][1])
    reference, rows, per_prompt = [], [], []
    # Compute that does not depend on the machine: tokens through the blocks' feed-forward layers
    # (a skipped block, step or token never reaches them; PAB skips attention only)
    ffn_tokens = [0]
    hooks = [b.ffn.register_forward_pre_hook(lambda m, a: ffn_tokens.__setitem__(0, ffn_tokens[0] + a[0].shape[1]))
             for b in pipe.transformer.blocks]
    skipped = []
    for m in methods(mag_ratios, args.quick) + [Method("reference (again)", "reference")]:
        detach = m.attach(pipe) if m.attach else None
        seconds, scores, achieved = [], [], []
        try:
            denoise(pipe, inputs[0], prompts[0][1], m.steps)  # checks the plan, warms up
        except ValueError as e:  # a budget these knobs cannot meet: note it, go on
            print(f"{m.name}: skipped, {e}", flush=True)
            skipped.append({"method": m.name, "reason": str(e)})
            if detach:
                detach()
            continue
        ffn_tokens[0] = 0
        for p, ((caption, seed), given) in enumerate(zip(prompts, inputs)):
            latents, secs = denoise(pipe, given, seed, m.steps)
            if getattr(pipe, "hsa", None) is not None:
                achieved.append(pipe.hsa.stats().achieved_fraction)
            frames = wan.decode_latents(pipe, latents)[0]
            frames = torch.as_tensor(frames).float()
            if m.family == "reference" and len(reference) < len(prompts):
                reference.append((latents, frames))
            ref_latents, ref_frames = reference[p]
            score = {"psnr": psnr(frames, ref_frames), "ssim": ssim(frames, ref_frames),
                     "latent_mse": latent_mse(latents, ref_latents)}
            seconds.append(secs)
            scores.append(score)
            per_prompt.append({"method": m.name, "prompt": caption, "seed": seed, "seconds": secs, **score})
            if p < args.report_prompts:
                write_mp4(frames.numpy(), videos / f"{_slug(m.name)}-{p}.mp4", fps=8)
        if detach:
            detach()
        row = {
            "method": m.name, "family": m.family, "steps": m.steps, "budget": m.budget,
            "seconds": sum(seconds), "ffn_tokens": ffn_tokens[0],
            "counted_fraction": statistics.mean(achieved) if achieved else None,
            "psnr": _mean_finite([s["psnr"] for s in scores]),
            "ssim": statistics.mean(s["ssim"] for s in scores),
            "latent_mse": statistics.mean(s["latent_mse"] for s in scores),
        }
        rows.append(row)
        print(f"{row['method']:<34} {row['seconds']:7.2f}s psnr {row['psnr']:6.2f} ssim {row['ssim']:.3f}", flush=True)

    for hook in hooks:
        hook.remove()
    ref_seconds = statistics.mean(r["seconds"] for r in rows if r["family"] == "reference")
    for row in rows:
        row["measured_fraction"] = row["seconds"] / ref_seconds
        row["compute_fraction"] = row["ffn_tokens"] / rows[0]["ffn_tokens"]
    _write_csv(args.out / "results.csv", rows)
    _write_csv(args.out / "per_prompt.csv", per_prompt)
    meta = {
        "command": "python bench/fidelity.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__, "model": args.model, "prompts": [c for c, _ in prompts],
        "report_prompts": min(args.report_prompts, len(prompts)), "mag_ratios": mag_ratios, "skipped": skipped,
    }
    table = summary_table(rows)
    (args.out / "summary.md").write_text(f"{meta['date']}, {meta['machine']}, torch {meta['torch']}\n\n"
                                         f"`{meta['command']}`\n\n{table}")
    print(table)
    write_pareto(rows, args.out / "pareto.png")
    write_report(rows, per_prompt, meta, args.out / "report.html", video_name=lambda m, p: f"videos/{_slug(m)}-{p}.mp4")
    if args.screenshot and not screenshot(args.out / "report.html", args.out / "report.png"):
        print("no chromium found: report.png not written", file=sys.stderr)
    return rows


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _mean_finite(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.mean(finite) if finite else math.inf


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
