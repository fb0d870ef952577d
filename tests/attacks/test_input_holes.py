"""Issue 22, part 6: the small holes. Each probe drives the real thing, as a user or an attacker would:
the API as a process, the CLI as a command, a sweep file on disk."""

from __future__ import annotations

import resource
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from matplotlib.font_manager import findfont
from matplotlib.ft2font import FT2Font

from tests.support.databases import new_schema
from tests.support.processes import Stack, free_port, gradsweep
from tests.support.sweeps import wait_until_finished

SWEEP = {"learning_rates": [0.01], "seeds": [0], "epochs": 5}


def svg_glyph_id(character: str) -> str:
    """The id of `character`'s glyph in matplotlib's SVG, present only where the character is drawn."""
    font = FT2Font(findfont("DejaVu Sans"))
    return f'id="DejaVuSans-{font.get_char_index(ord(character)):x}"'


def create_sweep(stack: Stack, name: str) -> int:
    response = stack.http.post("/sweeps", json={"name": name, **SWEEP})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def rename_in_the_database(stack: Stack, sweep_id: int, name: str) -> None:
    """A row stored before names were checked: written straight into the SQLite file."""
    with sqlite3.connect(stack.workdir / "gradsweep.sqlite") as connection:
        connection.execute("UPDATE sweeps SET name = ? WHERE id = ?", (name, sweep_id))


@pytest.mark.parametrize("name", ["lr $5 vs $10", r"$\frac{a}{b$"])
def test_a_dollar_in_a_sweep_name_is_drawn_as_text(open_api, name):
    sweep_id = create_sweep(open_api, name)
    png = open_api.http.get(f"/sweeps/{sweep_id}/plot.png")
    svg = open_api.http.get(f"/sweeps/{sweep_id}/plot.svg")
    assert png.status_code == 200, png.text
    assert svg.status_code == 200, svg.text
    assert svg_glyph_id("$") in svg.text  # each "$" drawn, not read as the start of a formula


@pytest.mark.parametrize("character", ["\x1b", "\x00", "\u202e", "\u200b", "\n"])
def test_a_name_with_a_control_or_format_character_is_refused(open_api, character):
    response = open_api.http.post("/sweeps", json={"name": f"evil{character}name", **SWEEP})
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"][-1] == "name"
    assert f"U+{ord(character):04X}" in error["msg"]


def test_status_prints_an_old_name_without_its_terminal_escapes(open_api):
    sweep_id = create_sweep(open_api, "plain")
    rename_in_the_database(open_api, sweep_id, "\x1b[2J\x1b]0;pwned\x07 \u202eevil")
    done = gradsweep("status", str(sweep_id), env=open_api.env, cwd=open_api.workdir)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout and "\u202e" not in done.stdout
    assert "\\x1b" in done.stdout and "\\u202e" in done.stdout  # shown, escaped, so the user sees what is there


def test_status_prints_rich_markup_in_a_name_as_it_is(open_api):
    sweep_id = create_sweep(open_api, "plain")
    rename_in_the_database(open_api, sweep_id, "[/]oops [bold]x")
    done = gradsweep("status", str(sweep_id), env=open_api.env, cwd=open_api.workdir)
    assert done.returncode == 0, done.stderr
    assert "[/]oops [bold]x" in done.stdout


def test_a_page_number_too_large_for_the_database_is_refused(open_api):
    sweep_id = create_sweep(open_api, "pages")
    for path in ("/", f"/ui/sweeps/{sweep_id}", f"/ui/sweeps/{sweep_id}/runs"):
        response = open_api.http.get(path, params={"page": 2**63 - 1})
        assert response.status_code == 422, f"{path}: {response.status_code}"
    assert open_api.http.get(f"/ui/sweeps/{sweep_id}", params={"page": 1000}).status_code == 200  # past the end: the last


@pytest.fixture(scope="module")
def postgres_api_without_broker(postgres_database, tmp_path_factory) -> Iterator[Stack]:
    """An API on PostgreSQL whose broker (a Redis on a port where nothing listens) is down."""
    workdir = tmp_path_factory.mktemp("postgres-api")
    broker = f"redis://:secret@127.0.0.1:{free_port()}/0"
    stack = Stack({"GRADSWEEP_DATABASE_URL": new_schema(postgres_database).render_as_string(hide_password=False),
                   "GRADSWEEP_BROKER_URL": broker}, workdir)
    try:
        stack.migrate()
        stack.start_api(healthy=False)
        yield stack
    finally:
        stack.stop()


