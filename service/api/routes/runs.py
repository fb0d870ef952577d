
from fastapi import APIRouter
from fastapi.responses import Response

from service.api.deps import Id, StorageDep
from service.api.exports import losses_csv
from service.api.schemas import RunDetail, RunPublic

router = APIRouter(tags=["runs"])


@router.get("/runs/{run_id}", response_model=RunDetail)
def get_run(run_id: Id, storage: StorageDep) -> RunDetail:
    """A run's config, status and the losses stored so far."""
    run = storage.get_run(run_id)
    return RunDetail(**RunPublic.of(run).model_dump(), losses=storage.run_losses(run_id).tolist())


@router.get("/runs/{run_id}/losses.csv", response_class=Response, responses={200: {"content": {"text/csv": {}}}})
def run_losses_csv(run_id: Id, storage: StorageDep) -> Response:
    """One row per epoch, in the columns of `GET /sweeps/{id}/losses?format=csv`."""
    run = storage.get_run(run_id)
    disposition = f'attachment; filename="gradsweep-run-{run.id}.csv"'
    return Response(losses_csv([(run, storage.run_losses(run_id))]), media_type="text/csv",
                    headers={"Content-Disposition": disposition})
