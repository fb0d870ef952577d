from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import StorageDep
from service.api.schemas import Health
from service.storage import StorageError
from worker.queue import BrokerUnavailable, ping_broker

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
def healthz(storage: StorageDep) -> JSONResponse:
    """Whether the database and the broker answer; open even when an API token is set."""
    checks = {}
    for name, check in (("database", storage.ping), ("broker", ping_broker)):
        try:
            check()
            checks[name] = "ok"
        except (StorageError, BrokerUnavailable) as error:
            checks[name] = f"unavailable: {error}"
    healthy = all(value == "ok" for value in checks.values())
    return JSONResponse(checks, status_code=200 if healthy else 503)
