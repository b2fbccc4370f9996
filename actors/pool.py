"""A pool of render groups: pulls tasks, one per group at a time, survives dead actors and nodes.

- Sized from the cluster (as many groups as fit; grows when nodes join) or to a fixed count.
- A lost group (any Ray system error: actor, worker or node death, lost objects; or ranks that
  stop agreeing) puts its task back at the front of the queue and is rebuilt, within
  ``max_rebuilds`` rebuilds for the whole pool.
- A task whose render fails ``max_attempts`` times (deaths included) comes back failed with the
  original error; an invalid request (RequestError) fails at once. Other tasks go on.
- Tasks are pulled lazily into a bounded queue, so a million-row iterator costs nothing up front.
"""

from __future__ import annotations

import itertools
import logging
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayError, RayTaskError

from actors.render_group import GroupSpec, GroupUnavailable, RenderGroup
from pipeline.render import RenderRequest, RequestError

log = logging.getLogger(__name__)
GROW_TIMEOUT_S = 2.0  # how long an opportunistic scale-up waits for its placement group


@dataclass
class RenderTask:
    key: str
    request: RenderRequest
    output: str | None


@dataclass
class TaskResult:
    key: str
    status: str  # "done" or "failed"
    output: str | None
    stats: dict | None
    error: str | None
    attempts: int
    reply: dict | None = None


@dataclass
class _Flight:
    task: RenderTask
    refs: list
    started: float
    failed_at: float | None = None  # when the first rank raised


class PoolError(RuntimeError):
    pass


