"""Who may use the API and what they did: named tokens with roles, and the audit log.

`Access` is one aggregate of `Storage` (which inherits it): its methods are transactions
of their own, like every public method of `Storage`. Sweep changes write their audit
entry through `audit` inside their own transaction, so an entry exists exactly when the
change does.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, insert, select, update
from sqlalchemy.exc import IntegrityError

from gradsweep.service.domain.records import ApiToken, AuditEntry, Role
from gradsweep.service.storage._rows import Aggregate
from gradsweep.service.storage.errors import NotFound, StorageError
from gradsweep.service.storage.models import ApiTokenRow, AuditEntryRow

__all__ = ["Access", "TOKEN_NAME_PATTERN", "TokenExists", "audit", "secret_digest"]

_TOKENS = cast(Table, ApiTokenRow.__table__)
_AUDIT = cast(Table, AuditEntryRow.__table__)
# A recognisable prefix lets secret scanners (and people) tell our tokens from other strings.
SECRET_PREFIX = "gsk_"
# A name goes into logs, the audit log and URLs (DELETE /tokens/{name}): plain characters only.
TOKEN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class TokenExists(StorageError):
    """A token of that name exists already (revoked or not: names are never reused, so the log stays clear)."""


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def audit(connection: Connection, actor: str, action: str, sweep_id: int | None = None,
          detail: str | None = None) -> None:
    """Adds an entry to the audit log, in the caller's transaction."""
    connection.execute(insert(_AUDIT).values(at=datetime.now(UTC), actor=actor, action=action, sweep_id=sweep_id,
                                             detail=detail))



class Access(Aggregate):
    """Tokens and the audit log: the access part of `Storage`."""

    def create_token(self, name: str, role: Role, *, actor: str) -> tuple[ApiToken, str]:
        """Makes a token and returns it with its secret, which is not kept and cannot be shown again."""
        if not re.fullmatch(TOKEN_NAME_PATTERN, name):
            raise ValueError("a token's name is 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit")
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        try:
            with self._transaction(write=True) as connection:
                if connection.scalar(select(_TOKENS.c.id).where(_TOKENS.c.name == name)) is not None:
                    raise TokenExists(f"a token named {name!r} exists already")
                connection.execute(insert(_TOKENS).values(
                    name=name, role=role.value, secret_sha256=secret_digest(secret), created_at=datetime.now(UTC),
                    created_by=actor))
                audit(connection, actor, "create token", detail=f"{name} ({role.value})")
                return _token(connection.execute(select(_TOKENS).where(_TOKENS.c.name == name)).one()), secret
        except StorageError as error:
            if isinstance(error.__cause__, IntegrityError):  # made at the same moment by another caller
                raise TokenExists(f"a token named {name!r} exists already") from error
            raise

    def list_tokens(self) -> list[ApiToken]:
        with self._transaction() as connection:
            return [_token(row) for row in connection.execute(select(_TOKENS).order_by(_TOKENS.c.id))]

    def revoke_token(self, name: str, *, actor: str) -> ApiToken:
        """Revokes the token from its next request on; revoking it again changes nothing."""
        with self._transaction(write=True) as connection:
            row = connection.execute(select(_TOKENS).where(_TOKENS.c.name == name).with_for_update()).first()
            if row is None:
                raise NotFound(f"no token named {name!r}")
            if row.revoked_at is None:
                connection.execute(update(_TOKENS).where(_TOKENS.c.id == row.id).values(revoked_at=datetime.now(UTC)))
                audit(connection, actor, "revoke token", detail=name)
            return _token(connection.execute(select(_TOKENS).where(_TOKENS.c.id == row.id)).one())

    def token_of(self, secret: str) -> ApiToken | None:
        """The active token whose secret this is, or None: one lookup by the secret's hash."""
        with self._transaction() as connection:
            row = connection.execute(select(_TOKENS).where(_TOKENS.c.secret_sha256 == secret_digest(secret),
                                                           _TOKENS.c.revoked_at.is_(None))).first()
            return None if row is None else _token(row)

    def has_active_tokens(self) -> bool:
        """Whether any token is active: then the API needs one on every data request."""
        with self._transaction() as connection:
            return connection.scalar(select(_TOKENS.c.id).where(_TOKENS.c.revoked_at.is_(None)).limit(1)) is not None

    def audit_log(self, *, limit: int, before: int | None = None,
                  sweep_id: int | None = None) -> list[AuditEntry]:
        """Entries newest first, at most `limit`, older than entry `before`, of one sweep if given."""
        query = select(_AUDIT).order_by(_AUDIT.c.id.desc()).limit(limit)
        if before is not None:
            query = query.where(_AUDIT.c.id < before)
        if sweep_id is not None:
            query = query.where(_AUDIT.c.sweep_id == sweep_id)
        with self._transaction() as connection:
            return [AuditEntry(id=row.id, at=row.at, actor=row.actor, action=row.action, sweep_id=row.sweep_id,
                               detail=row.detail) for row in connection.execute(query)]


def _token(row: Any) -> ApiToken:
    return ApiToken(name=row.name, role=Role(row.role), created_at=row.created_at, created_by=row.created_by,
                    revoked_at=row.revoked_at)
