"""The `gradsweep` command line: the servers, the database, and a client of the HTTP API."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gradsweep.engine.tasks import linear_regression
from gradsweep.service.client.http import MAX_PAGE, ApiError, Client
from gradsweep.service.domain.records import RUN_SORT_KEYS
from gradsweep.service.domain.search import SearchSpec, swept_parameters
from gradsweep.service.domain.search_space import FIRST_FORM_PARAMETERS
from gradsweep.service.domain.text import counted, divergence_text, human_number, printable
from gradsweep.service.plots import RunCurve, plot_curves
from gradsweep.service.settings import get_settings

if TYPE_CHECKING:
    from gradsweep.service.storage import Storage

app = typer.Typer(help="gradsweep: hyperparameter sweeps on a small reverse-mode autodiff engine.", no_args_is_help=True)
db_app = typer.Typer(help="The results database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
# Piped output is read by programs and people alike: keep tables whole rather than cut at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)
# One default for every command that trains (submit, train, demo), the Python client's and the README's: `gradsweep
# train` with the defaults then trains exactly a default sweep's run, bit-equal to it with --one-run-per-job.
DEFAULT_EPOCHS = 300
DEFAULT_PAGE = 100  # sweeps `gradsweep list` shows at once, as GET /sweeps gives them


# ---- servers and database ----


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database's tables to this version of gradsweep, and say which of them it did."""
    from gradsweep.service.client.database import upgrade_database
    from gradsweep.service.storage import StorageError

    try:
        done = upgrade_database(get_settings().database_url)
    except StorageError as error:
        _fail(f"cannot upgrade the database: {error}")
    console.print(done, markup=False)


@app.command()
def api(
    host: Optional[str] = typer.Option(None, help="the address to listen on; default GRADSWEEP_API_HOST (127.0.0.1)"),
    port: int = 8000,
    allow_open: bool = typer.Option(False, "--allow-open",
                                    help="listen beyond loopback even though the API has no token: anyone who "
                                         "reaches the port may read, submit, cancel and delete"),
) -> None:
    """Serve the HTTP API."""
    import uvicorn

    settings = get_settings()
    host = host or settings.api_host
    _require_migrated_database()
    if not _loopback(host) and not allow_open and not _has_tokens():
        _fail(f"refusing to listen on {host} without a token: anyone who reaches it could read, cancel and delete "
              "every sweep. Make one (`gradsweep token create NAME --role write`, or set GRADSWEEP_API_TOKEN), "
              "or pass --allow-open if a proxy in front of it authenticates.")
    # The API's processes read the address from the settings: it is one of the Host names they answer to.
    os.environ["GRADSWEEP_API_HOST"] = host
    get_settings.cache_clear()
    processes = settings.api_processes
    uvicorn.run("gradsweep.service.api.main:create_app", factory=True, host=host, port=port, log_level="info",
                workers=processes if processes > 1 else None)


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to any address


def _has_tokens() -> bool:
    from gradsweep.service.storage import Storage

    if get_settings().api_token:
        return True
    storage = Storage(get_settings().database_url)
    try:
        return storage.has_active_tokens()
    finally:
        storage.close()


# ---- API tokens, straight on the database (how the first one is made) ----

token_app = typer.Typer(help="The API's named tokens: read or write. Changes count at once, without a restart.",
                        no_args_is_help=True)
app.add_typer(token_app, name="token")
CLI_ACTOR = "cli"  # the audit log's name for what was done here, on the database itself


@token_app.command("create")
def token_create(
    name: str = typer.Argument(help="who or what uses it: letters, digits, '_', '.', '-'"),
    role: str = typer.Option("read", help="read (see everything) or write (also submit, cancel, retry, delete)"),
) -> None:
    """Make a token and print its secret, once: only its hash is kept."""
    from gradsweep.service.storage import Role, TokenExists

    if role not in {r.value for r in Role}:
        _fail(f"--role is read or write, not {role!r}")
    with _storage() as storage:
        try:
            token, secret = storage.create_token(name, Role(role), actor=CLI_ACTOR)
        except (TokenExists, ValueError) as error:
            _fail(str(error))
    console.print(f"token {token.name} ({token.role.value}); keep it now, it is not shown again:", markup=False)
    print(secret)


