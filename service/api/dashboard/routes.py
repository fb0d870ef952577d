"""The dashboard: HTML pages over the same storage as the JSON API.

Every page is rendered here, from one Jinja2 template, whether or not the API
needs a token. A browser cannot put `Authorization` on a page it navigates to,
so with GRADSWEEP_API_TOKEN set a page request without the header gets only the
page's *shell*: the layout, with no data. dashboard.js then asks for the token
once, keeps it in sessionStorage, and requests the same URL again with the
header and `X-Gradsweep-Fragment: 1`; the answer is the page's content alone,
which the script puts in place. Without a token the content comes with the page.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates

from gradsweep.service.api.dashboard.constants import (
    BROWSER, FRAGMENT_HEADER, RUNS_PAGE_SIZE, STATUS_COLORS, SWEEPS_PAGE_SIZE, status_name,
)
from gradsweep.service.api.deps import ANONYMOUS, Id, StorageDep, authenticate
from gradsweep.service.api.schemas import sweep_status
from gradsweep.service.domain.reference_lines import reference_lines, sweep_reference_lines
from gradsweep.service.domain.records import PARAMETER_SORT_KEYS, RANGED_PARAMETERS
from gradsweep.service.domain.search import swept_parameters
from gradsweep.service.domain.text import divergence_text, human_number
from gradsweep.service.storage import RUN_SORT_KEYS, NotFound, RunFilter, Storage, StorageError

__all__ = ["COMPARE_LIMIT", "STATIC_DIR", "router"]

logger = logging.getLogger(__name__)

DASHBOARD_DIR = Path(__file__).resolve().parent
STATIC_DIR = DASHBOARD_DIR / "static"
COMPARE_CHOICES = 200
# A page past the last shows the last; beyond this a page number is refused (422), as the offset
# it makes, page × RUNS_PAGE_SIZE, must stay a 64-bit integer for the database.
MAX_PAGE_NUMBER = 1_000_000
COMPARE_LIMIT = 20  # as many sweeps as /compare/plot.png takes
RunSort = Literal[RUN_SORT_KEYS]  # type: ignore[valid-type]
Order = Literal["asc", "desc"]
Page = Annotated[int, Query(ge=1, le=MAX_PAGE_NUMBER)]
# The runs table's filters, as GET /sweeps/{id}/runs takes them: ?min_beta=0.6&max_beta=0.9 (issue 24).
FILTERED = ("learning_rate", *RANGED_PARAMETERS)
# The parameters with a column of their own in the runs table whenever a sweep varies them, after the
# learning rate, seed and optimizer, which every table has; as the charts name them.
PARAMETER_COLUMNS = {"epochs": "Epochs", "beta": "beta", "beta1": "beta1", "beta2": "beta2", "eps": "eps",
                     "n_samples": "Samples", "n_features": "Features", "data_seed": "Data seed"}
assert set(PARAMETER_COLUMNS) <= set(PARAMETER_SORT_KEYS)


# The pages are open: each one checks the token itself, see `_render`.
router = APIRouter(include_in_schema=False)


# ---- formatting, shared by every template ----


def format_loss(value: float | None) -> str:
    """Scientific with four significant digits."""
    return "—" if value is None else f"{value:.3e}"


def format_learning_rate(value: float) -> str:
    return human_number(value)


def format_parameter(value: float | str | None) -> str:
    """A parameter's value in a table: a number for people (0.936), a name, or "none" (sgd has no beta)."""
    if value is None:
        return "none"
    return value if isinstance(value, str) else human_number(value)


