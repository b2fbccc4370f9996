"""Does a trained model's velocity settle early on the background and keep changing on moving objects?

    python bench/premise.py --model pipeline/assets/toy-wan --json bench/results/premise.json

Renders captions of moving objects with the reference sampler (40 Euler steps, guidance 5) and
records the guided velocity at every step. For every token and step k, the score HSA uses:
s = |v_k - v_{k-1}|_1 / |v_{k-1}|_1. Tokens are labelled object when the final decoded video has
object pixels in their 8 x 8 patch in any frame they cover, background otherwise. Reported per
phase (early, middle, late steps): the median score of each class and the AUC of separating
object from background tokens by the score (0.5 = no separation).

Second question: which per-token signal at step k best predicts the error a cached Euler update
from step k would make over the next H = 8 steps, e_i = |sum_{j=k}^{k+H-1} (v_j - v_k)(sigma_{j+1} -
sigma_j)|_1? Reported per phase: the Spearman rank correlation between e and each signal
(relative change, absolute change, velocity magnitude |v_k|_1), averaged over videos and steps.
HSA ranks tokens by its score, so rank correlation is what matters. The object/background AUC
is reported for each of the three signals too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hsa.scores import velocity_change_score  # noqa: E402
from pipeline.toy_data import BACKGROUNDS, OBJECT_COLOURS, TEXTURE_AMPLITUDE, ClipSpec  # noqa: E402
from pipeline.wan import patchify  # noqa: E402

PHASES = {"early": (2, 8), "middle": (8, 28), "late": (28, 40)}
HORIZON = 8


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = a.argsort().argsort().astype(np.float64), b.argsort().argsort().astype(np.float64)
    return float(np.corrcoef(ra, rb)[0, 1])


def signals(velocities: list[torch.Tensor], k: int) -> dict[str, np.ndarray]:
    v, prev = velocities[k][None], velocities[k - 1][None]
    return {"relative": velocity_change_score(v, prev).numpy(),
            "absolute": velocity_change_score(v, prev, relative=False).numpy(),
            "magnitude": v[0].abs().sum(-1).numpy()}


def cached_euler_error(velocities: list[torch.Tensor], sigmas: torch.Tensor, k: int) -> np.ndarray:
    drift = sum((velocities[j] - velocities[k]) * float(sigmas[j + 1] - sigmas[j]) for j in range(k, k + HORIZON))
    return drift.abs().sum(-1).numpy()


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties half."""
    scores = np.concatenate([positive, negative])
    ranks = scores.argsort().argsort().astype(np.float64) + 1
    return float((ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2) / (len(positive) * len(negative)))


