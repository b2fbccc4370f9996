"""A render group: P Ray actors, one placement group, one torch.distributed group, one video at a time.

Every rank loads the pipeline once and runs every request (SPMD, pipeline/parallel.py); rank 0
writes the mp4 and returns the stats. The placement group is created and removed by the driver
that owns the group, so a dead actor never strands it.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass, field
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy


class GroupUnavailable(RuntimeError):
    """The cluster cannot place (or start) a group right now."""


@dataclass(frozen=True)
class GroupSpec:
    """What every group of a pool looks like.

    ranks: actors per group (one GPU each on GPU clusters); cfg: 2 to split the guidance branches
    over two halves of the group, the rest is Ulysses. model: local diffusers folder or hub id
    (None = the built-in tiny model). hsa: HSAConfig knobs other than the budget, which each
    request carries. use_gpu: None = when the cluster has GPUs.
    """

    ranks: int = 1
    cfg: int = 1
    model: str | None = None
    dtype: str | None = None
    cpus_per_rank: float = 1
    use_gpu: bool | None = None
    hsa: dict[str, Any] = field(default_factory=dict)
    ready_timeout_s: float = 60.0
    setup_timeout_s: float = 1800.0  # joining the group and loading the weights

    def __post_init__(self) -> None:
        if self.ranks < 1:
            raise ValueError(f"ranks must be >= 1, got {self.ranks}")
        if self.cfg not in (1, 2) or self.ranks % self.cfg:
            raise ValueError(f"cfg must be 1 or 2 and divide ranks ({self.ranks}), got {self.cfg}")

    def bundles(self, gpu: bool) -> list[dict[str, float]]:
        bundle = {"CPU": self.cpus_per_rank, **({"GPU": 1} if gpu else {})}
        return [dict(bundle) for _ in range(self.ranks)]


@ray.remote(max_restarts=0, max_task_retries=0)
class RenderRank:
    def __init__(self, rank: int, spec: GroupSpec) -> None:
        self.rank, self.spec = rank, spec
        self.completed: list[str] = []
        self.pipe = self.comm = None

    def address(self) -> tuple[str, int]:
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def setup(self, master: str, port: int) -> str:
        import torch
        import torch.distributed as dist

        from pipeline.loading import load_pipeline
        from pipeline.parallel import Comm, ParallelConfig

        spec = self.spec
        device = "cuda" if ray.get_gpu_ids() else "cpu"
        if device == "cpu":
            torch.set_num_threads(max(1, int(spec.cpus_per_rank)))
        if spec.ranks > 1:
            dist.init_process_group("nccl" if device == "cuda" else "gloo", init_method=f"tcp://{master}:{port}",
                                    rank=self.rank, world_size=spec.ranks)
            self.comm = Comm(ParallelConfig(ulysses=spec.ranks // spec.cfg, cfg=spec.cfg))
        dtype = getattr(torch, spec.dtype) if spec.dtype else None
        self.pipe = load_pipeline(spec.model, device=device, dtype=dtype)
        self.pipe.set_progress_bar_config(disable=True)
        return ray.get_runtime_context().get_node_id()

    def render(self, key: str, request: Any, output: str | None, return_frames: bool = False) -> dict | None:
        from hsa import HSAConfig
        from pipeline.render import render
        from pipeline.video_io import write_mp4

        result = render(self.pipe, request, HSAConfig(**self.spec.hsa), comm=self.comm)
        if self.rank != 0:
            return None
        if output is not None:
            write_mp4(result.frames, output, fps=request.fps)
        self.completed.append(key)
        reply = {"stats": asdict(result.stats), "output": output, "pid": os.getpid()}
        if return_frames:
            reply["frames"] = result.frames
        return reply

    def completed_keys(self) -> list[str]:
        return list(self.completed)


class RenderGroup:
    """Driver-side handle: creates the placement group and actors, submits, tears down."""

    def __init__(self, name: str, spec: GroupSpec, gpu: bool, ready_timeout_s: float | None = None) -> None:
        self.name, self.spec = name, spec
        self.pg = placement_group(spec.bundles(gpu), strategy="STRICT_PACK", name=name)
        self.actors: list = []
        try:
            timeout = spec.ready_timeout_s if ready_timeout_s is None else ready_timeout_s
            ready, _ = ray.wait([self.pg.ready()], timeout=timeout)
            if not ready:
                raise GroupUnavailable(f"{name}: no node can place {spec.ranks} x {spec.bundles(gpu)[0]} now")
            self.actors = [
                RenderRank.options(
                    name=f"{name}-rank{i}", num_cpus=spec.cpus_per_rank, num_gpus=1 if gpu else 0,
                    scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=i),
                ).remote(i, spec)
                for i in range(spec.ranks)
            ]
            master, port = ray.get(self.actors[0].address.remote(), timeout=spec.setup_timeout_s)
            nodes = ray.get([a.setup.remote(master, port) for a in self.actors], timeout=spec.setup_timeout_s)
            self.node_id = nodes[0]
        except GroupUnavailable:
            self.shutdown()
            raise
        except Exception as err:
            self.shutdown()
            raise GroupUnavailable(f"{name}: could not start: {err}") from err

    def submit(self, key: str, request: Any, output: str | None, return_frames: bool = False) -> list:
        return [a.render.remote(key, request, output, return_frames) for a in self.actors]

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []
        if self.pg is not None:
            try:
                remove_placement_group(self.pg)
            except Exception:  # already gone with its node
                pass
            self.pg = None
