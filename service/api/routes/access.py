"""Tokens and the audit log: who may use the API, and who changed what.

Managing tokens takes a write token (or an open API); `gradsweep token` does the same
straight on the database, which is how the first token is made.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from gradsweep.service.api.deps import StorageDep, WriterDep
from gradsweep.service.api.schemas import AuditEntryPublic, ErrorMessage, TokenCreate, TokenCreated, TokenPublic

router = APIRouter(tags=["access"])
MAX_PAGE = 1_000


@router.post("/tokens", response_model=TokenCreated, status_code=status.HTTP_201_CREATED,
             responses={409: {"model": ErrorMessage, "description": "a token of that name exists already"}})
def create_token(body: TokenCreate, storage: StorageDep, caller: WriterDep) -> TokenCreated:
    """Make a named token with a role; its secret is in this answer only."""
    token, secret = storage.create_token(body.name, body.role, actor=caller.name)
    return TokenCreated(**TokenPublic.of(token).model_dump(), token=secret)


@router.get("/tokens", response_model=list[TokenPublic])
def list_tokens(storage: StorageDep, caller: WriterDep) -> list[TokenPublic]:
    """Every token, revoked ones too, oldest first; never their secrets."""
    return [TokenPublic.of(token) for token in storage.list_tokens()]


@router.delete("/tokens/{name}", response_model=TokenPublic)
def revoke_token(name: str, storage: StorageDep, caller: WriterDep) -> TokenPublic:
    """Revoke a token: refused from its next request on, in every API process."""
    return TokenPublic.of(storage.revoke_token(name, actor=caller.name))


@router.get("/audit", response_model=list[AuditEntryPublic])
def audit_log(
    storage: StorageDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="only entries older than this id")] = None,
    sweep_id: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="only this sweep's entries")] = None,
) -> list[AuditEntryPublic]:
    """Who created, cancelled, retried or deleted sweeps and made or revoked tokens, newest first."""
    return [AuditEntryPublic.of(entry) for entry in storage.audit_log(limit=limit, before=before, sweep_id=sweep_id)]
