
from fastapi import APIRouter
from fastapi.responses import Response

from gradsweep.service.api.deps import Id, Points, StorageDep
from gradsweep.service.api.exports import losses_csv
from gradsweep.service.api.schemas import RunDetail, RunPublic
from gradsweep.service.domain.downsampling import min_max

router = APIRouter(tags=["runs"])


@router.get("/runs/{run_id}", response_model=RunDetail)
def get_run(run_id: Id, storage: StorageDep, points: Points = None) -> RunDetail:
    """A run's config, status and the losses stored so far (`?points=200` down-samples them)."""
    run, losses = storage.run_with_curve(run_id)
    if points is None:
        return RunDetail(**RunPublic.of(run).model_dump(), losses=losses.tolist())
    epochs, losses = min_max(losses, points)
    return RunDetail(**RunPublic.of(run).model_dump(), losses=losses.tolist(),
                     sampled_epochs=epochs.tolist())


@router.get("/runs/{run_id}/losses.csv", response_class=Response, responses={200: {"content": {"text/csv": {}}}})
def run_losses_csv(run_id: Id, storage: StorageDep, points: Points = None) -> Response:
    """One row per epoch, in the columns of `GET /sweeps/{id}/losses?format=csv`."""
    run, losses = storage.run_with_curve(run_id)
    disposition = f'attachment; filename="gradsweep-run-{run.id}.csv"'
    return Response(losses_csv([(run, losses)], points), media_type="text/csv",
                    headers={"Content-Disposition": disposition})
