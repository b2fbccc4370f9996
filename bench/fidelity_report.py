"""The fidelity benchmark's outputs: a Pareto plot (PNG) and an HTML report with the videos."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from pathlib import Path

FAMILY_STYLE = {  # colour, marker
    "reference": ("black", "*"),
    "hsa": ("tab:red", "o"),
    "uniform": ("tab:blue", "s"),
    "topk": ("tab:orange", "D"),
    "fbc": ("tab:green", "^"),
    "magcache": ("tab:purple", "v"),
    "taylorseer": ("tab:brown", "P"),
    "pab": ("tab:pink", "X"),
    "ablation": ("tab:gray", "."),
}


AXES = {  # row key: axis label
    "measured_fraction": "measured runtime fraction of the 40-step reference (denoising loop)",
    "compute_fraction": "compute fraction (tokens through the feed-forward layers)",
}


def write_pareto(rows: list[dict], path: Path) -> None:
    """PSNR against the measured runtime fraction (left) and the compute fraction (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5), dpi=110, sharey=True)
    for ax, (key, label) in zip(axes, AXES.items()):
        for family, (colour, marker) in FAMILY_STYLE.items():
            points = sorted((r[key], r["psnr"], r["method"]) for r in rows
                            if r["family"] == family and math.isfinite(r["psnr"]))
            if not points:
                continue
            xs, ys, names = zip(*points)
            line = "-" if family in ("hsa", "uniform") else "none"
            ax.plot(xs, ys, linestyle=line, marker=marker, color=colour, label=family, markersize=7)
            if family in ("hsa", "uniform"):
                for x, y, name in points:
                    ax.annotate(name.split(" ", 1)[1], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("PSNR against the reference (dB, mean over prompts)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Fidelity against runtime and compute (toy Wan model)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _number(value: float | None, digits: int) -> str:
    if value is None:
        return ""
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def write_report(
    rows: list[dict], per_prompt: list[dict], meta: dict, path: Path, video_name: Callable[[str, int], str]
) -> None:
    """One table row per method: its videos next to the reference's, numbers under each video."""
    shown = meta["report_prompts"]
    prompts = meta["prompts"][:shown]
    cell = {(r["method"], r["prompt"]): r for r in per_prompt}
    head = "".join(f"<th>{html.escape(p)}</th>" for p in prompts)
    body = []
    for row in rows:
        if row["method"] == "reference (again)":
            continue
        summary = (f"<b>{html.escape(row['method'])}</b><br>runtime {row['measured_fraction']:.3f}"
                   f"<br>compute {row['compute_fraction']:.3f}"
                   f"<br>PSNR {_number(row['psnr'], 2)} dB<br>SSIM {row['ssim']:.3f}"
                   f"<br>latent MSE {row['latent_mse']:.4f}")
        cells = []
        for p, prompt in enumerate(prompts):
            c = cell[(row["method"], prompt)]
            cells.append(
                f'<td><video src="{video_name(row["method"], p)}" autoplay loop muted playsinline></video>'
                f"<div>{_number(c['psnr'], 1)} dB / {c['ssim']:.2f}</div></td>"
            )
        body.append(f'<tr class="{row["family"]}"><td class="name">{summary}</td>{"".join(cells)}</tr>')
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>HSA fidelity benchmark</title>
<style>
body {{ font-family: sans-serif; margin: 16px; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 4px; text-align: center; font-size: 12px; vertical-align: top; }}
td.name {{ text-align: left; min-width: 170px; }}
video {{ width: 128px; height: 128px; image-rendering: pixelated; background: #000; }}
tr.reference td {{ background: #eef; }} tr.hsa td {{ background: #fee; }}
</style></head><body>
<h1>Fidelity at measured runtime</h1>
<p>{html.escape(meta["date"])}, {html.escape(meta["machine"])}, torch {html.escape(meta["torch"])},
model {html.escape(meta["model"])}.<br><code>{html.escape(meta["command"])}</code><br>
Each row plays its videos next to the reference row's; under each: PSNR (dB) / SSIM against the reference.
Runtime: wall-clock of the denoising loop as a fraction of the 40-step reference's; compute: tokens
through the feed-forward layers as a fraction of the reference's.</p>
<img src="pareto.png" width="1100">
<table><tr><th>method (means over {len(meta["prompts"])} prompts)</th>{head}</tr>
{"".join(body)}
</table>
<script type="application/json" id="meta">{html.escape(json.dumps(meta))}</script>
</body></html>
"""
    path.write_text(page)


def screenshot(page: Path, png: Path, width: int = 1400, height: int = 2000) -> bool:
    """Render the report in headless Chromium (videos load and show their frames); False without it."""
    import shutil
    import subprocess

    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        return False
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--autoplay-policy=no-user-gesture-required",
         f"--window-size={width},{height}", "--virtual-time-budget=5000", f"--screenshot={png.resolve()}",
         page.resolve().as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    return png.exists()


def uniform_psnr_at(rows: list[dict], fraction: float, key: str = "measured_fraction") -> float | None:
    """PSNR of uniform fewer-step sampling at a runtime (or compute) fraction, linear between its
    measured points; None outside the range they span."""
    points = sorted((r[key], r["psnr"]) for r in rows if r["family"] == "uniform")
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= fraction <= x1:
            return y0 + (y1 - y0) * (fraction - x0) / (x1 - x0)
    return None


def summary_table(rows: list[dict]) -> str:
    """Markdown: every method with its margin over uniform sampling at the same measured runtime
    and at the same compute."""
    lines = ["| method | runtime | compute | PSNR dB | SSIM | latent MSE | PSNR - uniform, equal runtime | "
             "PSNR - uniform, equal compute |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["method"] == "reference (again)":
            continue
        margins = []
        for key in AXES:
            uniform = None if r["family"] in ("reference", "uniform") else uniform_psnr_at(rows, r[key], key)
            margins.append("" if uniform is None else f"{r['psnr'] - uniform:+.2f}")
        lines.append(f"| {r['method']} | {r['measured_fraction']:.3f} | {r['compute_fraction']:.3f} | "
                     f"{_number(r['psnr'], 2)} | {r['ssim']:.4f} | {r['latent_mse']:.5f} | {margins[0]} | {margins[1]} |")
    return "\n".join(lines) + "\n"
