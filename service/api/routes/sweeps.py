from typing import Annotated, Literal

from fastapi import APIRouter, Query, status
from fastapi.responses import Response

from service.api.deps import EnqueueDep, Id, StorageDep
from service.api.exports import losses_csv
from service.api.schemas import RunCurvePublic, RunPublic, SweepCreate, SweepDetail, SweepLosses, SweepPublic
from service.batching import batch_sizes
from service.settings import get_settings

router = APIRouter(tags=["sweeps"])


@router.post("/sweeps", response_model=SweepDetail, status_code=status.HTTP_201_CREATED)
def create_sweep(body: SweepCreate, storage: StorageDep, enqueue: EnqueueDep) -> SweepDetail:
    """Store the grid's runs and queue them: all of them, or (on any error) none."""
    configs = body.run_configs()
    sizes = batch_sizes(configs, get_settings(), batched=body.batched)
    sweep, runs = storage.create_sweep(body.name, configs, enqueue, batch_sizes=sizes)
    return SweepDetail(**SweepPublic.of(sweep).model_dump(), runs=[RunPublic.of(run) for run in runs])


@router.get("/sweeps", response_model=list[SweepPublic])
def list_sweeps(storage: StorageDep) -> list[SweepPublic]:
    """Every sweep, newest first, with its progress."""
    return [SweepPublic.of(sweep) for sweep in storage.list_sweeps()]


@router.get("/sweeps/{sweep_id}", response_model=SweepDetail)
def get_sweep(sweep_id: Id, storage: StorageDep) -> SweepDetail:
    sweep = storage.get_sweep(sweep_id)
    runs = storage.list_runs(sweep_id)
    return SweepDetail(**SweepPublic.of(sweep).model_dump(), runs=[RunPublic.of(run) for run in runs])


@router.get("/sweeps/{sweep_id}/losses", response_model=SweepLosses,
            responses={200: {"content": {"text/csv": {}}}})
def sweep_losses(
    sweep_id: Id, storage: StorageDep, format: Annotated[Literal["json", "csv"], Query()] = "json"
) -> SweepLosses | Response:
    """Every run's loss curve; `?format=csv` gives one row per (run, epoch)."""
    runs = storage.list_runs(sweep_id)
    curves = storage.sweep_losses(sweep_id)
    if format == "csv":
        return Response(losses_csv((run, curves[run.id]) for run in runs), media_type="text/csv")
    return SweepLosses(sweep_id=sweep_id, runs=[
        RunCurvePublic(run_id=run.id, learning_rate=run.config.learning_rate, seed=run.config.seed,
                       optimizer=run.config.optimizer, status=run.status, losses=curves[run.id].tolist())
        for run in runs
    ])


@router.post("/sweeps/{sweep_id}/cancel", response_model=SweepPublic)
def cancel_sweep(sweep_id: Id, storage: StorageDep) -> SweepPublic:
    """Cancel queued and running runs; running ones stop at their next batch of losses."""
    storage.cancel_sweep(sweep_id)
    return SweepPublic.of(storage.get_sweep(sweep_id))


@router.post("/sweeps/{sweep_id}/retry", response_model=SweepPublic)
def retry_sweep(sweep_id: Id, storage: StorageDep, enqueue: EnqueueDep) -> SweepPublic:
    """Queue the failed and cancelled runs again."""
    storage.retry_sweep(sweep_id, enqueue)
    return SweepPublic.of(storage.get_sweep(sweep_id))
