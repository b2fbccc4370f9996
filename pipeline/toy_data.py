"""Synthetic captioned clips for the toy model, and a describer that reads a clip back.

A clip is a shape of one colour moving (or still) over a static textured background, or a
camera pan over a background. The background is fully determined by the caption (its texture is
a fixed function of its name), while the object's start position is random: so a trained model
can settle background tokens early and must keep deciding where the object is and goes, which
is the structure HSA bets on. Objects span several tokens (about 20 px at 8 px per token).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

OBJECT_COLOURS = {
    "red": (220, 40, 40),
    "yellow": (240, 220, 40),
    "white": (245, 245, 245),
    "blue": (30, 60, 230),
    "black": (15, 15, 15),
}
BACKGROUNDS = {
    "grass": (70, 130, 55),
    "sky": (125, 175, 235),
    "sand": (205, 180, 125),
    "stone": (125, 125, 125),
    "water": (35, 95, 145),
}
SHAPES = ("circle", "square")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
KINDS = {"moving": 0.7, "still": 0.15, "pan": 0.15}
TEXTURE_AMPLITUDE = 14.0


@dataclass(frozen=True)
class ClipSpec:
    kind: str  # "moving", "still" or "pan"
    background: str
    colour: str | None = None
    shape: str | None = None
    direction: str | None = None

    @property
    def caption(self) -> str:
        if self.kind == "pan":
            return f"the camera pans {self.direction} over {self.background}"
        if self.kind == "still":
            return f"a {self.colour} {self.shape} is still on {self.background}"
        return f"a {self.colour} {self.shape} moves {self.direction} over {self.background}"


def caption_words() -> list[str]:
    """Every word a caption can use (for the toy model's tokenizer)."""
    words = {"a", "the", "camera", "pans", "over", "is", "still", "on", "moves"}
    words |= set(OBJECT_COLOURS) | set(BACKGROUNDS) | set(SHAPES) | set(DIRECTIONS)
    return sorted(words)


def random_spec(rng: np.random.Generator) -> ClipSpec:
    kind = rng.choice(list(KINDS), p=list(KINDS.values()))
    background = rng.choice(list(BACKGROUNDS))
    if kind == "pan":
        return ClipSpec("pan", background, direction=rng.choice(list(DIRECTIONS)))
    colour, shape = rng.choice(list(OBJECT_COLOURS)), rng.choice(SHAPES)
    direction = rng.choice(list(DIRECTIONS)) if kind == "moving" else None
    return ClipSpec(kind, background, colour, shape, direction)


def _texture(background: str, size: int, margin: int) -> np.ndarray:
    """A fixed texture per background name (a few sinusoids), larger than the frame for pans."""
    seed = sum(ord(c) * 31**i for i, c in enumerate(background)) % (2**32)
    rng = np.random.default_rng(seed)
    n = size + 2 * margin
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    field = np.zeros((n, n), np.float32)
    for _ in range(3):
        fx, fy = rng.uniform(0.05, 0.25, size=2)
        field += np.sin(fx * xx + fy * yy + rng.uniform(0, 2 * math.pi))
    base = np.asarray(BACKGROUNDS[background], np.float32)
    return base + TEXTURE_AMPLITUDE * field[..., None] / 3.0


def render_clip(spec: ClipSpec, rng: np.random.Generator, size: int = 64, frames: int = 17) -> np.ndarray:
    """uint8 [frames, size, size, 3]."""
    speed = 2.0  # px per frame: 32 px over 17 frames, 4 tokens: the caption fixes the path
    margin = math.ceil(speed * frames) + 1
    texture = _texture(spec.background, size, margin)
    video = np.empty((frames, size, size, 3), np.float32)
    dx, dy = DIRECTIONS.get(spec.direction, (0, 0))
    radius = rng.uniform(9, 12)
    travel = speed * (frames - 1) if spec.kind == "moving" else 0.0
    lo, hi = radius + 1, size - radius - 1
    cx = rng.uniform(lo + max(0, -dx) * travel, hi - max(0, dx) * travel)
    cy = rng.uniform(lo + max(0, -dy) * travel, hi - max(0, dy) * travel)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    for t in range(frames):
        if spec.kind == "pan":  # the view moves in the direction; the world slides the other way
            ox, oy = margin + round(dx * speed * t), margin + round(dy * speed * t)
            video[t] = texture[oy : oy + size, ox : ox + size]
            continue
        video[t] = texture[margin : margin + size, margin : margin + size]
        x, y = cx + dx * travel * t / max(frames - 1, 1), cy + dy * travel * t / max(frames - 1, 1)
        if spec.shape == "circle":
            mask = (xx - x) ** 2 + (yy - y) ** 2 <= radius**2
        else:
            mask = (np.abs(xx - x) <= radius * 0.9) & (np.abs(yy - y) <= radius * 0.9)
        video[t][mask] = OBJECT_COLOURS[spec.colour]
    return np.clip(video, 0, 255).round().astype(np.uint8)


def _nearest(colour: np.ndarray, table: dict[str, tuple[int, int, int]]) -> tuple[str, float]:
    names = list(table)
    dist = np.linalg.norm(np.asarray([table[n] for n in names], np.float32) - colour, axis=1)
    return names[int(dist.argmin())], float(dist.min())


def describe(video: np.ndarray) -> dict[str, str | None]:
    """Read background, object colour and motion back from frames (uint8 or float in [0, 1]).

    Background: nearest background colour to the median pixel. Object: pixels far from the
    background and near an object colour; its colour is the most common such colour, its motion
    the slope of its centroid (still below 0.3 px per frame).
    """
    video = np.asarray(video, np.float32)
    if video.max() <= 1.0:
        video = video * 255.0
    background, _ = _nearest(np.median(video.reshape(-1, 3), axis=0), BACKGROUNDS)
    bg = np.asarray(BACKGROUNDS[background], np.float32)
    names = list(OBJECT_COLOURS)
    palette = np.asarray([OBJECT_COLOURS[n] for n in names], np.float32)
    far_from_bg = np.linalg.norm(video - bg, axis=-1) > 3 * TEXTURE_AMPLITUDE + 20
    dist = np.linalg.norm(video[..., None, :] - palette, axis=-1)  # [F, H, W, colours]
    nearest = dist.argmin(-1)
    close = (dist.min(-1) < 60) & far_from_bg
    if close.sum() < 20 * video.shape[0]:  # no object (a pan, or nothing drawn)
        return {"background": background, "colour": None, "direction": None}
    colour = names[int(np.bincount(nearest[close], minlength=len(names)).argmax())]
    mask = close & (nearest == names.index(colour))
    t = np.arange(video.shape[0], dtype=np.float32)
    ys, xs = [], []
    for f in range(video.shape[0]):
        y, x = np.nonzero(mask[f])
        ys.append(y.mean() if y.size else np.nan)
        xs.append(x.mean() if x.size else np.nan)
    ok = ~np.isnan(xs)
    if ok.sum() < 2:
        return {"background": background, "colour": colour, "direction": None}
    vx = np.polyfit(t[ok], np.asarray(xs)[ok], 1)[0]
    vy = np.polyfit(t[ok], np.asarray(ys)[ok], 1)[0]
    if max(abs(vx), abs(vy)) < 0.3:
        direction = "still"
    elif abs(vx) >= abs(vy):
        direction = "right" if vx > 0 else "left"
    else:
        direction = "down" if vy > 0 else "up"
    return {"background": background, "colour": colour, "direction": direction}
