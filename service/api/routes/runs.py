from typing import Annotated

from fastapi import APIRouter, Path

from service.api.deps import StorageDep
from service.api.schemas import RunDetail, RunPublic

router = APIRouter(tags=["runs"])
RunId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get("/runs/{run_id}", response_model=RunDetail)
def get_run(run_id: RunId, storage: StorageDep) -> RunDetail:
    """A run's config, status and the losses stored so far."""
    run = storage.get_run(run_id)
    return RunDetail(**RunPublic.of(run).model_dump(), losses=storage.run_losses(run_id).tolist())