def format_age(moment: datetime) -> str:
    seconds = (datetime.now(UTC) - moment).total_seconds()
    for unit, size in (("day", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if unit == 'day' and count > 1 else ''} ago"
    return "just now"


def format_time(moment: datetime | None) -> str:
    return "—" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


templates = Jinja2Templates(directory=DASHBOARD_DIR / "templates")
templates.env.filters.update(loss=format_loss, lr=format_learning_rate, age=format_age, time=format_time,
                             status_name=status_name, parameter=format_parameter, divergence=divergence_text)
# What base.html gives every page: the scripts' constants (a JSON block) and the statuses' colours (CSS).
templates.env.globals.update(browser_constants=BROWSER, status_colors=STATUS_COLORS)


# ---- pages ----


@router.get("/")
def sweeps_page(request: Request, storage: StorageDep, page: Page = 1) -> Response:
    """Every sweep, newest first, SWEEPS_PAGE_SIZE to a page."""
    return _render(request, storage, "sweeps.html", lambda: _sweeps_context(storage, page))


@router.get("/ui/sweeps/{sweep_id}")
def sweep_page(
    request: Request, sweep_id: Id, storage: StorageDep, page: Page = 1,
    sort: RunSort = "id", order: Order = "asc",
) -> Response:
    """The sweep, its charts, and one page of its runs table in the order asked for."""
    filters = _filters(request)
    return _render(request, storage, "sweep.html", lambda: _sweep_context(storage, sweep_id, page, sort, order, filters))


@router.get("/ui/sweeps/{sweep_id}/runs")
def runs_table(
    request: Request, sweep_id: Id, storage: StorageDep, page: Page = 1,
    sort: RunSort = "id", order: Order = "asc",
) -> Response:
    """The sweep page's runs table alone: what dashboard.js puts in place to page, sort, filter and follow a sweep."""
    filters = _filters(request)

    def context() -> dict[str, Any]:
        parameters = swept_parameters(storage.sweep_overview(sweep_id).search)
        return _runs_table_context(storage, sweep_id, page, sort, order, filters, parameters)

    return _render(request, storage, "runs_table.html", context)


@router.get("/ui/runs/{run_id}")
def run_page(request: Request, run_id: Id, storage: StorageDep) -> Response:
    return _render(request, storage, "run.html", lambda: _run_context(storage, run_id))


@router.get("/ui/compare")
def compare_page(request: Request, storage: StorageDep, sweep: Annotated[list[int], Query()] = []) -> Response:
    """`?sweep=1&sweep=2`: what the page's checkboxes submit."""
    return _render(request, storage, "compare.html", lambda: _compare_context(storage, sweep))


@router.get("/ui/tokens")
def tokens_page(request: Request, storage: StorageDep) -> Response:
    """The API's named tokens, to make and revoke; a read token is shown that it may not."""
    return _render(request, storage, "tokens.html", lambda: {"nav": "tokens", "tokens": storage.list_tokens()},
                   needs_write=True)


def _sweeps_context(storage: Storage, page: int) -> dict[str, Any]:
    sweeps = storage.list_sweeps()
    page_count = max(1, math.ceil(len(sweeps) / SWEEPS_PAGE_SIZE))
    page = min(page, page_count)
    shown = sweeps[(page - 1) * SWEEPS_PAGE_SIZE: page * SWEEPS_PAGE_SIZE]
    best = storage.best_runs([sweep.id for sweep in shown])
    rows = [(sweep, best.get(sweep.id)) for sweep in shown]
    return {"nav": "sweeps", "rows": rows, "total": len(sweeps), "page": page, "page_count": page_count}


def _filters(request: Request) -> dict[str, tuple[float | None, float | None]]:
    """The runs table's bounds in the query (`min_beta`, `max_learning_rate`…), by parameter; a bound that is not a
    finite number is refused (422), as the JSON API refuses it."""
    filters = {}
    for name in FILTERED:
        bounds = []
        for side in ("min", "max"):
            text = request.query_params.get(f"{side}_{name}", "").strip()
            try:
                bound = float(text) if text else None
            except ValueError:
                bound = math.nan
            if bound is not None and not math.isfinite(bound):
                raise HTTPException(422, f"{side}_{name} must be a number")
            bounds.append(bound)
        if bounds != [None, None]:
            filters[name] = (bounds[0], bounds[1])
    return filters


def _sweep_context(storage: Storage, sweep_id: int, page: int, sort: str, order: str,
                   filters: dict[str, tuple[float | None, float | None]]) -> dict[str, Any]:
    overview = storage.sweep_overview(sweep_id)  # the sweep and its task (every run's), in one transaction
    sweep, config = overview.sweep, overview.task
    parameters = swept_parameters(overview.search)  # the charts offer those on which the runs do differ
    optimum, limit = sweep_reference_lines(config, overview.search)
    return {"nav": "sweeps", "sweep": sweep, "status": sweep_status(sweep), "epochs": config.epochs,
            "planned_runs": overview.planned_runs, "optimum": optimum, "stability_limit": limit,
            "parameters": parameters, **_runs_table_context(storage, sweep_id, page, sort, order, filters, parameters)}


def _runs_table_context(storage: Storage, sweep_id: int, page: int, sort: str, order: str,
                        filters: dict[str, tuple[float | None, float | None]], parameters: list[str]) -> dict[str, Any]:
    """One page of the runs that pass `filters`, sorted by the database; a page past the end shows the last one.
    A column for each parameter the sweep varies, and a filter for each of those the API filters by."""
    lr = filters.get("learning_rate", (None, None))
    where = RunFilter(min_learning_rate=lr[0], max_learning_rate=lr[1],
                      ranges=tuple((name, *bounds) for name, bounds in filters.items() if name != "learning_rate"))

    def rows(page: int):
        return storage.runs_page(sweep_id, limit=RUNS_PAGE_SIZE, offset=(page - 1) * RUNS_PAGE_SIZE,
                                 sort=sort, descending=order == "desc", where=where)

    shown = rows(page)
    page_count = max(1, math.ceil(shown.total / RUNS_PAGE_SIZE))
    if page > page_count:
        page, shown = page_count, rows(page_count)
    columns = {name: label for name, label in PARAMETER_COLUMNS.items() if name in parameters}
    filterable = [name for name in FILTERED if name in parameters or name in filters]
    query = "".join(f"&{side}_{name}={bound}" for name, bounds in filters.items()
                    for side, bound in zip(("min", "max"), bounds) if bound is not None)
    return {"sweep_id": sweep_id, "runs": shown.runs, "total": shown.total, "page": page, "page_count": page_count,
            "sort": sort, "order": order, "runs_per_page": RUNS_PAGE_SIZE, "columns": columns,
            "filterable": filterable, "filters": filters, "filter_query": query}


def _run_context(storage: Storage, run_id: int) -> dict[str, Any]:
    run = storage.get_run(run_id)
    config = run.config
    overview = storage.sweep_overview(run.sweep_id)
    optimum, _ = reference_lines(config.n_samples, config.n_features, config.data_seed)
    # The parameters its sweep searched first, then the optimizer's other constants it trained with.
    searched = [name for name in PARAMETER_COLUMNS if name in swept_parameters(overview.search)]
    constants = [name for name in config.constants if name not in searched]
    return {"nav": "sweeps", "run": run, "sweep": overview.sweep, "optimum": optimum, "searched": searched,
            "constants": constants, "labels": PARAMETER_COLUMNS}


def _compare_context(storage: Storage, ids: list[int]) -> dict[str, Any]:
    sweeps = storage.list_sweeps()
    by_id = {sweep.id: sweep for sweep in sweeps}
    selected = list(dict.fromkeys(ids))  # in the order given, once each
    # The newest sweeps to choose from, and any older one already chosen.
    newest = sweeps[:COMPARE_CHOICES]
    listed = {sweep.id for sweep in newest}
    choices = newest + [by_id[i] for i in selected if i in by_id and i not in listed]
    unknown = [i for i in selected if i not in by_id]
    problem = None
    if unknown:
        problem = f"No sweep {', '.join(map(str, unknown))}."
    elif len(selected) > COMPARE_LIMIT:
        problem = f"Pick at most {COMPARE_LIMIT} sweeps; {len(selected)} were picked."
    plot_url = f"/compare/plot.png?sweeps={','.join(map(str, selected))}" if selected and not problem else None
    return {"nav": "compare", "choices": choices, "selected": set(selected), "problem": problem,
            "plot_url": plot_url, "limit": COMPARE_LIMIT}


@router.get("/ui/vendor/plotly.min.js")
def plotly_js() -> Response:
    """Open like /ui/static: it holds no data. Cached for a year, as its URL changes with its version."""
    return Response(_plotly_js(), media_type="text/javascript",
                    headers={"Cache-Control": "public, max-age=31536000, immutable"})


@lru_cache(maxsize=1)
def _plotly_js() -> bytes:
    return (resources.files("plotly") / "package_data" / "plotly.min.js").read_bytes()


def _render(request: Request, storage: Storage, template: str, context: Callable[[], dict[str, Any]], *,
            needs_write: bool = False) -> Response:
    """The page, its content alone (a fragment, for dashboard.js), or its shell when a token is missing."""
    fragment = request.headers.get(FRAGMENT_HEADER) == "1"
    try:
        caller = authenticate(request.headers.get("authorization"), storage)
    except HTTPException:
        if fragment:
            raise  # a 401 tells the script to ask for the token again
        return _respond(request, "base.html", {"shell": True, "token_required": True}, fragment=False)
    except StorageError as error:
        return _unavailable(request, error, fragment)
    # What the caller may do decides what the page offers: a read token sees no buttons that would be refused.
    access = {"token_required": caller is not ANONYMOUS, "can_write": caller.can_write}
    if needs_write and not caller.can_write:
        message = {"heading": "A write token is needed", "message": f"Token {caller.name} may only read."}
        return _respond(request, "message.html", access | message, fragment=fragment, status_code=403)
    try:
        return _respond(request, template, access | context(), fragment=fragment)
    except NotFound as error:
        message = {"heading": "Not found", "message": f"There is {error}."}
        return _respond(request, "message.html", access | message, fragment=fragment, status_code=404)
    except StorageError as error:
        return _unavailable(request, error, fragment)


def _unavailable(request: Request, error: StorageError, fragment: bool) -> Response:
    logger.warning("dashboard: the database is unavailable: %s", error)  # the error's text is for the log only
    message = {"heading": "The database is unavailable", "message": "Try again shortly.", "token_required": False}
    return _respond(request, "message.html", message, fragment=fragment, status_code=503)


def _respond(
    request: Request, template: str, context: dict[str, Any], *, fragment: bool, status_code: int = 200
) -> Response:
    context = {"layout": "fragment.html" if fragment else "base.html", "can_write": False, **context}
    # One URL answers with a page, a shell or a fragment: caches must tell them apart, or better not keep them.
    headers = {"Cache-Control": "no-store", "Vary": f"Authorization, {FRAGMENT_HEADER}"}
    return templates.TemplateResponse(request, template, context, status_code=status_code, headers=headers)