@token_app.command("list")
def token_list() -> None:
    """Every token with its role, creation and revocation; never a secret."""
    with _storage() as storage:
        tokens = storage.list_tokens()
    table = Table("name", "role", "created", "by", "revoked")
    for token in tokens:
        table.add_row(token.name, token.role.value, f"{token.created_at:%Y-%m-%d %H:%M}", token.created_by,
                      "—" if token.revoked_at is None else f"{token.revoked_at:%Y-%m-%d %H:%M}")
    console.print(table)


@token_app.command("revoke")
def token_revoke(name: str) -> None:
    """Revoke a token: its next request is refused, by every API process."""
    from gradsweep.service.storage import NotFound

    with _storage() as storage:
        try:
            storage.revoke_token(name, actor=CLI_ACTOR)
        except NotFound as error:
            _fail(str(error))
    console.print(f"token {name} revoked", markup=False)


@contextmanager
def _storage() -> Iterator[Storage]:
    from gradsweep.service.storage import Storage

    _require_migrated_database()
    storage = Storage(get_settings().database_url)
    try:
        yield storage
    finally:
        storage.close()


@app.command()
def worker(
    concurrency: Optional[int] = typer.Option(None, min=1, help="training processes; default: the number of cores"),
) -> None:
    """Start a Celery worker that trains runs from the queue."""
    _require_migrated_database()
    settings = get_settings()
    concurrency = concurrency or settings.worker_concurrency or os.cpu_count() or 1
    env = worker_environment(os.environ)
    argv = [sys.executable, "-m", "celery", "-A", "gradsweep.worker.app", "worker", "--loglevel=INFO",
            f"--concurrency={concurrency}", f"--hostname=gradsweep-{os.getpid()}@%h"]
    os.execvpe(sys.executable, argv, env)


def worker_environment(base: Mapping[str, str]) -> dict[str, str]:
    """`base` with the defaults a worker's processes run with, unless `base` sets them otherwise."""
    env = dict(base)
    # One BLAS thread per process: the processes are the parallelism, and a fixed
    # thread count keeps the floating-point reductions, and so the losses, the same on every worker.
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(name, "1")
    # A batched epoch frees and allocates some hundred kilobytes; glibc would hand them back to the
    # system and fault them in again every epoch, which made a process's first 100-run job 2x slower.
    env.setdefault("MALLOC_TOP_PAD_", str(16 * 2**20))
    return env


def _require_migrated_database() -> None:
    from gradsweep.service.storage import SchemaOutOfDate, Storage, StorageError

    storage = Storage(get_settings().database_url)
    try:
        storage.check_schema()
    except SchemaOutOfDate as error:
        _fail(f"the database is not migrated: {error}")
    except StorageError as error:
        _fail(f"cannot use the database: {error}")
    finally:
        storage.close()


# ---- client commands ----


