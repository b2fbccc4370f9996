"""Sweep HSA's plan knobs on tuning prompts disjoint from the fidelity benchmark's prompts.

    python bench/tune.py --json bench/results/tune.json

For each budget, every combination of mode, score signal, largest divisor (divisor mode) and
tail length renders the tuning prompts; the table gives mean PSNR (decoded frames) against the 40-step reference and
the counted compute fraction. The winners become HSAConfig's defaults; the benchmark
(bench/fidelity.py) then judges them on its own prompts.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.fidelity import PROMPTS, STEPS, denoise, embeddings  # noqa: E402
from bench.fidelity_metrics import psnr  # noqa: E402
from hsa import HSAConfig  # noqa: E402
from pipeline import wan  # noqa: E402
from pipeline.hsa_pipeline import apply_hsa, remove_hsa  # noqa: E402
from pipeline.loading import DEFAULT_MODEL, load_pipeline  # noqa: E402
from pipeline.toy_data import random_spec  # noqa: E402


def tuning_prompts(count: int, seed: int = 2026) -> list[tuple[str, int]]:
    rng, taken, out = np.random.default_rng(seed), {c for c, _ in PROMPTS}, []
    while len(out) < count:
        caption = random_spec(rng).caption
        if caption not in taken:
            taken.add(caption)
            out.append((caption, 100 + len(out)))
    return out


def _int_or_derived(text: str) -> int | None:
    return None if text == "derived" else int(text)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.25])
    parser.add_argument("--modes", nargs="+", default=["divisor", "topk"])
    parser.add_argument("--scores", nargs="+", default=["relative", "absolute", "magnitude"])
    parser.add_argument("--max-divisors", type=int, nargs="+", default=[4, 8, 16],
                        help="0 derives it from the budget (HSAConfig's default)")
    parser.add_argument("--tails", type=_int_or_derived, nargs="+", default=[1, 3], help="'derived': HSAConfig's default")
    parser.add_argument("--warmups", type=int, nargs="+", default=[2], help="0 derives it (HSAConfig's default)")
    parser.add_argument("--strides", type=int, nargs="+", default=[1], help="0 derives it (HSAConfig's default)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    pipe = load_pipeline(args.model, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    prompts = tuning_prompts(args.prompts)
    shape = dict(height=64, width=64, num_frames=17)
    inputs = [{**embeddings(pipe, caption), **shape} for caption, _ in prompts]

    def render_all() -> list[torch.Tensor]:
        return [torch.as_tensor(wan.decode_latents(pipe, denoise(pipe, x, seed, STEPS)[0])[0]).float()
                for x, (_, seed) in zip(inputs, prompts)]

    reference = render_all()
    rows = []
    grid = []
    for budget, mode, score, warmup, tail, stride in itertools.product(
        args.budgets, args.modes, args.scores, args.warmups, args.tails, args.strides
    ):
        for d_max in args.max_divisors if mode == "divisor" else [16]:  # top-k has no divisors
            grid.append(dict(budget=budget, mode=mode, score=score, max_divisor=d_max, warmup_steps=warmup,
                             tail_steps=tail, stride=stride))
    for knobs in grid:
        try:
            derived = {k: knobs[k] or None for k in ("max_divisor", "warmup_steps", "stride")}
            controller = apply_hsa(pipe, HSAConfig(**{**knobs, **derived}))
            videos = render_all()
            fraction = controller.stats().achieved_fraction
        except ValueError as e:  # a budget the plan cannot meet with these knobs
            rows.append({**knobs, "psnr": None, "note": str(e)})
            print(f"{knobs} infeasible", flush=True)
            continue
        finally:
            remove_hsa(pipe)
        scores = [psnr(v, r) for v, r in zip(videos, reference)]
        rows.append({**knobs, "psnr": statistics.mean(scores), "psnr_each": scores, "counted_fraction": fraction})
        print(f"{knobs} psnr {rows[-1]['psnr']:.2f} fraction {fraction:.3f}", flush=True)
    for budget in args.budgets:
        ranked = sorted((r for r in rows if r["budget"] == budget and r["psnr"] is not None), key=lambda r: -r["psnr"])
        print(f"\nbudget {budget}\n| mode | score | max divisor | warm-up | tail | stride | PSNR dB |\n|---|---|---|---|---|---|---|")
        for r in ranked:
            d_max = (r["max_divisor"] or "derived") if r["mode"] == "divisor" else "-"
            warmup = r["warmup_steps"] or "derived"
            stride = r.get("stride") or "derived"
            tail = "derived" if r["tail_steps"] is None else r["tail_steps"]
            print(f"| {r['mode']} | {r['score']} | {d_max} | {warmup} | {tail} | {stride} | {r['psnr']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"prompts": prompts, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
