from collections.abc import AsyncIterator
from itertools import chain
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request, status
from fastapi.responses import Response, StreamingResponse

from gradsweep.service.api.curve_cache import bounded_curves_json, content_encoding, streamed_curves_json
from gradsweep.service.api.deps import CurveCacheDep, EnqueueDep, Id, Points, StorageDep, WriterDep
from gradsweep.service.api.exports import PIECE_BYTES, csv_pieces, sweep_pages
from gradsweep.service.api.schemas import (
    ErrorMessage,
    Optimizer,
    RunPagePublic,
    RunPublic,
    SweepCreate,
    SweepLosses,
    SweepPublic,
    SweepSummary,
)
from gradsweep.service.domain.reference_lines import sweep_reference_lines
from gradsweep.service.settings import get_settings
from gradsweep.service.storage import RUN_SORT_KEYS, RunFilter, RunStatus, SweepOverview

router = APIRouter(tags=["sweeps"])
MAX_PAGE = 1_000
Status = Literal[tuple(status.value for status in RunStatus)]  # type: ignore[valid-type]
# A bound on an optimizer's constant (RANGED_PARAMETERS); a run without that constant matches none.
Bound = Annotated[float | None, Query(allow_inf_nan=False)]


@router.post("/sweeps", response_model=SweepSummary, status_code=status.HTTP_201_CREATED)
def create_sweep(body: SweepCreate, storage: StorageDep, enqueue: EnqueueDep, caller: WriterDep) -> SweepSummary:
    """Store the grid's runs and queue them: all of them, or (on any error) none. Its runs: `GET /sweeps/{id}/runs`."""
    return _summary(storage.create_planned_sweep(body.plan(get_settings()), enqueue, created_by=caller.name))


@router.get("/sweeps", response_model=list[SweepPublic])
def list_sweeps(
    request: Request, response: Response, storage: StorageDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="only sweeps older than this id")] = None,
) -> list[SweepPublic]:
    """Sweeps newest first, with their progress, `limit` a page.

    The next page is `?before=<the last id>`, also given in a `Link: <...>; rel="next"` header
    while there is one: a cursor, so that sweeps created meanwhile shift nothing.
    """
    sweeps = storage.list_sweeps(limit=limit + 1, before=before)
    if len(sweeps) > limit:
        sweeps = sweeps[:limit]
        next_page = request.url.include_query_params(limit=limit, before=sweeps[-1].id)
        response.headers["Link"] = f'<{next_page}>; rel="next"'
    return [SweepPublic.of(sweep) for sweep in sweeps]


@router.get("/sweeps/{sweep_id}", response_model=SweepSummary)
def get_sweep(sweep_id: Id, storage: StorageDep) -> SweepSummary:
    """The sweep's progress, its best run so far and its data's reference lines, without its runs."""
    return _summary(storage.sweep_overview(sweep_id))


@router.get("/sweeps/{sweep_id}/runs", response_model=RunPagePublic)
def sweep_runs(
    sweep_id: Id, storage: StorageDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
    sort: Annotated[Literal[RUN_SORT_KEYS], Query()] = "id",  # type: ignore[valid-type]
    order: Annotated[Literal["asc", "desc"], Query()] = "asc",
    status: Annotated[list[Status] | None, Query(description="repeat for several")] = None,
    optimizer: Annotated[list[Optimizer] | None, Query(description="repeat for several")] = None,
    min_learning_rate: Annotated[float | None, Query(gt=0, allow_inf_nan=False)] = None,
    max_learning_rate: Annotated[float | None, Query(gt=0, allow_inf_nan=False)] = None,
    min_beta: Bound = None, max_beta: Bound = None, min_beta1: Bound = None, max_beta1: Bound = None,
    min_beta2: Bound = None, max_beta2: Bound = None, min_eps: Bound = None, max_eps: Bound = None,
) -> RunPagePublic:
    """A page of the sweep's runs, filtered and sorted; runs without a loss yet come last.

    Paged by offset: a sweep's runs are all created with it, so pages never shift under
    new runs, and a table can jump to any page.
    """
    bounds = {"beta": (min_beta, max_beta), "beta1": (min_beta1, max_beta1), "beta2": (min_beta2, max_beta2),
              "eps": (min_eps, max_eps)}
    where = RunFilter(statuses=None if status is None else tuple(RunStatus(s) for s in status),
                      optimizers=None if optimizer is None else tuple(optimizer),
                      min_learning_rate=min_learning_rate, max_learning_rate=max_learning_rate,
                      ranges=tuple((name, low, high) for name, (low, high) in bounds.items()
                                   if low is not None or high is not None))
    page = storage.runs_page(sweep_id, limit=limit, offset=offset, sort=sort, descending=order == "desc", where=where)
    return RunPagePublic(total=page.total, offset=offset, limit=limit, runs=[RunPublic.of(run) for run in page.runs])