@app.command()
def submit(
    file: Optional[Path] = typer.Option(None, "--file", "-f", exists=True, dir_okay=False,
                                        help="a sweep file, YAML or JSON: the body of POST /sweeps, such as a search "
                                             "with method, parameters and run_cap (see the README); the flags below "
                                             "then do not apply"),
    lr: Optional[str] = typer.Option(None, help="learning rates, comma-separated: 1e-3,1e-2,5e-2"),
    seeds: str = typer.Option("0", help="seeds: 0-4 or 0,3,7"),
    epochs: int = typer.Option(DEFAULT_EPOCHS, min=1),
    optimizer: str = typer.Option("sgd", help="optimizers, comma-separated: sgd,momentum,adam"),
    name: str = typer.Option("sweep", help="a name to find the sweep by"),
    mode: str = typer.Option("tensor", help="tensor or scalar"),
    n_samples: int = typer.Option(100, min=1),
    n_features: int = typer.Option(50, min=1),
    data_seed: int = typer.Option(0, min=0),
    wait: bool = typer.Option(False, "--wait", help="wait for every run to finish, with a progress bar"),
    batched: bool = typer.Option(True, "--batched/--one-run-per-job",
                                 help="train runs that differ only in learning rate and seed together (the default), "
                                      "or each alone, bit-equal to `gradsweep train`"),
) -> None:
    """Submit a sweep: a sweep file (`--file search.yaml`, as `wandb sweep` takes one), or a grid from the flags,
    where every learning rate × seed × optimizer becomes one run."""
    if (file is None) == (lr is None):
        _fail("give --lr (a grid from the flags) or --file (a sweep file), not both")
    if file is not None:
        body = _sweep_file(file)
    else:
        body = {
            "name": name, "learning_rates": _floats(lr, "--lr"), "seeds": _seeds(seeds), "epochs": epochs,
            "optimizers": [o.strip() for o in optimizer.split(",")], "mode": mode,
            "n_samples": n_samples, "n_features": n_features, "data_seed": data_seed, "batched": batched,
        }
    client = Client()
    sweep = _call(lambda: client.post("/sweeps", json=body).json(), refused="sweep refused")
    console.print(f"sweep {sweep['id']}: {_queued_line(sweep)}")
    if wait:
        sweep = wait_for_sweep(client, sweep["id"])
        console.print(_shown(_counts_line(sweep)))


def _queued_line(sweep: dict) -> str:
    """What was queued: every run, or of a Bayesian search its first wave of the runs it plans."""
    queued = f"{counted(sweep['n_runs'], 'run')} queued in {counted(sweep['n_jobs'], 'job')}"
    if sweep["planned_runs"] == sweep["n_runs"]:
        return queued
    waves = (sweep.get("search") or {}).get("wave_size")
    return (f"a search of {sweep['planned_runs']} runs; its first {queued}, the others in waves"
            f"{f' of {waves} points' if waves else ''} as those before end")


@app.command()
def status(
    sweep_id: int,
    sort: str = typer.Option("id", help=f"one of {', '.join(RUN_SORT_KEYS)}"),
    descending: bool = typer.Option(False, "--descending", help="largest first"),
    limit: int = typer.Option(100, min=0, help="runs to show (0: all)"),
    only: Optional[list[str]] = typer.Option(None, "--status", help="only runs of this status (repeat for several)"),
) -> None:
    """A sweep's progress and its runs, a page of them: `--sort final_loss --limit 10` shows the ten best."""
    client = Client()
    sweep = _call(lambda: client.get(f"/sweeps/{sweep_id}").json())
    console.print(f"sweep {sweep['id']} “{_shown(sweep['name'])}”: {_shown(sweep['status'])}, "
                  f"{sweep['n_finished']}/{sweep['planned_runs']} runs ended; {_shown(_counts_line(sweep))}")
    query = {"sort": sort, "order": "desc" if descending else "asc"} | ({"status": only} if only else {})
    if 0 < limit <= MAX_PAGE:
        page = _call(lambda: client.get(f"/sweeps/{sweep_id}/runs", limit=limit, **query).json())
        runs, total = page["runs"], page["total"]
    else:  # more than a page: every run, page by page
        runs = _call(lambda: client.runs(sweep_id, **query))
        total, runs = len(runs), runs[:limit or None]
    searched = _searched_columns(sweep)
    notes = [divergence_text(run["diverged_at"]) if run["diverged_at"] is not None else "" for run in runs]
    table = Table("run", "lr", "seed", "optimizer", *searched, "status", "epochs", "final loss", "best loss",
                  "worker", *(["note"] if any(notes) else []))
    for run, note in zip(runs, notes, strict=True):
        table.add_row(str(run["id"]), human_number(run["learning_rate"]), str(run["seed"]), _shown(run["optimizer"]),
                      *(_parameter_text(run[name]) for name in searched), _shown(run["status"]),
                      f"{run['epochs_done']}/{run['epochs']}", _num(run["final_loss"]), _num(run["best_loss"]),
                      _shown(run["worker"] or ""), *([note] if any(notes) else []))
    console.print(table)
    if total > len(runs):
        console.print(f"{len(runs)} of {total} runs shown: --limit 0 shows them all")


