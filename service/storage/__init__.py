"""gradsweep's storage layer: sweeps, runs and loss curves in SQLite or PostgreSQL.

Callers get frozen records (`Sweep`, `Run`) and our exceptions (`StorageError`
and its subclasses), never SQLAlchemy's rows or errors.
"""

from gradsweep.service.domain.records import (
    ApiToken, AuditEntry, FINISHED_STATUSES, Job, LossWrite, Outcome, Role, Run, RUN_SORT_KEYS, RunConfig, RunFilter,
    RungLoss, RunPage, RunStatus, StartedJob, Sweep, SweepOverview,
)
from gradsweep.service.storage.access import TokenExists
from gradsweep.service.storage.errors import DatabaseUnavailable, NotFound, SchemaOutOfDate, StorageError, SweepActive
from gradsweep.service.storage.storage import Enqueue, Storage, alembic_config

__all__ = [
    "Enqueue",
    "alembic_config",
    "ApiToken",
    "AuditEntry",
    "Role",
    "TokenExists",
    "FINISHED_STATUSES",
    "DatabaseUnavailable",
    "Job",
    "LossWrite",
    "NotFound",
    "Outcome",
    "Run",
    "RUN_SORT_KEYS",
    "RunConfig",
    "RunFilter",
    "RunPage",
    "RunStatus",
    "RungLoss",
    "SchemaOutOfDate",
    "StartedJob",
    "Storage",
    "StorageError",
    "Sweep",
    "SweepActive",
    "SweepOverview",
]
