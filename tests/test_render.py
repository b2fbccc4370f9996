"""render(): equal to the stock pipeline at budget 1, and bad requests stopped before model work."""

import numpy as np
import pytest
import torch
from conftest import pipe_kwargs

from pipeline.render import RenderRequest, RequestError, render


def _request(**overrides):
    fields = dict(prompt="a red circle moves left over grass", height=64, width=64, num_frames=9, steps=6, budget=1.0)
    fields.update(overrides)
    return RenderRequest(**fields)


def test_render_budget_one_equals_stock(tiny_pipe):
    pipe = tiny_pipe("t2v")
    stock = pipe(**pipe_kwargs(pipe)).frames[0]
    result = render(pipe, _request())
    assert result.frames.shape == (9, 64, 64, 3)
    assert np.abs(result.frames - stock).max() <= 1e-5
    stats = result.stats_dict()
    assert stats["budget"] == 1.0 and stats["planned_fraction"] == 1.0 and stats["achieved_fraction"] == 1.0
    assert stats["seconds"] > 0 and stats["token_evaluations"] == 6 * 2 * 48


def test_render_reports_budget_spent(tiny_pipe, first_frame):
    result = render(tiny_pipe("i2v"), _request(budget=0.5, steps=40, image=first_frame))
    assert abs(result.stats.achieved_fraction - 0.5) <= 0.03 * 0.5
    assert result.stats.planned_fraction == pytest.approx(0.5, abs=0.01)


BAD = [
    ("height", dict(height=72)),
    ("width", dict(width=0)),
    ("num_frames", dict(num_frames=10)),
    ("num_frames", dict(num_frames=0)),
    ("budget", dict(budget=0.0)),
    ("budget", dict(budget=1.2)),
    ("budget", dict(budget=0.02)),  # below what 6 steps allow
    ("prompt", dict(prompt="   ")),
    ("prompt", dict(prompt=None)),
    ("steps", dict(steps=0)),
    ("fps", dict(fps=0)),
    ("seed", dict(seed=-1)),
    ("guidance_scale", dict(guidance_scale=float("nan"))),
    ("guidance_scale_2", dict(guidance_scale_2=3.0)),  # single-expert model
    ("image", dict(image="x.png")),  # text-to-video model
]


@pytest.mark.parametrize("field,overrides", BAD, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD)])
def test_bad_request_names_field_before_model_work(tiny_pipe, field, overrides):
    pipe = tiny_pipe("t2v")
    calls = []
    hooks = [m.register_forward_pre_hook(lambda *a: calls.append(1)) for m in (pipe.text_encoder, pipe.transformer)]
    try:
        with pytest.raises(RequestError) as err:
            render(pipe, _request(**overrides))
    finally:
        for h in hooks:
            h.remove()
    assert err.value.field == field and str(err.value).startswith(field)
    assert calls == []
    assert getattr(pipe, "hsa", None) is None


@pytest.mark.parametrize("image,message", [(None, "give the first frame"), ("/nonexistent.png", "cannot read")])
def test_image_to_video_needs_a_readable_image(tiny_pipe, image, message):
    with pytest.raises(RequestError, match=message) as err:
        render(tiny_pipe("i2v"), _request(image=image))
    assert err.value.field == "image"


def test_two_expert_guidance_scale_2(tiny_pipe):
    pipe = tiny_pipe("t2v-a14b")
    stock = pipe(**pipe_kwargs(pipe, guidance_scale_2=2.0)).frames[0]
    result = render(pipe, _request(guidance_scale_2=2.0))
    assert np.abs(result.frames - stock).max() <= 1e-5
    assert not torch.equal(torch.from_numpy(stock), torch.from_numpy(pipe(**pipe_kwargs(pipe)).frames[0]))


def test_request_error_survives_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(RequestError("height", "must be a multiple of 16")))
    assert err.field == "height" and str(err) == "height: must be a multiple of 16"


def test_budget_floor_counts_the_expert_switch(tiny_pipe):
    from pipeline.render import validate_request

    # 30 steps: the floor is 1 warm-up + 2 sync steps = 0.1; the switch (step 13) adds one full step
    validate_request(_request(budget=0.1, steps=30), tiny_pipe("t2v"))
    with pytest.raises(RequestError, match="below") as err:
        validate_request(_request(budget=0.1, steps=30), tiny_pipe("t2v-a14b"))
    assert err.value.field == "budget"


@pytest.mark.parametrize("parallel,overrides,field", [
    (dict(cfg=2), dict(guidance_scale=1.0), "guidance_scale"),
    (dict(ring=2), dict(budget=0.5), "budget"),
    (dict(ulysses=5), dict(), "height/width/num_frames"),  # 48 tokens over 5 ranks
])
def test_parallel_requests_are_checked_up_front(tiny_pipe, parallel, overrides, field):
    from types import SimpleNamespace

    from pipeline.parallel import ParallelConfig
    from pipeline.render import validate_request

    config = ParallelConfig(**parallel)
    comm = SimpleNamespace(config=config, sequence=config.sequence)
    with pytest.raises(RequestError) as err:
        validate_request(_request(**overrides), tiny_pipe("t2v"), comm=comm)
    assert err.value.field == field