def _searched_columns(sweep: dict) -> list[str]:
    """The parameters the sweep varies beyond the learning rate, seed and optimizer (a column each already) and the
    epochs (in the epochs column): a search's beta, say."""
    search = None if sweep.get("search") is None else SearchSpec.of_stored(sweep["search"])
    return [name for name in swept_parameters(search) if name not in (*FIRST_FORM_PARAMETERS, "epochs")]


def _parameter_text(value: float | None) -> str:
    """A parameter's value for people: 0.936, not 0.9357312; "—" for a run whose optimizer has no such constant."""
    return "—" if value is None else human_number(value)


@app.command("list")
def list_sweeps(
    limit: int = typer.Option(DEFAULT_PAGE, min=1, max=MAX_PAGE, help="sweeps to show, newest first"),
    before: Optional[int] = typer.Option(None, min=1, help="only sweeps older than this id: the next page"),
) -> None:
    """The sweeps, newest first, a page at a time as the API gives them: each with its status, progress and runs."""
    client = Client()
    response = _call(lambda: client.get("/sweeps", limit=limit, **({} if before is None else {"before": before})))
    sweeps = response.json()
    if not sweeps:
        console.print("no sweeps" if before is None else f"no sweeps older than sweep {before}")
        return
    table = Table("sweep", "name", "status", "progress", "runs", "created (UTC)", "by")
    for listed in sweeps:
        sweep = listed  # with its planned runs: a search's waves to come count in its progress
        table.add_row(str(sweep["id"]), _shown(sweep["name"]), sweep["status"],
                      f"{sweep['n_finished']}/{sweep['planned_runs']}",
                      _shown(_counts_line(sweep)), _when(sweep["created_at"]), _shown(sweep["created_by"] or ""))
    console.print(table)
    if "next" in response.links:
        same_limit = "" if limit == DEFAULT_PAGE else f" --limit {limit}"
        console.print(f"older sweeps: gradsweep list --before {sweeps[-1]['id']}{same_limit}")


def _when(timestamp: str) -> str:
    return f"{datetime.fromisoformat(timestamp).astimezone(UTC):%Y-%m-%d %H:%M}"


@app.command()
def cancel(sweep_id: int) -> None:
    """Cancel a sweep's queued and running runs and a search's waves to come; `gradsweep retry` queues them again.

    A running run stops at its next write of losses, its curve kept up to there.
    """
    client = Client()
    before = _call(lambda: client.sweep(sweep_id))
    after = _call(lambda: client.cancel(sweep_id))
    cancelled = after["counts"]["cancelled"] - before["counts"]["cancelled"]
    to_come = before["planned_runs"] - before["n_runs"]
    named = f"sweep {sweep_id} “{_shown(before['name'])}”"
    if cancelled == 0 and to_come == 0:
        console.print(f"{named} has no queued or running run: nothing to cancel; {_shown(_counts_line(after))}")
        return
    waves = f" and the {to_come} runs of its waves to come" if to_come else ""
    running = " (those running stop at their next write of losses)" if before["counts"]["running"] else ""
    console.print(f"{named}: cancelled {cancelled} runs{waves}{running}; {_shown(_counts_line(after))}")


