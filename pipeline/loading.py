"""Load a Wan pipeline from a local diffusers folder or a hub id, ready for HSA."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler

from pipeline import wan

log = logging.getLogger(__name__)
# The toy Wan model trained by bench/train_toy.py on synthetic clips (docs/TOY_MODEL.md).
DEFAULT_MODEL = Path(__file__).resolve().parent / "assets" / "toy-wan"


def use_flow_match_euler(pipe: Any) -> None:
    """Swap the pipeline's scheduler for FlowMatchEulerDiscreteScheduler with the same flow shift.

    Official Wan folders ship UniPC; HSA's cached Euler update is the Euler step, and the reference
    and every baseline must use the same scheduler to be comparable.
    """
    scheduler = pipe.scheduler
    if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
        return
    config = scheduler.config
    shift = config.get("flow_shift") or config.get("shift") or 1.0
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(
        shift=shift, num_train_timesteps=config.get("num_train_timesteps", 1000)
    )
    log.info("scheduler %s replaced by FlowMatchEulerDiscreteScheduler(shift=%s)", type(scheduler).__name__, shift)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_pipeline(model: str | Path | None = None, device: str | None = None, dtype: torch.dtype | None = None) -> Any:
    """Load ``model`` (a local diffusers folder or hub id; None = the shipped toy model).

    The transformer(s) and text encoder use ``dtype`` (bfloat16 on GPU, float32 on CPU by default);
    the VAE stays in float32, as Wan's reference code runs it.
    """
    device = device or default_device()
    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    source = str(model) if model is not None else str(DEFAULT_MODEL)
    if Path(source).exists() and not (Path(source) / "model_index.json").exists():
        raise FileNotFoundError(f"{source} is not a diffusers pipeline folder (no model_index.json)")
    pipe = DiffusionPipeline.from_pretrained(source, dtype={"vae": torch.float32, "default": dtype})
    if not isinstance(pipe, wan.PIPELINES):
        raise TypeError(
            f"{source} loads as {type(pipe).__name__}; supported: {[c.__name__ for c in wan.PIPELINES]}"
        )
    use_flow_match_euler(pipe)
    return pipe.to(device)
