"""``python -m jobs render ...``: one video from one prompt."""

from __future__ import annotations

import argparse
import json
import logging
import sys

import torch

from hsa import HSAConfig
from hsa.config import MODES, SCORES

# The shipped toy model renders 64 x 64 x 17 clips at 8 fps; real weights default to Wan's 480p, 81 frames.
TOY_DEFAULTS = dict(height=64, width=64, num_frames=17, fps=8)
MODEL_DEFAULTS = dict(height=480, width=832, num_frames=81, fps=16)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _render_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("render", help="render one video from a prompt")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--image", help="first frame for image-to-video models")
    p.add_argument("--model", help="local diffusers folder or hub id (default: the shipped toy Wan model)")
    p.add_argument("--budget", type=float, default=0.5, help="fraction of the reference compute, in (0, 1]")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--num-frames", type=int)
    p.add_argument("--fps", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance-scale", type=float, default=5.0)
    p.add_argument("--guidance-scale-2", type=float)
    p.add_argument("--mode", choices=MODES, default="divisor")
    p.add_argument("--score", choices=SCORES, default="relative")
    p.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="transformer dtype (default: bfloat16 on GPU)")
    p.add_argument("--ulysses", type=int, default=1, help="sequence-parallel ranks per video (launch with torchrun)")
    p.add_argument("--cfg-parallel", action="store_true", help="one guidance branch per half of the ranks")
    p.add_argument("--out", required=True, help="mp4 path to write")


def _distributed(args: argparse.Namespace) -> tuple[object | None, str | None]:
    """Under torchrun with --ulysses/--cfg-parallel: join the group; returns (Comm, device)."""
    import os

    import torch.distributed as dist

    from pipeline.parallel import Comm, ParallelConfig

    config = ParallelConfig(ulysses=args.ulysses, cfg=2 if args.cfg_parallel else 1)
    if config.world_size == 1:
        return None, args.device
    if "WORLD_SIZE" not in os.environ:
        raise SystemExit(f"error: --ulysses/--cfg-parallel need {config.world_size} ranks: "
                         f"torchrun --nproc-per-node {config.world_size} -m jobs render ...")
    gpu = torch.cuda.is_available() and args.device != "cpu"
    device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if gpu else "cpu"
    if gpu:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if gpu else "gloo")
    return Comm(config), device


def _render(args: argparse.Namespace) -> int:
    from pipeline.loading import load_pipeline
    from pipeline.render import RenderRequest, RequestError, render, validate_request
    from pipeline.video_io import write_mp4

    comm, device = _distributed(args)
    rank = comm.rank if comm is not None else 0

    sizes = MODEL_DEFAULTS if args.model else TOY_DEFAULTS
    request = RenderRequest(
        prompt=args.prompt, negative_prompt=args.negative_prompt, image=args.image, seed=args.seed,
        height=args.height or sizes["height"], width=args.width or sizes["width"],
        num_frames=args.num_frames or sizes["num_frames"], fps=args.fps or sizes["fps"], steps=args.steps,
        guidance_scale=args.guidance_scale, guidance_scale_2=args.guidance_scale_2, budget=args.budget,
    )
    config = HSAConfig(mode=args.mode, score=args.score)  # the budget comes from the request
    logging.info("loading %s", args.model or "the shipped toy Wan model")
    pipe = load_pipeline(args.model, device=device, dtype=DTYPES.get(args.dtype))
    try:
        validate_request(request, pipe, config, comm)
    except RequestError as err:
        if rank == 0:
            print(f"error: {err}", file=sys.stderr)
        return 2
    result = render(pipe, request, config, comm=comm)
    if rank == 0:
        path = write_mp4(result.frames, args.out, fps=request.fps)
        print(json.dumps({"output": str(path), **result.stats_dict()}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _render_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return {"render": _render}[args.command](args)