@app.command()
def retry(sweep_id: int) -> None:
    """Queue a sweep's failed and cancelled runs again; a Bayesian search cancelled before its last wave goes on."""
    client = Client()
    before = _call(lambda: client.sweep(sweep_id))
    after = _call(lambda: client.retry(sweep_id))
    again = {status: before["counts"][status] - after["counts"][status] for status in ("failed", "cancelled")}
    named = f"sweep {sweep_id} “{_shown(before['name'])}”"
    if not any(again.values()):
        console.print(f"{named} has no failed or cancelled run: nothing to retry; {_shown(_counts_line(after))}")
        return
    which = " and ".join(f"{count} {status}" for status, count in again.items() if count)
    console.print(f"{named}: {which} runs queued again; {_shown(_counts_line(after))}")


@app.command()
def delete(sweep_id: int, yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation")) -> None:
    """Delete a sweep with its runs and their losses (refused while runs are running: cancel it first)."""
    client = Client()
    sweep = _call(lambda: client.get(f"/sweeps/{sweep_id}").json())
    if not yes:
        typer.confirm(f"Delete sweep {sweep['id']} “{printable(sweep['name'])}”, its {sweep['n_runs']} runs and their losses?",
                      abort=True)
    _call(lambda: client.delete(f"/sweeps/{sweep_id}"))
    console.print(f"sweep {sweep_id} deleted")


@app.command()
def curves(
    sweep_id: int, csv: bool = typer.Option(False, "--csv", help="CSV instead of JSON"),
    points: Optional[int] = typer.Option(None, min=2, help="down-sample each curve to at most this many points"),
) -> None:
    """Print every loss curve of a sweep."""
    params = {"format": "csv" if csv else "json"} | ({} if points is None else {"points": points})
    response = _call(lambda: Client().get(f"/sweeps/{sweep_id}/losses", **params))
    sys.stdout.write(response.text if csv else response.text + "\n")


@app.command()
def plot(
    sweep_id: int,
    output: Path = typer.Option(..., "--output", "-o", help="a .png or .svg file"),
    kind: str = typer.Option("curves", help="curves (loss against epoch) or final (loss against learning rate)"),
) -> None:
    """Write a sweep's comparison plot."""
    fmt = output.suffix.lstrip(".") or "png"
    response = _call(lambda: Client().get(f"/sweeps/{sweep_id}/plot.{fmt}", kind=kind))
    output.write_bytes(response.content)
    console.print(f"wrote {output}")


@app.command()
def train(
    lr: float = typer.Option(0.05, help="learning rate"),
    seed: int = typer.Option(0, help="seed of the initial parameters"),
    epochs: int = typer.Option(DEFAULT_EPOCHS, min=1),
    optimizer: str = typer.Option("sgd", help="sgd, momentum or adam"),
    mode: str = typer.Option("tensor", help="tensor (fast) or scalar (the seed's graph of Variables)"),
    n_samples: int = typer.Option(100, min=1),
    n_features: int = typer.Option(50, min=1),
    data_seed: int = typer.Option(0, min=0),
    output: Path = typer.Option(Path("loss-curve.png"), "--output", "-o", help="where to write the plot (.png or .svg)"),
) -> None:
    """Train the seed's linear regression once, here, without the service, and plot its loss curve."""
    try:
        result = linear_regression.train(lr, seed, epochs, n_samples, n_features, data_seed, mode, optimizer)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    curve = RunCurve(lr, seed, optimizer, result.losses, result.diverged)
    optimum = linear_regression.least_squares_loss(n_samples, n_features, data_seed)
    title = f"Linear regression {n_samples}×{n_features}, {optimizer}, lr = {human_number(lr)}, seed {seed}"
    output.write_bytes(plot_curves([curve], title=title, optimum=optimum, fmt=output.suffix.lstrip(".") or "png"))
    if result.diverged:
        ending = divergence_text(result.diverged_at)
    else:
        ending = f"{len(result.losses)} epochs, final loss {result.losses[-1]:.6g}"
    console.print(f"{optimizer}, lr {human_number(lr)}, seed {seed}: {ending} (initial loss {result.losses[0]:.6g}, "
                  f"least-squares optimum {optimum:.6g}); plot written to {output}", markup=False)


@app.command()
def demo(
    workers: int = typer.Option(2, min=1, help="worker processes to start"),
    epochs: int = typer.Option(DEFAULT_EPOCHS, min=1),
    output_dir: Path = typer.Option(Path("."), help="where to write the plots"),
) -> None:
    """The main job: start the API and workers here, run a sweep, plot it, and stop what was started."""
    from gradsweep.service.client.demo import run_demo

    _call(lambda: run_demo(workers=workers, epochs=epochs, output_dir=output_dir, console=console))


# ---- helpers ----


def wait_for_sweep(client: Client, sweep_id: int) -> dict:
    """Poll the sweep's summary until no run is queued or running, drawing a progress bar."""
    return _call(lambda: client.wait(sweep_id, console=console))


def _counts_line(sweep: dict) -> str:
    """Its runs by status, and a Bayesian search's runs still to be proposed: "10 succeeded, 5 queued, 75 to come"."""
    counts = [f"{count} {name}" for name, count in sweep["counts"].items() if count]
    to_come = sweep.get("planned_runs", sweep["n_runs"]) - sweep["n_runs"]
    return ", ".join([*counts, *([f"{to_come} to come in later waves"] if to_come > 0 else [])]) or "no runs"


def _floats(text: str, option: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise typer.BadParameter(f"expected numbers separated by commas, got {text!r}", param_hint=option)


def _seeds(text: str) -> list[int]:
    try:
        if "-" in text.strip("-"):
            first, last = (int(part) for part in text.split("-", 1))
            return list(range(first, last + 1))
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise typer.BadParameter(f"expected 0-4 or 0,3,7, got {text!r}", param_hint="--seeds")


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


class SweepFileLoader(yaml.SafeLoader):
    """YAML without aliases. An alias (`*a`) repeats its anchor's node without copying it, so a 500-byte
    file can stand for a billion strings, which the JSON sent to the API would spell out in full."""

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a sweep file",
                                              self.peek_event().start_mark)
        return super().compose_node(parent, index)


def _sweep_file(path: Path) -> dict:
    """The body a sweep file holds: YAML (of which JSON is a part), a mapping; named after the file if it has no name.

    At most the API's GRADSWEEP_MAX_REQUEST_BYTES is read: a larger body would be refused anyway.
    """
    limit = get_settings().max_request_bytes
    with path.open("rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        _fail(f"{path} is larger than {limit} bytes, the most the API takes in a request")
    try:
        body = yaml.load(data.decode(), Loader=SweepFileLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        _fail(f"{path} is not a sweep file's YAML or JSON: {error}")
    except RecursionError:
        _fail(f"{path} is nested too deeply")
    if not isinstance(body, dict):
        _fail(f"{path} must hold a mapping (name, method, parameters, ...), not {type(body).__name__}")
    where = _not_finite(body)
    if where is not None:
        _fail(f"{path}: {where} is not a finite number (.nan and .inf are not allowed)")
    return {"name": path.stem} | body


def _not_finite(value: object, where: str = "") -> str | None:
    """Where in a sweep file's body the first NaN or infinity is, as `parameters.learning_rate.values[1]`."""
    if isinstance(value, float) and not math.isfinite(value):
        return where
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _not_finite(item, f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}".lstrip("."))
        if found is not None:
            return found
    return None


def _call(request, refused: str = ""):
    """`request()`, or exit 1 saying why not: the API's reason if it found the request wrong (after `refused`),
    else which request failed how (the service's trouble, or no service at all)."""
    try:
        return request()
    except ApiError as error:
        if error.status_code is not None and 400 <= error.status_code < 500:
            _fail(f"{refused}: {error.reason}" if refused else error.reason)
        _fail(str(error))


def _shown(text: str) -> str:
    """Text from the server or a file, printed as it is: no Rich markup read in it, no terminal escape let through."""
    return escape(printable(text))


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {_shown(message)}")
    raise typer.Exit(1)
