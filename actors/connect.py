"""Connecting to Ray the same way on a laptop and on a cluster."""

from __future__ import annotations

from typing import Any

import ray


def connect(address: str | None = "local", **kwargs: Any) -> None:
    """``"local"`` (default): an in-process Ray on this machine, no dashboard; ``"auto"``: the
    cluster this machine belongs to (for example under ``ray job submit``); or any address
    ``ray.init`` takes. A no-op when already connected."""
    if ray.is_initialized():
        return
    if address in (None, "local"):
        kwargs.setdefault("include_dashboard", False)
        ray.init(address="local", **kwargs)
    else:
        ray.init(address=address, **kwargs)
