"""The shipped toy model learned its captions: on combinations it never saw in training it draws
the right background, object colour and motion direction far above chance (docs/TOY_MODEL.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pipeline.loading import DEFAULT_MODEL, load_pipeline
from pipeline.render import RenderRequest, render
from pipeline.toy_data import ClipSpec, describe

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("train_toy", ROOT / "bench" / "train_toy.py")
train_toy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_toy)


@pytest.fixture(scope="module")
def described():
    pipe = load_pipeline(DEFAULT_MODEL, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    out = []
    for seed, (colour, shape, direction, background) in enumerate(sorted(train_toy.HELD_OUT)):
        clip = ClipSpec("moving", background, colour, shape, direction)
        request = RenderRequest(prompt=clip.caption, height=64, width=64, num_frames=17, fps=8, steps=40, seed=seed)
        out.append((clip, describe(render(pipe, request).frames)))
    return out


def _accuracy(described, field, truth):
    return sum(seen[field] == truth(clip) for clip, seen in described) / len(described)


def test_background_follows_unseen_captions(described):
    assert _accuracy(described, "background", lambda c: c.background) >= 0.8  # chance 0.2


def test_object_colour_follows_unseen_captions(described):
    assert _accuracy(described, "colour", lambda c: c.colour) >= 0.8  # chance 0.2


def test_motion_direction_follows_unseen_captions(described):
    assert _accuracy(described, "direction", lambda c: c.direction) >= 0.8  # chance 0.25 (0.2 with "still")
