"""Render groups and the pool on a local Ray cluster (CPU bundles, gloo)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import ray
from ray.util.state import list_actors, list_placement_groups

from actors import GroupSpec, PoolError, RenderGroup, RenderPool, RenderTask
from hsa import HSAConfig
from pipeline.render import RenderRequest, render
from pipeline.video_io import read_mp4


def _request(prompt="a red circle moves left over grass", **overrides):
    fields = dict(prompt=prompt, height=64, width=64, num_frames=9, steps=8, budget=0.5)
    fields.update(overrides)
    return RenderRequest(**fields)


def _tasks(tmp_path, n, **overrides):
    return [RenderTask(f"row{i}", _request(seed=i, **overrides), str(tmp_path / f"row{i}.mp4")) for i in range(n)]


def _ours_alive(cluster, prefix):
    actors = list_actors(address=cluster.dashboard_url, filters=[("state", "=", "ALIVE")], limit=1000)
    groups = list_placement_groups(address=cluster.dashboard_url, limit=1000)
    return ([a for a in actors if (a.name or "").startswith(prefix)],
            [g for g in groups if g.name.startswith(prefix) and g.state != "REMOVED"])


def test_group_of_two_ranks_equals_single_process(ray_cluster, tiny_dirs, tiny_pipe, tmp_path):
    spec = GroupSpec(ranks=2, model=str(tiny_dirs("t2v")))
    group = RenderGroup("hsa-test-pair", spec, gpu=False)
    try:
        request = _request(steps=20)
        reply, other = ray.get(group.submit("pair", request, str(tmp_path / "pair.mp4"), return_frames=True))
    finally:
        group.shutdown()
    single = render(tiny_pipe("t2v"), request, HSAConfig(quota_shards=2))
    assert other is None
    assert np.abs(reply["frames"] - single.frames).max() <= 1e-5
    assert reply["stats"]["achieved_fraction"] == pytest.approx(single.stats.achieved_fraction)
    assert read_mp4(tmp_path / "pair.mp4")[0].shape == (9, 64, 64, 3)
    assert _ours_alive(ray_cluster, "hsa-test-pair") == ([], [])


def test_pool_of_two_groups_renders_each_request_once(ray_cluster, tiny_dirs, tmp_path):
    events = []
    with RenderPool(GroupSpec(model=str(tiny_dirs("t2v"))), groups=2, name="hsa-test-six",
                    on_event=lambda kind, **info: events.append((kind, info))) as pool:
        results = list(pool.run(_tasks(tmp_path, 6)))
        completed = sum((ray.get(g.actors[0].completed_keys.remote()) for g in pool.groups.values()), [])
    assert sorted(r.key for r in results) == [f"row{i}" for i in range(6)]
    assert all(r.status == "done" and r.attempts == 1 for r in results)
    assert sorted(completed) == sorted(r.key for r in results)  # rendered exactly once each
    assert len({info["group"] for kind, info in events if kind == "done"}) == 2  # both groups worked
    assert all((tmp_path / f"row{i}.mp4").exists() for i in range(6))
    assert _ours_alive(ray_cluster, "hsa-test-six") == ([], [])


def test_killed_actor_mid_render_is_rebuilt_and_nothing_is_lost(ray_cluster, tiny_dirs, tmp_path):
    killed = {}

    def on_event(kind, **info):
        if kind == "submitted" and not killed:  # kill the first group while it renders its first task
            group = pool.groups[info["group"]]
            killed.update(name=info["group"], key=info["key"])
            threading.Timer(1.0, lambda: ray.kill(group.actors[0], no_restart=True)).start()

    pool = RenderPool(GroupSpec(model=str(tiny_dirs("t2v"))), groups=1, name="hsa-test-kill", on_event=on_event)
    try:
        # a render takes about 6 s here: the kill lands mid-render
        results = list(pool.run(_tasks(tmp_path, 3, steps=40, height=256, width=256, num_frames=17)))
        lost_actors, lost_groups = _ours_alive(ray_cluster, killed["name"])
        (survivor,) = pool.groups.values()
        completed = ray.get(survivor.actors[0].completed_keys.remote())
    finally:
        pool.shutdown()
    assert sorted(r.key for r in results) == ["row0", "row1", "row2"]
    assert all(r.status == "done" for r in results)
    assert next(r for r in results if r.key == killed["key"]).attempts == 2
    assert sorted(completed) == ["row0", "row1", "row2"]  # all on the rebuilt group, once each
    assert pool.rebuilds == 1
    assert (lost_actors, lost_groups) == ([], [])  # the dead group released everything
    assert _ours_alive(ray_cluster, "hsa-test-kill") == ([], [])


def test_request_that_always_fails_is_reported_after_k_attempts(ray_cluster, tiny_dirs, tmp_path):
    (tmp_path / "blocker").write_text("a file, not a folder")
    tasks = _tasks(tmp_path, 3)
    tasks[1].output = str(tmp_path / "blocker" / "row1.mp4")  # cannot be written, every time
    with RenderPool(GroupSpec(model=str(tiny_dirs("t2v"))), groups=1, max_attempts=3, name="hsa-test-fail") as pool:
        results = {r.key: r for r in pool.run(tasks)}
    assert results["row1"].status == "failed" and results["row1"].attempts == 3
    assert results["row1"].error.startswith(("FileExistsError", "NotADirectoryError"))
    assert results["row0"].status == results["row2"].status == "done"


def test_invalid_request_fails_at_once_naming_the_field(ray_cluster, tiny_dirs, tmp_path):
    tasks = _tasks(tmp_path, 2)
    tasks[0].request.height = 72
    with RenderPool(GroupSpec(model=str(tiny_dirs("t2v"))), groups=1, name="hsa-test-invalid") as pool:
        results = {r.key: r for r in pool.run(tasks)}
    assert results["row0"].status == "failed" and results["row0"].attempts == 1
    assert "height" in results["row0"].error
    assert results["row1"].status == "done"


def test_pool_that_cannot_place_a_group_says_so(ray_cluster):
    with pytest.raises(PoolError, match="cannot place"):
        RenderPool(GroupSpec(ranks=64, ready_timeout_s=1), groups=1, name="hsa-test-huge")
    assert _ours_alive(ray_cluster, "hsa-test-huge") == ([], [])


@pytest.mark.slow
def test_nodes_joining_and_leaving_mid_run(ray_cluster, tiny_dirs, tmp_path):
    """Elastic: a node added mid-run gets a group; a node removed mid-run loses nothing."""
    head_nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    joined, events = {}, []

    def on_event(kind, **info):
        events.append((kind, info))
        if kind == "done" and "node" not in joined:
            joined["node"] = ray_cluster.add_node(num_cpus=2)
        if kind == "group_ready" and info["node"] not in head_nodes and "removed" not in joined:
            # the new node got a group: take it away again once that group is rendering
            joined["removed"] = True
            threading.Timer(1.0, lambda: ray_cluster.remove_node(joined["node"])).start()

    spec = GroupSpec(model=str(tiny_dirs("t2v")), cpus_per_rank=2)  # the 4-CPU head fits two groups
    with RenderPool(spec, max_groups=3, name="hsa-test-elastic", scale_every_s=0.5, on_event=on_event) as pool:
        # about 6 s a render: the run outlasts the node's arrival, start-up and removal
        results = list(pool.run(_tasks(tmp_path, 8, steps=40, height=256, width=256, num_frames=17)))
    assert sorted(r.key for r in results) == sorted(f"row{i}" for i in range(8))
    assert all(r.status == "done" for r in results)
    ready_nodes = [info["node"] for kind, info in events if kind == "group_ready"]
    assert sum(node in head_nodes for node in ready_nodes) == 2
    assert any(node not in head_nodes for node in ready_nodes)  # the joined node got a group
    assert any(kind == "group_lost" for kind, _ in events)  # and lost it with the node
    time.sleep(0.5)
    assert _ours_alive(ray_cluster, "hsa-test-elastic") == ([], [])


def test_pool_on_in_process_local_ray(tiny_dirs, tmp_path):
    """The same pool code on ray.init(address="local"), in a fresh process."""
    import subprocess
    import sys
    from pathlib import Path

    script = f"""
import sys
from actors import GroupSpec, RenderPool, RenderTask, connect
from pipeline.render import RenderRequest
connect("local", num_cpus=2)
tasks = [RenderTask(f"r{{i}}", RenderRequest(prompt="a blue square", height=64, width=64, num_frames=9, steps=6,
                                             budget=0.5, seed=i), f"{tmp_path}/r{{i}}.mp4") for i in range(2)]
with RenderPool(GroupSpec(model="{tiny_dirs('t2v')}"), groups=1) as pool:
    print(sorted((r.key, r.status) for r in pool.run(tasks)))
"""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[('r0', 'done'), ('r1', 'done')]" in proc.stdout