def test_healthz_names_what_is_down_but_not_where_it_is(postgres_api_without_broker):
    stack = postgres_api_without_broker
    response = stack.http.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"database": "ok", "broker": "unavailable"}
    port = stack.env["GRADSWEEP_BROKER_URL"].rsplit(":", 1)[1].split("/")[0]
    assert port not in response.text and "127.0.0.1" not in response.text


def test_a_nul_in_a_name_is_a_422_on_postgresql(postgres_api_without_broker):
    response = postgres_api_without_broker.http.post("/sweeps", json={"name": "nul\x00name", **SWEEP})
    assert response.status_code == 422, response.text


def submit_file(tmp_path: Path, text: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`gradsweep submit --file`, its memory capped: a file that makes it grow fails fast rather than swap."""
    path = tmp_path / "sweep.yaml"
    path.write_text(text)

    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))

    return subprocess.run([sys.executable, "-m", "gradsweep", "submit", "--file", str(path)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, preexec_fn=cap_memory)


BILLION_LAUGHS = (
    'name: laughs\nepochs: 5\nseeds: [0]\n'
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(f"{b}: &{b} [{','.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))
    + "learning_rates: *i\n"
)


def test_a_sweep_file_with_aliases_is_refused(open_api, tmp_path):
    done = submit_file(tmp_path, BILLION_LAUGHS, open_api.env)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "alias" in done.stdout


def test_a_sweep_file_larger_than_a_request_is_refused_before_it_is_read(open_api, tmp_path):
    done = submit_file(tmp_path, "name: big\n" + "#" * 2**20 + "\n", open_api.env)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "larger than" in done.stdout


def test_nan_in_a_sweep_file_is_refused_naming_where(open_api, tmp_path):
    done = submit_file(tmp_path, "name: nan\nlearning_rates: [0.01, .nan]\nseeds: [0]\nepochs: 5\n", open_api.env)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "learning_rates[1]" in done.stdout


SEND_JOBS_WITH_TOO_LITTLE_TIME = """
import sys
from gradsweep.worker.app import TRAIN_JOB, app
no_limit, low_limit = sys.argv[1:]
app.send_task(TRAIN_JOB, args=[[int(no_limit)]])  # the worker's own --soft-time-limit applies
app.send_task(TRAIN_JOB, args=[[int(low_limit)]], soft_time_limit=0.1, time_limit=1)  # less than the job takes
"""


def test_a_worker_gives_a_job_the_time_it_needs(open_api, tmp_path):
    body = {"name": "slow", "learning_rates": [0.01], "seeds": [0, 1], "epochs": 60, "mode": "scalar"}
    sweep = open_api.http.post("/sweeps", json=body).json()  # each of its 2 runs takes most of a second
    run_ids = [str(run["id"]) for run in open_api.http.get(f"/sweeps/{sweep['id']}/runs").json()["runs"]]
    # The API's own messages, sized to the jobs, wait on its broker; this worker reads another one.
    env = {**open_api.env, "GRADSWEEP_BROKER_URL": f"sqla+sqlite:///{tmp_path}/broker.sqlite"}
    subprocess.run([sys.executable, "-c", SEND_JOBS_WITH_TOO_LITTLE_TIME, *run_ids], env=env, check=True,
                   timeout=60)
    log = tmp_path / "worker.log"
    with log.open("wb") as output:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "gradsweep.worker.app", "worker", "--soft-time-limit=0.1", "--time-limit=1",
             "--concurrency=2", "--loglevel=INFO"],
            env=env, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        finished = wait_until_finished(open_api.http, sweep["id"], 60, explain=log.read_text)
    finally:
        worker.terminate()
        worker.wait(timeout=20)
    assert [(run["status"], run["attempts"]) for run in finished["runs"]] == [("succeeded", 1)] * 2, \
        [run["error"] for run in finished["runs"]]
