import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from gradsweep.service.api.deps import StorageDep
from gradsweep.service.api.schemas import Health
from gradsweep.service.storage import StorageError
from gradsweep.worker.queue import BrokerUnavailable, ping_broker

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
def healthz(storage: StorageDep) -> JSONResponse:
    """Whether the database and the broker answer; open even when an API token is set.

    Open, so it says only which part is down: an error's text names hosts, ports and
    users, which is for the operator's log, not for anyone who can reach the port.
    """
    checks = {}
    for name, check in (("database", storage.ping), ("broker", ping_broker)):
        try:
            check()
            checks[name] = "ok"
        except (StorageError, BrokerUnavailable) as error:
            log.warning("health check: the %s is unavailable: %s", name, error)
            checks[name] = "unavailable"
    healthy = all(value == "ok" for value in checks.values())
    return JSONResponse(checks, status_code=200 if healthy else 503)
