"""gradsweep: distributed hyperparameter sweeps on a small reverse-mode autodiff engine.

Installing gradsweep claims this one import name. The project's folders are its parts:
`gradsweep.engine` (the autodiff engine and its tasks; numpy only), `gradsweep.service`
(the sweep domain, storage, the HTTP API and its dashboard, the command line) and
`gradsweep.worker` (the Celery app and its tasks). A notebook needs one line:

    from gradsweep import Client
"""

from typing import Any

__all__ = ["ApiError", "Client"]


def __getattr__(name: str) -> Any:
    # Imported when asked for: `import gradsweep.engine` stays numpy only, without the client's httpx.
    if name in __all__:
        from gradsweep.service import client

        return getattr(client, name)
    raise AttributeError(f"module 'gradsweep' has no attribute {name!r}")
