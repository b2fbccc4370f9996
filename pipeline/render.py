"""One video from one request: validate, render with HSA, return frames and stats."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from hsa import HSAConfig, plan_budget
from pipeline import wan
from pipeline.hsa_pipeline import RunStats, apply_hsa, remove_hsa
from pipeline.parallel import Comm


class RequestError(ValueError):
    """A request field that cannot be rendered; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message

    def __reduce__(self) -> tuple:  # picklable across processes (Ray) with both fields
        return type(self), (self.field, self.message)


@dataclass
class RenderRequest:
    prompt: str
    negative_prompt: str = ""
    image: str | Path | Image.Image | None = None
    seed: int = 0
    height: int = 480
    width: int = 832
    num_frames: int = 81
    fps: int = 16
    steps: int = 40
    guidance_scale: float = 5.0
    guidance_scale_2: float | None = None
    budget: float = 1.0


@dataclass(frozen=True)
class RenderStats(RunStats):
    seconds: float = 0.0


@dataclass
class RenderResult:
    frames: np.ndarray | None  # float32 [F, H, W, 3] in [0, 1]; None on ranks other than 0
    stats: RenderStats

    def stats_dict(self) -> dict[str, Any]:
        return asdict(self.stats)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and math.isfinite(value)


def validate_request(
    request: RenderRequest, pipe: Any, config: HSAConfig | None = None, comm: Comm | None = None
) -> None:
    """Raise RequestError naming the first bad field; does no model work."""
    r = request
    if not isinstance(r.prompt, str) or not r.prompt.strip():
        raise RequestError("prompt", "must be a non-empty string")
    if r.negative_prompt is not None and not isinstance(r.negative_prompt, str):
        raise RequestError("negative_prompt", "must be a string")
    spatial, temporal = wan.size_factors(pipe)
    for name in ("height", "width"):
        value = getattr(r, name)
        if not _is_int(value) or value <= 0 or value % spatial:
            raise RequestError(name, f"must be a positive multiple of {spatial} for this model, got {value!r}")
    if not _is_int(r.num_frames) or r.num_frames < 1 or (r.num_frames - 1) % temporal:
        raise RequestError("num_frames", f"must be {temporal}k+1 (1, {temporal + 1}, {2 * temporal + 1}, ...), got {r.num_frames!r}")
    if not _is_int(r.fps) or r.fps <= 0:
        raise RequestError("fps", f"must be a positive integer, got {r.fps!r}")
    if not _is_int(r.steps) or r.steps < 1:
        raise RequestError("steps", f"must be a positive integer, got {r.steps!r}")
    if not _is_int(r.seed) or r.seed < 0:
        raise RequestError("seed", f"must be a non-negative integer, got {r.seed!r}")
    if not _is_number(r.guidance_scale) or r.guidance_scale < 0:
        raise RequestError("guidance_scale", f"must be a number >= 0, got {r.guidance_scale!r}")
    if r.guidance_scale_2 is not None:
        if not wan.has_two_experts(pipe):
            raise RequestError("guidance_scale_2", "only applies to two-expert (Wan 2.2 A14B) models")
        if not _is_number(r.guidance_scale_2) or r.guidance_scale_2 < 0:
            raise RequestError("guidance_scale_2", f"must be a number >= 0, got {r.guidance_scale_2!r}")
    if not _is_number(r.budget) or not 0 < r.budget <= 1:
        raise RequestError("budget", f"must be in (0, 1] (a fraction of the reference compute), got {r.budget!r}")
    switch = wan.planned_switch_step(pipe, r.steps)
    try:
        plan_budget(r.steps, replace(config or HSAConfig(), budget=float(r.budget)),
                    forced_full={switch} if switch is not None else set())
    except ValueError as err:
        raise RequestError("budget", str(err)) from None
    if comm is not None:
        _validate_parallel(r, pipe, comm)
    if wan.needs_image(pipe):
        if r.image is None:
            raise RequestError("image", "this is an image-to-video model: give the first frame")
        _open_image(r.image)
    elif r.image is not None:
        raise RequestError("image", "this is a text-to-video model; it takes no image")


def _validate_parallel(r: RenderRequest, pipe: Any, comm: Comm) -> None:
    if comm.config.cfg > 1:
        for name in ("guidance_scale", "guidance_scale_2"):
            value = getattr(r, name)
            if value is not None and value <= 1:
                raise RequestError(name, f"CFG parallel computes two guidance branches: needs > 1, got {value!r}")
    if comm.config.ring > 1 and r.budget < 1:
        raise RequestError("budget", "ring attention (xfuser) runs dense steps only: needs budget 1.0")
    tokens = wan.token_count(pipe, r.height, r.width, r.num_frames)
    if tokens % comm.sequence:
        raise RequestError(
            "height/width/num_frames",
            f"{tokens} tokens do not split over {comm.sequence} sequence-parallel ranks; change the size",
        )


def _open_image(image: str | Path | Image.Image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    try:
        with Image.open(image) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as err:
        raise RequestError("image", f"cannot read {image!s}: {err}") from None


def render(pipe: Any, request: RenderRequest, config: HSAConfig | None = None, comm: Comm | None = None) -> RenderResult:
    """Render ``request`` with HSA at ``request.budget`` (other knobs from ``config``).

    With ``comm`` every rank of the group calls this with the same request; the transformer is
    sharded across them and rank 0 decodes and returns the frames.
    """
    validate_request(request, pipe, config, comm)
    config = replace(config or HSAConfig(), budget=float(request.budget))
    kwargs: dict[str, Any] = dict(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt or "",
        height=request.height,
        width=request.width,
        num_frames=request.num_frames,
        num_inference_steps=request.steps,
        guidance_scale=request.guidance_scale,
        generator=torch.Generator("cpu").manual_seed(request.seed),
        output_type="np" if comm is None else "latent",
    )
    if request.guidance_scale_2 is not None:
        kwargs["guidance_scale_2"] = request.guidance_scale_2
    if request.image is not None:
        kwargs["image"] = _open_image(request.image)
    controller = apply_hsa(pipe, config, comm)
    try:
        start = time.perf_counter()
        frames = pipe(**kwargs).frames
        if comm is not None:
            frames = wan.decode_latents(pipe, frames) if comm.rank == 0 else None
        seconds = time.perf_counter() - start
        stats = RenderStats(**asdict(controller.stats()), seconds=seconds)
    finally:
        remove_hsa(pipe)
    frames = None if frames is None else np.asarray(frames[0], dtype=np.float32)
    return RenderResult(frames=frames, stats=stats)
