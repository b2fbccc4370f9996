"""Tiny Wan pipelines, built from configs, saved and reloaded with from_pretrained (once per session)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.tiny_wan import VARIANTS, build_tiny_wan


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-wan")
    built = {}

    def get(variant: str):
        if variant not in built:
            built[variant] = build_tiny_wan(root / variant, variant)
        return built[variant]

    return get


@pytest.fixture(scope="session")
def tiny_pipe(tiny_dirs):
    """tiny_pipe(variant) -> the pipeline loaded from its saved folder (cached per session)."""
    loaded = {}

    def get(variant: str):
        if variant not in loaded:
            cls = VARIANTS[variant][0]
            pipe = cls.from_pretrained(tiny_dirs(variant))
            pipe.set_progress_bar_config(disable=True)
            loaded[variant] = pipe
        return loaded[variant]

    return get


@pytest.fixture(scope="session")
def first_frame():
    rng = np.random.RandomState(0)
    return Image.fromarray((rng.rand(64, 64, 3) * 255).astype(np.uint8))


def pipe_kwargs(pipe, image=None, steps=6, size=64, frames=9, seed=0, **extra):
    kwargs = dict(
        prompt="a red circle moves left over grass", negative_prompt="", height=size, width=size,
        num_frames=frames, num_inference_steps=steps, guidance_scale=5.0,
        generator=torch.Generator("cpu").manual_seed(seed), output_type="np",
    )
    if type(pipe).__name__ == "WanImageToVideoPipeline":
        kwargs["image"] = image
    kwargs.update(extra)
    return kwargs


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_cluster():
    """One Ray cluster for the whole run (head: 4 logical CPUs, dashboard for the state API).

    ray.cluster_utils.Cluster, so tests can add and remove worker nodes.
    """
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    port = _free_port()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 4, "include_dashboard": True, "dashboard_port": port,
    })
    ray.init(address=cluster.address)
    cluster.dashboard_url = f"http://127.0.0.1:{port}"
    yield cluster
    ray.shutdown()
    cluster.shutdown()
