"""A client of the HTTP API, for notebooks, scripts and the CLI.

    from gradsweep import Client
    client = Client()                     # GRADSWEEP_API_URL and GRADSWEEP_API_TOKEN, as the CLI reads them
    sweep = client.submit(learning_rates=[1e-3, 1e-2, 5e-2], seeds=range(5), optimizers=["sgd", "adam"])
    client.wait(sweep["id"])              # a progress bar until no run is queued or running
    runs = client.runs_frame(sweep["id"])  # pandas: one row per run (`runs()` gives plain dicts)
    curves = client.curves_frame(sweep["id"], points=200)  # one row per (run, epoch)

The API's errors become `ApiError`: its `status_code`, and its `reason` in the user's words (a refused
body's fields named as the request wrote them). The DataFrames need pandas
(`pip install 'gradsweep[notebook]'`); every other method returns plain lists, dicts and
numpy arrays.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gradsweep.service.settings import get_settings

if TYPE_CHECKING:
    import pandas

MAX_PAGE = 1000  # the most runs or sweeps the API gives in one page
RUN_COLUMNS = ["id", "point", "learning_rate", "seed", "optimizer", "status", "epochs", "epochs_done", "final_loss",
               "best_loss", "diverged_at", "attempts", "worker", "batch", "n_samples", "n_features", "data_seed",
               "mode", "beta", "beta1", "beta2", "eps", "error", "created_at", "started_at", "finished_at"]


class ApiError(Exception):
    """The API refused a request (`status_code`, its HTTP status), or could not be reached (`status_code` None).

    `reason` is the API's reason in the user's words: a refused body names each field as the user wrote it
    (`learning_rates[0] = -1.0: Input should be greater than 0`), not the validator's internals. The message
    says the request and the status before it: `POST /sweeps: HTTP 422: learning_rates[0] = -1.0: ...`.
    """

    def __init__(self, message: str, status_code: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.reason = message if reason is None else reason


class Client:
    def __init__(self, base_url: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        settings = get_settings()
        token = token if token is not None else settings.api_token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url or settings.api_url, headers=headers, timeout=timeout)

    # ---- HTTP ----

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self._send("GET", path, params=params)

    def post(self, path: str, json: Any = None) -> httpx.Response:
        return self._send("POST", path, json=json)

    def delete(self, path: str) -> httpx.Response:
        return self._send("DELETE", path)

    # ---- sweeps ----

    def submit(self, learning_rates: Iterable[float] | dict, seeds: Iterable[int] = (0,), epochs: int = 300,
               optimizers: Iterable[str] = ("sgd",), name: str = "sweep", **options: Any) -> dict:
        """Create a sweep (the body of `POST /sweeps`; `options`: n_samples, n_features, data_seed, mode,
        batched); returns its summary."""
        lrs = learning_rates if isinstance(learning_rates, dict) else [float(lr) for lr in learning_rates]
        body = {"name": name, "learning_rates": lrs, "seeds": [int(seed) for seed in seeds], "epochs": epochs,
                "optimizers": list(optimizers), **options}
        return self.post("/sweeps", json=body).json()

    def search(self, parameters: dict, method: str = "random", run_cap: int | None = None, search_seed: int = 0,
               name: str = "search", **options: Any) -> dict:
        """Create a search (`POST /sweeps` with `parameters`, as a sweep file holds them, see the README):
        `client.search({"learning_rate": {"distribution": "log_uniform", "min": 1e-3, "max": 1},
        "epochs": {"value": 1000}}, run_cap=30)`; returns its summary."""
        cap = {} if run_cap is None else {"run_cap": run_cap}
        body = {"name": name, "method": method, "parameters": parameters, "search_seed": search_seed, **cap, **options}
        return self.post("/sweeps", json=body).json()

    def sweep(self, sweep_id: int) -> dict:
        """The sweep's summary: counts, best run so far, its data's optimum and stability limit."""
        return self.get(f"/sweeps/{sweep_id}").json()

    def sweeps(self, limit: int | None = None) -> list[dict]:
        """Sweeps newest first, every one (or the `limit` newest), following the API's pages."""
        found: list[dict] = []
        params: dict[str, Any] = {"limit": min(limit or MAX_PAGE, MAX_PAGE)}
        while True:
            response = self.get("/sweeps", **params)
            found += response.json()
            if "next" not in response.links or (limit is not None and len(found) >= limit):
                return found[:limit]
            params["before"] = found[-1]["id"]

    def wait(self, sweep_id: int, poll_seconds: float = 0.5, progress: bool = True,
             console: Console | None = None) -> dict:
        """Poll the sweep's summary until no run is queued or running (with a progress bar); returns it."""
        columns = (TextColumn("[bold]sweep {task.fields[sweep]}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("runs"), TimeElapsedColumn())
        with Progress(*columns, console=console, disable=not progress) as bar:
            task = None
            while True:
                sweep = self.sweep(sweep_id)
                if task is None:
                    task = bar.add_task("", total=sweep["planned_runs"], sweep=sweep_id)
                # A Bayesian search's waves come one after the other: its total is planned from the start, and
                # shrinks to the runs it has if it is cancelled before its last wave.
                bar.update(task, completed=sweep["n_finished"], total=sweep["planned_runs"])
                if sweep["status"] == "finished":
                    return sweep
                time.sleep(poll_seconds)

    def cancel(self, sweep_id: int) -> dict:
        """Cancel the sweep's queued and running runs and a search's waves to come; returns its counts after."""
        return self.post(f"/sweeps/{sweep_id}/cancel").json()

    def retry(self, sweep_id: int) -> dict:
        """Queue the sweep's failed and cancelled runs again; returns its counts after."""
        return self.post(f"/sweeps/{sweep_id}/retry").json()

    def delete_sweep(self, sweep_id: int) -> None:
        """Delete the sweep, its runs and their losses (the API refuses while a run is running)."""
        self.delete(f"/sweeps/{sweep_id}")

    # ---- runs and curves ----

    def runs(self, sweep_id: int, page_size: int = MAX_PAGE, **filters: Any) -> list[dict]:
        """Every run of the sweep that matches `filters` (the query of `GET /sweeps/{id}/runs`: status,
        optimizer, min_learning_rate, max_learning_rate, sort, order), page by page."""
        runs: list[dict] = []
        while True:
            page = self.get(f"/sweeps/{sweep_id}/runs", limit=page_size, offset=len(runs), **filters).json()
            runs += page["runs"]
            if not page["runs"] or len(runs) >= page["total"]:
                return runs

    def curves(self, sweep_id: int, points: int | None = None) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Each run's (epochs, losses) as float64 arrays, by run id; `points` down-samples each curve
        (each bucket of epochs keeps its min and max)."""
        params = {} if points is None else {"points": points}
        body = self.get(f"/sweeps/{sweep_id}/losses", **params).json()
        curves = {}
        for run in body["runs"]:
            losses = np.array(run["losses"], dtype=np.float64)
            epochs = np.arange(len(losses)) if run["sampled_epochs"] is None else np.array(run["sampled_epochs"])
            curves[run["run_id"]] = (epochs, losses)
        return curves

    def runs_frame(self, sweep_id: int, **filters: Any) -> pandas.DataFrame:
        """The sweep's runs as a DataFrame, one row per run, indexed by run id (as `study.trials_dataframe()`)."""
        pd = _pandas()
        frame = pd.DataFrame(self.runs(sweep_id, **filters), columns=RUN_COLUMNS)
        for column in ("created_at", "started_at", "finished_at"):
            frame[column] = pd.to_datetime(frame[column], format="ISO8601")
        return frame.set_index("id")

    def curves_frame(self, sweep_id: int, points: int | None = None) -> pandas.DataFrame:
        """Every loss of the sweep (or the down-sampled ones): one row per (run, epoch), with the run's
        learning rate, seed and optimizer, ready for groupby and plotting."""
        pd = _pandas()
        runs = {run["id"]: run for run in self.runs(sweep_id)}
        parts = []
        for run_id, (epochs, losses) in self.curves(sweep_id, points).items():
            run = runs[run_id]
            parts.append(pd.DataFrame({"run_id": run_id, "learning_rate": run["learning_rate"], "seed": run["seed"],
                                       "optimizer": run["optimizer"], "epoch": epochs, "loss": losses}))
        columns = ["run_id", "learning_rate", "seed", "optimizer", "epoch", "loss"]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)

    # ----

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise ApiError(f"cannot reach the API at {self.http.base_url}: {error}") from error
        if response.is_error:
            reason = _detail(response, kwargs.get("json"))
            raise ApiError(f"{method} {path}: HTTP {response.status_code}: {reason}", response.status_code, reason)
        return response


def _pandas():
    try:
        import pandas
    except ImportError:
        raise ImportError("DataFrames need pandas: pip install 'gradsweep[notebook]'") from None
    return pandas


def _detail(response: httpx.Response, sent: Any = None) -> str:
    """The API's reason for refusing a request; of a refused body (`sent`), each field's, as `_field_error` says it."""
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        return response.text
    if isinstance(detail, list):  # FastAPI's validation errors
        reasons: dict[str, list[str]] = {}
        for error in _without_other_alternatives([error for error in detail if isinstance(error, dict)]):
            field, reason = _field_error(error, sent)
            reasons.setdefault(field, []).append(reason)
        return "; ".join(f"{field}: {_either(found)}" if field else _either(found) for field, found in reasons.items())
    return str(detail)


def _either(reasons: list[str]) -> str:
    """A field's reasons as one: "Input should be a valid list or a valid dictionary" when it fits no alternative."""
    first, *others = dict.fromkeys(reasons)
    if all(reason.startswith(_SHOULD_BE) for reason in (first, *others)):
        return " or ".join([first, *(reason.removeprefix(_SHOULD_BE) for reason in others)])
    return "; ".join([first, *others])


# How `POST /sweeps` tells its two forms apart (a tagged union): the tag is in each error's location, not in the body.
_BODY_FORMS = ("grid", "search")
_VALUE_ERROR = "Value error, "
_SHOULD_BE = "Input should be "


def _path(location: list) -> tuple[list, bool]:
    """An error's location as the request wrote it, and whether it went through one alternative of a union.

    Dropped: where it was (body, query), the form of a sweep, and a union's alternative, which pydantic names by
    its type (`list[constrained-float]`, `LogSpace`) where a field name is snake_case.
    """
    path = list(location[1:])
    if location[:1] == ["body"] and path[:1] and path[0] in _BODY_FORMS:
        path = path[1:]
    kept = [part for part in path if not _names_a_type(part)]
    return kept, len(kept) < len(path)


def _names_a_type(part: str | int) -> bool:
    return isinstance(part, str) and (not part.replace("_", "").isalnum() or part[:1].isupper())


def _without_other_alternatives(errors: list[dict]) -> list[dict]:
    """Of a field whose value could be one of several types, the errors of the type the user meant: a list of
    learning rates with a negative one is wrong for being negative, not for not being a `{"logspace": ...}`."""
    paths = [_path(error.get("loc", [])) for error in errors]
    mismatched = {i for i, (error, (path, alternative)) in enumerate(zip(errors, paths, strict=True))
                  if alternative and str(error.get("type", "")).endswith("_type")}
    meant = {tuple(path[:1]) for i, (path, alternative) in enumerate(paths) if alternative and i not in mismatched}
    return [error for i, (error, (path, _)) in enumerate(zip(errors, paths, strict=True))
            if i not in mismatched or tuple(path[:1]) not in meant]


def _field_error(error: dict, sent: Any) -> tuple[str, str]:
    """The field with the value the user gave, and the reason: (`learning_rates[0] = -1.0`,
    `Input should be greater than 0`); the field is "" for an error of the whole body."""
    path, _ = _path(error.get("loc", []))
    field = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")
    message = str(error.get("msg", "refused")).removeprefix(_VALUE_ERROR)
    given = _value_at(sent, path)
    if given is not None:
        field = f"{field} = {given}"
    return field, message


def _value_at(body: Any, path: list) -> str | None:
    """The scalar the request held at `path`, as JSON writes it, or None."""
    for part in path:
        try:
            body = body[part]
        except (KeyError, IndexError, TypeError):
            return None
    if body is None or isinstance(body, (dict, list)):
        return None
    return json.dumps(body)