class RenderPool:
    def __init__(
        self,
        spec: GroupSpec,
        groups: int | None = None,
        max_groups: int | None = None,
        max_attempts: int = 3,
        max_rebuilds: int = 10,
        queue_size: int | None = None,
        poll_s: float = 0.2,
        scale_every_s: float = 2.0,
        collective_timeout_s: float = 60.0,
        return_frames: bool = False,
        on_event: Callable[..., None] | None = None,
        name: str = "hsa-render",
    ) -> None:
        """groups: a fixed number of groups (None = as many as the cluster fits, up to max_groups)."""
        if not ray.is_initialized():
            raise RuntimeError("connect to Ray first: ray.init(address='auto') or ray.init(address='local')")
        self.spec, self.fixed, self.max_groups = spec, groups, max_groups
        self.max_attempts, self.max_rebuilds = max_attempts, max_rebuilds
        self.queue_size, self.poll_s, self.scale_every_s = queue_size, poll_s, scale_every_s
        self.collective_timeout_s, self.return_frames = collective_timeout_s, return_frames
        self.on_event, self.name = on_event, name
        self.gpu = spec.use_gpu if spec.use_gpu is not None else ray.cluster_resources().get("GPU", 0) > 0
        self.groups: dict[str, RenderGroup] = {}
        self.rebuilds = 0
        self._ids = itertools.count()
        self._last_scale = 0.0
        self._backoff = scale_every_s
        self._scale(force=True)
        if not self.groups:
            raise PoolError(f"the cluster cannot place one group of {spec.ranks} x {spec.bundles(self.gpu)[0]}")

    def _event(self, kind: str, **info: Any) -> None:
        log.info("%s %s", kind, info)
        if self.on_event is not None:
            self.on_event(kind, **info)

    def _target(self) -> int:
        if self.fixed is not None:
            return self.fixed
        return self.max_groups if self.max_groups is not None else 1 << 30

    def _fits_one_more(self) -> bool:
        """Free resources for a group, and a node big enough for all its bundles (STRICT_PACK)."""
        need = self.spec.bundles(self.gpu)
        total = {k: v * len(need) for k, v in need[0].items()}
        free = ray.available_resources()
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        return all(free.get(k, 0) >= v for k, v in total.items()) and any(
            all(node.get(k, 0) >= v for k, v in total.items()) for node in nodes
        )

    def _scale(self, force: bool = False) -> None:
        """Add groups up to the target while the cluster has room (the elastic part).

        Forced (start, rebuild): wait up to the spec's ready timeout. Otherwise an opportunistic
        try with a short timeout, backing off while the cluster has no room.
        """
        if not force and time.monotonic() - self._last_scale < self._backoff:
            return
        self._last_scale = time.monotonic()
        while len(self.groups) < self._target() and (self.fixed is not None or self._fits_one_more()):
            name = f"{self.name}-{next(self._ids)}"
            try:
                group = RenderGroup(name, self.spec, self.gpu, None if force else GROW_TIMEOUT_S)
            except GroupUnavailable as err:
                self._backoff = min(60.0, 2 * self._backoff)
                self._event("group_unavailable", group=name, error=str(err))
                return
            self._backoff = self.scale_every_s
            self.groups[name] = group
            self._event("group_ready", group=name, node=group.node_id)

    def _lose(self, name: str, error: str) -> None:
        self.groups.pop(name).shutdown()
        self.rebuilds += 1
        self._event("group_lost", group=name, error=error)
        if self.rebuilds > self.max_rebuilds:
            raise PoolError(f"{self.rebuilds} groups lost (limit {self.max_rebuilds}); last: {error}")
        self._scale(force=True)

    def _outcome(self, flight: _Flight) -> tuple[str, Any] | None:
        """None while running; ("done", reply), ("error", RayTaskError) or ("lost", reason)."""
        ready, pending = ray.wait(flight.refs, num_returns=len(flight.refs), timeout=0)
        errors = [_error_of(ref) for ref in ready]
        system = [e for e in errors if isinstance(e, RayError) and not isinstance(e, RayTaskError)]
        if system:
            return "lost", f"{type(system[0]).__name__}: {system[0]}"
        raised = [e for e in errors if e is not None]
        if pending:
            if raised:  # the other ranks may wait forever inside a collective
                flight.failed_at = flight.failed_at or time.monotonic()
                if time.monotonic() - flight.failed_at > self.collective_timeout_s:
                    return "lost", f"a rank failed ({_message(raised[0])}) while the others kept waiting"
            return None
        if not raised:
            return "done", ray.get(flight.refs[0])
        if len({type(getattr(e, "cause", e)) for e in raised}) > 1:
            return "lost", f"ranks failed differently: {_message(raised[0])}"
        return "error", raised[0]

    def run(self, tasks: Iterable[RenderTask]) -> Iterator[TaskResult]:
        """Render every task; yields one result per task, in completion order."""
        source, exhausted = iter(tasks), False
        queue: deque[RenderTask] = deque()
        attempts: dict[str, int] = {}
        flights: dict[str, _Flight] = {}
        while True:
            self._scale()
            bound = self.queue_size or 2 * max(1, len(self.groups))
            while not exhausted and len(queue) < bound:
                try:
                    queue.append(next(source))
                except StopIteration:
                    exhausted = True
            for name in [n for n in self.groups if n not in flights]:
                if not queue:
                    break
                task = queue.popleft()
                attempts[task.key] = attempts.get(task.key, 0) + 1
                flights[name] = _Flight(task, self.groups[name].submit(task.key, task.request, task.output,
                                                                       self.return_frames), time.monotonic())
                self._event("submitted", key=task.key, group=name, attempt=attempts[task.key])
            if not flights:
                if exhausted and not queue:
                    return
                if not self.groups:
                    raise PoolError("no render group is left and none can be placed")
                time.sleep(self.poll_s)
                continue
            ray.wait([r for f in flights.values() for r in f.refs], num_returns=1, timeout=self.poll_s)
            for name, flight in list(flights.items()):
                outcome = self._outcome(flight)
                if outcome is None:
                    continue
                del flights[name]
                kind, value = outcome
                task, tries = flight.task, attempts[flight.task.key]
                if kind == "done":
                    self._event("done", key=task.key, group=name, seconds=time.monotonic() - flight.started)
                    yield TaskResult(task.key, "done", task.output, value["stats"], None, tries, value)
                    continue
                if kind == "lost":
                    self._lose(name, value)
                    error = value
                else:
                    error = _message(value)
                final = kind == "error" and isinstance(getattr(value, "cause", value), RequestError)
                if final or tries >= self.max_attempts:
                    self._event("failed", key=task.key, attempts=tries, error=error)
                    yield TaskResult(task.key, "failed", task.output, None, error, tries)
                else:
                    self._event("retry", key=task.key, attempts=tries, error=error)
                    queue.appendleft(task)

    def shutdown(self) -> None:
        for name in list(self.groups):
            self.groups.pop(name).shutdown()

    def __enter__(self) -> RenderPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


def _error_of(ref: Any) -> Exception | None:
    try:
        ray.get(ref, timeout=0)
    except Exception as err:
        return err
    return None


def _message(err: RayTaskError) -> str:
    """The original exception, not Ray's wrapper: 'Type: message'."""
    cause = err.cause if getattr(err, "cause", None) is not None else err
    text = "".join(traceback.format_exception_only(type(cause), cause)).strip()
    return text.split("\n")[-1] if text else type(cause).__name__
