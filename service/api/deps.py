"""What routes receive by injection: the storage, the queue, the caller's credentials.

Tests and other deployments override these through `app.dependency_overrides`.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Path, Query, status

from service.api.curve_cache import CurveCache
from service.settings import get_settings
from service.storage import Job, Storage


@lru_cache
def get_storage() -> Storage:
    return Storage(get_settings().database_url)


@lru_cache
def get_curve_cache() -> CurveCache:
    return CurveCache(get_settings().curve_cache_bytes)


def get_enqueue() -> Callable[[Sequence[Job]], None]:
    from worker.queue import enqueue_jobs  # imported late: building the Celery app reads the settings

    return enqueue_jobs


StorageDep = Annotated[Storage, Depends(get_storage)]
CurveCacheDep = Annotated[CurveCache, Depends(get_curve_cache)]
# A sweep's or a run's id in a path: ids are positive 64-bit integers, and anything else is a 422, not a 500.
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]
# `?points=N`: curves down-sampled to at most N points each (see service/downsampling.py); none: every epoch.
Points = Annotated[int | None, Query(ge=2, le=100_000, description="at most this many points per curve, "
                                     "each bucket of epochs keeping its min and max; every epoch when absent")]
EnqueueDep = Annotated[Callable[[Sequence[Job]], None], Depends(get_enqueue)]


def require_token(authorization: Annotated[str | None, Header()] = None) -> None:
    """With GRADSWEEP_API_TOKEN set, every request must carry `Authorization: Bearer <token>`."""
    expected = get_settings().api_token
    if not expected:
        return
    scheme, _, given = (authorization or "").partition(" ")
    # compare_digest takes as long for a wrong token as for a right one.
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "a valid API token is required", headers={"WWW-Authenticate": "Bearer"}
        )