def object_tokens(frames: np.ndarray, background: str, token_px: int, frames_per_token: int) -> np.ndarray:
    """[F', H', W'] bool: the token's pixels contain the object in a frame it covers."""
    video = frames * 255.0
    far = np.linalg.norm(video - np.asarray(BACKGROUNDS[background], np.float32), axis=-1) > 3 * TEXTURE_AMPLITUDE + 20
    near_object = np.min(np.linalg.norm(video[..., None, :] - np.asarray(list(OBJECT_COLOURS.values()), np.float32), axis=-1), -1) < 60
    mask = far & near_object  # [F, H, W]
    f, h, w = mask.shape
    per_frame = mask.reshape(f, h // token_px, token_px, w // token_px, token_px).any(axis=(2, 4))
    # latent frame 0 covers video frame 0; latent frame i > 0 covers frames (i-1)*r+1 .. i*r
    latent = [per_frame[0]] + [per_frame[1 + i * frames_per_token : 1 + (i + 1) * frames_per_token].any(0)
                               for i in range((f - 1) // frames_per_token)]
    return np.stack(latent)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pipeline/assets/toy-wan")
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(0)
    velocities: list[torch.Tensor] = []
    step = pipe.scheduler.step

    def record(model_output, *a, **k):
        velocities.append(patchify(model_output.float(), pipe.transformer.config.patch_size)[0])
        return step(model_output, *a, **k)

    pipe.scheduler.step = record
    per_phase = {p: {"object": [], "background": []} for p in PHASES}
    by_signal = {p: {name: ([], []) for name in ("relative", "absolute", "magnitude")} for p in PHASES}
    correlations = {p: {name: [] for name in ("relative", "absolute", "magnitude")} for p in PHASES}
    token_px = pipe.vae_scale_factor_spatial * pipe.transformer.config.patch_size[1]
    for i in range(args.videos):
        spec = ClipSpec("moving", rng.choice(list(BACKGROUNDS)), rng.choice(list(OBJECT_COLOURS)),
                        rng.choice(["circle", "square"]), rng.choice(["left", "right", "up", "down"]))
        velocities.clear()
        frames = pipe(prompt=spec.caption, negative_prompt="", height=64, width=64, num_frames=17,
                      num_inference_steps=40, guidance_scale=5.0, output_type="np",
                      generator=torch.Generator().manual_seed(i)).frames[0]
        labels = object_tokens(frames, spec.background, token_px, pipe.vae_scale_factor_temporal).reshape(-1)
        if labels.all() or not labels.any():
            continue
        for phase, (lo, hi) in PHASES.items():
            for k in range(lo, hi):
                signal = signals(velocities, k)
                per_phase[phase]["object"].append(signal["relative"][labels])
                per_phase[phase]["background"].append(signal["relative"][~labels])
                for name, values in signal.items():
                    by_signal[phase][name][0].append(values[labels])
                    by_signal[phase][name][1].append(values[~labels])
                if k + HORIZON <= len(velocities):
                    error = cached_euler_error(velocities, pipe.scheduler.sigmas, k)
                    for name, values in signal.items():
                        correlations[phase][name].append(spearman(values, error))
    pipe.scheduler.step = step
    result = {}
    for phase, parts in per_phase.items():
        obj, bg = np.concatenate(parts["object"]), np.concatenate(parts["background"])
        result[phase] = {"steps": list(PHASES[phase]), "object_median": float(np.median(obj)),
                         "background_median": float(np.median(bg)), "object_p90": float(np.quantile(obj, 0.9)),
                         "background_p90": float(np.quantile(bg, 0.9)), "auc": auc(obj, bg),
                         "object_tokens": int(obj.size), "background_tokens": int(bg.size),
                         "auc_by_signal": {n: auc(np.concatenate(o), np.concatenate(b))
                                           for n, (o, b) in by_signal[phase].items()},
                         "spearman_with_cached_euler_error": {n: float(np.mean(c)) if c else None
                                                              for n, c in correlations[phase].items()}}
    print("| phase (steps) | object median | background median | object p90 | background p90 | AUC |")
    print("|---|---|---|---|---|---|")
    for phase, r in result.items():
        print(f"| {phase} {r['steps'][0]}-{r['steps'][1] - 1} | {r['object_median']:.4f} | {r['background_median']:.4f} | "
              f"{r['object_p90']:.4f} | {r['background_p90']:.4f} | {r['auc']:.3f} |")
    print("\nAUC of object against background tokens by signal")
    print("| phase (steps) | relative change | absolute change | magnitude |\n|---|---|---|---|")
    for phase, r in result.items():
        a = r["auc_by_signal"]
        print(f"| {phase} {r['steps'][0]}-{r['steps'][1] - 1} | {a['relative']:.3f} | {a['absolute']:.3f} | {a['magnitude']:.3f} |")
    print(f"\nSpearman correlation with the cached-Euler error over the next {HORIZON} steps")
    print("| phase (steps) | relative change | absolute change | magnitude |\n|---|---|---|---|")
    for phase, r in result.items():
        c = r["spearman_with_cached_euler_error"]
        if c["relative"] is not None:
            print(f"| {phase} {r['steps'][0]}-{r['steps'][1] - 1} | {c['relative']:.3f} | {c['absolute']:.3f} | {c['magnitude']:.3f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
