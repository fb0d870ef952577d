"""Starting the service's processes on this machine: a free port for the API, and waiting until it answers.

The demo starts its API and worker with these; the tests and the benchmarks start theirs with the same
(tests/support/processes.py).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import httpx

__all__ = ["answering", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answering(get: Callable[[], httpx.Response], healthy: bool = True, timeout: float = 60) -> bool:
    """Whether `get()` (a GET /healthz) answered 200 (or, unless `healthy`, anything) within `timeout` seconds,
    tried every 0.2 s: a server process just started is up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if get().status_code == 200 or not healthy:
                return True
        except httpx.TransportError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
