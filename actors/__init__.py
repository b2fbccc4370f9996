"""Ray actors: render groups (P ranks, one torch.distributed group) and the pool that feeds them.

Ray lives here (and in the entry points that start it); pipeline/ never imports it.
"""

from actors.connect import connect
from actors.pool import PoolError, RenderPool, RenderTask, TaskResult
from actors.render_group import GroupSpec, GroupUnavailable, RenderGroup

__all__ = [
    "GroupSpec",
    "GroupUnavailable",
    "PoolError",
    "RenderGroup",
    "RenderPool",
    "RenderTask",
    "TaskResult",
    "connect",
]
