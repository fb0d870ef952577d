"""What routes receive by injection: the storage, the queue, the caller's credentials.

Tests and other deployments override these through `app.dependency_overrides`.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Path, Query, status

from gradsweep.service.api.curve_cache import CurveCache
from gradsweep.service.settings import get_settings
from gradsweep.service.storage import Job, Role, Storage


@lru_cache
def get_storage() -> Storage:
    return Storage(get_settings().database_url)


@lru_cache
def get_curve_cache() -> CurveCache:
    return CurveCache(get_settings().curve_cache_bytes)


def get_enqueue() -> Callable[[Sequence[Job]], None]:
    from gradsweep.worker.queue import enqueue_jobs  # imported late: building the Celery app reads the settings

    return enqueue_jobs


StorageDep = Annotated[Storage, Depends(get_storage)]
CurveCacheDep = Annotated[CurveCache, Depends(get_curve_cache)]
# A sweep's or a run's id in a path: ids are positive 64-bit integers, and anything else is a 422, not a 500.
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]
# `?points=N`: curves down-sampled to at most N points each (see service/domain/downsampling.py); none: every epoch.
Points = Annotated[int | None, Query(ge=2, le=100_000, description="at most this many points per curve, "
                                     "each bucket of epochs keeping its min and max; every epoch when absent")]
EnqueueDep = Annotated[Callable[[Sequence[Job]], None], Depends(get_enqueue)]


@dataclass(frozen=True)
class Caller:
    """Who is calling: the token's name and role. Without any token configured, everyone is the
    `anonymous` writer, which `gradsweep api` allows on loopback only."""

    name: str
    role: Role

    @property
    def can_write(self) -> bool:
        return self.role is Role.WRITE


ENV_TOKEN_NAME = "GRADSWEEP_API_TOKEN"
ANONYMOUS = Caller("anonymous", Role.WRITE)


def authenticate(authorization: str | None, storage: Storage) -> Caller:
    """The caller an `Authorization: Bearer <token>` header names; 401 unless it names an active token.

    With no token at all (neither GRADSWEEP_API_TOKEN nor a named one) the API is open. Named
    tokens are read from the database on each request, so one made or revoked by
    `gradsweep token` counts at once, in every API process.
    """
    expected = get_settings().api_token
    scheme, _, given = (authorization or "").partition(" ")
    given = given.strip() if scheme.lower() == "bearer" else ""
    # compare_digest takes as long for a wrong token as for a right one.
    if expected and given and hmac.compare_digest(given.encode(), expected.encode()):
        return Caller(ENV_TOKEN_NAME, Role.WRITE)
    if given:
        token = storage.token_of(given)  # looked up by its SHA-256: no secret is compared byte by byte
        if token is not None:
            return Caller(token.name, token.role)
    elif not expected and not storage.has_active_tokens():
        return ANONYMOUS
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED, "a valid API token is required", headers={"WWW-Authenticate": "Bearer"}
    )


def get_caller(storage: StorageDep, authorization: Annotated[str | None, Header()] = None) -> Caller:
    return authenticate(authorization, storage)


def require_write(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    if not caller.can_write:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"token {caller.name!r} may only read: this needs a write token")
    return caller


# FastAPI resolves get_caller once per request, however many dependencies name it.
CallerDep = Annotated[Caller, Depends(get_caller)]
WriterDep = Annotated[Caller, Depends(require_write)]