@router.get("/sweeps/{sweep_id}/losses", response_model=SweepLosses,
            responses={200: {"content": {"text/csv": {}}}, 304: {"description": "unchanged since the ETag given"}})
def sweep_losses(
    request: Request, sweep_id: Id, storage: StorageDep, cache: CurveCacheDep,
    format: Annotated[Literal["json", "csv"], Query()] = "json", points: Points = None,
    if_none_match: Annotated[str | None, Header(description="an ETag of an earlier answer")] = None,
) -> Response:
    """Every run's loss curve; `?format=csv` gives one row per (run, epoch); `?points=200` down-samples each.

    The ETag names the sweep's state: asked again with `If-None-Match`, an unchanged
    sweep answers 304 and no curve, which is what a browser does by itself with `no-cache`.
    The JSON comes compressed (zstd, else gzip) to a client whose `Accept-Encoding` takes it.
    The CSV and every epoch's JSON are read and sent a page of runs at a time, without a
    Content-Length: the API never holds a whole sweep's curves (service/api/exports.py).
    """
    if format == "csv":
        return StreamingResponse(csv_pieces(chain.from_iterable(sweep_pages(storage, sweep_id)), points),
                                 media_type="text/csv")
    version = storage.sweep_version(sweep_id)
    encoding = content_encoding(request.headers.get("accept-encoding"))
    headers = {"ETag": f'"{sweep_id}-{points or "all"}-{version}{f"-{encoding}" if encoding else ""}"',
               "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if if_none_match is not None and headers["ETag"] in {tag.strip() for tag in if_none_match.split(",")}:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    if encoding:
        headers["Content-Encoding"] = encoding
    # Encoded by orjson, not by the response model: 10,000 curves through pydantic take seconds.
    body = bounded_curves_json(storage, cache, sweep_id, points, version, encoding)
    if body is None:
        return StreamingResponse(streamed_curves_json(storage, sweep_id, points, encoding),
                                 media_type="application/json", headers=headers)
    headers["Content-Length"] = str(len(body))
    return StreamingResponse(_pieces(memoryview(body)), media_type="application/json", headers=headers)


async def _pieces(body: memoryview) -> AsyncIterator[memoryview]:
    """The answer a piece at a time: between two, the server answers other requests, rather than
    every one of them waiting for 50 MB of curves to be written out."""
    for start in range(0, len(body), PIECE_BYTES):
        yield body[start:start + PIECE_BYTES]


@router.delete("/sweeps/{sweep_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               responses={409: {"model": ErrorMessage, "description": "the sweep has running runs: cancel it first"}})
def delete_sweep(sweep_id: Id, storage: StorageDep, caller: WriterDep) -> Response:
    """Delete the sweep with its runs and their losses; refused (409) while any run is running."""
    storage.delete_sweep(sweep_id, actor=caller.name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/sweeps/{sweep_id}/cancel", response_model=SweepPublic)
def cancel_sweep(sweep_id: Id, storage: StorageDep, caller: WriterDep) -> SweepPublic:
    """Cancel queued and running runs; running ones stop at their next batch of losses."""
    storage.cancel_sweep(sweep_id, actor=caller.name)
    return SweepPublic.of(storage.get_sweep(sweep_id))


@router.post("/sweeps/{sweep_id}/retry", response_model=SweepPublic)
def retry_sweep(sweep_id: Id, storage: StorageDep, enqueue: EnqueueDep, caller: WriterDep) -> SweepPublic:
    """Queue the failed and cancelled runs again."""
    storage.retry_sweep(sweep_id, enqueue, actor=caller.name)
    return SweepPublic.of(storage.get_sweep(sweep_id))


def _summary(overview: SweepOverview) -> SweepSummary:
    task, best = overview.task, overview.best_run
    optimum, limit = sweep_reference_lines(task, overview.search)
    return SweepSummary(
        **SweepPublic.of(overview.sweep).model_dump(), n_jobs=overview.n_jobs,
        best_run=None if best is None else RunPublic.of(best), n_samples=task.n_samples,
        n_features=task.n_features, data_seed=task.data_seed, least_squares_loss=optimum, stability_limit=limit,
        search=None if overview.search is None else overview.search.stored(),
    )
