"""The synthetic clips say what their captions say, and the describer reads them back."""

import numpy as np

from pipeline.toy_data import ClipSpec, caption_words, describe, random_spec, render_clip


def _expected(spec):
    direction = {"moving": spec.direction, "still": "still", "pan": None}[spec.kind]
    return {"background": spec.background, "colour": spec.colour, "direction": direction}


def test_describer_reads_generated_clips():
    rng = np.random.default_rng(0)
    specs = [random_spec(rng) for _ in range(120)]
    assert {s.kind for s in specs} == {"moving", "still", "pan"}
    for spec in specs:
        assert describe(render_clip(spec, rng)) == _expected(spec), spec.caption


def test_background_is_determined_by_the_caption():
    a = render_clip(ClipSpec("moving", "sand", "red", "circle", "left"), np.random.default_rng(1))
    b = render_clip(ClipSpec("moving", "sand", "blue", "square", "up"), np.random.default_rng(2))
    corner = (slice(None), slice(0, 6), slice(0, 6))  # objects start at least 10 px from the rim
    assert np.array_equal(a[0][corner[1:]], b[0][corner[1:]])


def test_pan_moves_every_pixel_and_still_moves_none():
    rng = np.random.default_rng(3)
    pan = render_clip(ClipSpec("pan", "grass", direction="right"), rng).astype(int)
    still = render_clip(ClipSpec("still", "stone", "white", "circle"), rng).astype(int)
    assert (np.abs(pan[-1] - pan[0]).sum(-1) > 0).mean() > 0.5
    assert np.array_equal(still[0], still[-1])


def test_captions_use_the_vocabulary():
    rng = np.random.default_rng(4)
    words = set(caption_words())
    assert all(set(random_spec(rng).caption.split()) <= words for _ in range(200))
