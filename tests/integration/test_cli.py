"""The `gradsweep` client commands against the running service, as a user types them."""

from __future__ import annotations

import csv
import io
import os
import re

from gradsweep.service.domain.text import divergence_text, human_number
from tests.integration.test_end_to_end import png_size
from tests.support.processes import embedded_settings, gradsweep
from tests.support.sweeps import all_runs


def test_submit_wait_status_curves_and_plot(stack, tmp_path):
    submitted = gradsweep("submit", "--lr", "1e-2,5e-2", "--seeds", "0-1", "--epochs", "50",
                          "--optimizer", "sgd,adam", "--name", "from the cli", "--wait",
                          env=stack.env, cwd=tmp_path, timeout=120)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    sweep_id = int(re.search(r"sweep (\d+): 8 runs queued in 2 jobs", submitted.stdout).group(1))
    assert "8 succeeded" in submitted.stdout

    status = gradsweep("status", str(sweep_id), env=stack.env, cwd=tmp_path)
    assert status.returncode == 0 and "from the cli" in status.stdout
    assert status.stdout.count("succeeded") >= 8
    best = stack.http.get(f"/sweeps/{sweep_id}/runs", params={"sort": "final_loss", "limit": 1}).json()["runs"][0]
    top = gradsweep("status", str(sweep_id), "--sort", "final_loss", "--limit", "3", env=stack.env, cwd=tmp_path)
    table_rows = [line for line in top.stdout.splitlines() if line.startswith("│")]
    assert len(table_rows) == 3 and table_rows[0].split("│")[1].strip() == str(best["id"]), top.stdout
    assert "3 of 8 runs shown" in top.stdout

    curves = gradsweep("curves", str(sweep_id), "--csv", env=stack.env, cwd=tmp_path)
    rows = list(csv.DictReader(io.StringIO(curves.stdout)))
    assert len(rows) == 8 * 50 and {r["optimizer"] for r in rows} == {"sgd", "adam"}
    sampled = gradsweep("curves", str(sweep_id), "--csv", "--points", "10", env=stack.env, cwd=tmp_path)
    assert len(list(csv.DictReader(io.StringIO(sampled.stdout)))) <= 8 * 10

    for kind in ("curves", "final"):
        out = tmp_path / f"{kind}.png"
        plotted = gradsweep("plot", str(sweep_id), "-o", str(out), "--kind", kind, env=stack.env, cwd=tmp_path)
        assert plotted.returncode == 0, plotted.stdout
        assert png_size(out.read_bytes())[0] >= 600

    kept = gradsweep("delete", str(sweep_id), env=stack.env, cwd=tmp_path, input="n\n")
    assert kept.returncode == 1 and "Aborted" in kept.stdout + kept.stderr
    assert stack.http.get(f"/sweeps/{sweep_id}").status_code == 200
    deleted = gradsweep("delete", str(sweep_id), env=stack.env, cwd=tmp_path, input="y\n")
    assert deleted.returncode == 0 and f"sweep {sweep_id} deleted" in deleted.stdout, deleted.stdout + deleted.stderr
    assert stack.http.get(f"/sweeps/{sweep_id}").status_code == 404


def test_a_sweep_of_one_run_per_job_stores_curves_bit_equal_to_gradsweep_train(stack, tmp_path):
    from gradsweep.engine.tasks.linear_regression import train

    submitted = gradsweep("submit", "--lr", "1e-2,5e-2", "--seeds", "3", "--epochs", "40", "--one-run-per-job",
                          "--wait", env=stack.env, cwd=tmp_path, timeout=120)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert re.search(r"2 runs queued in 2 jobs", submitted.stdout) and "2 succeeded" in submitted.stdout
    sweep_id = int(re.search(r"sweep (\d+):", submitted.stdout).group(1))
    for run in all_runs(stack.http, sweep_id):
        assert stack.http.get(f"/runs/{run['id']}").json()["losses"] == train(run["learning_rate"], 3, 40).losses.tolist()


def test_bad_input_from_the_cli_names_the_field_and_the_reason_as_the_api_does(stack, tmp_path):
    refused = gradsweep("submit", "--lr", "-1", env=stack.env, cwd=tmp_path)
    assert refused.returncode == 1
    # Not the validator's internals: "LogSpace: Input should be a valid dictionary" (issue 24).
    assert refused.stdout == "error: sweep refused: learning_rates[0] = -1.0: Input should be greater than 0\n"
    two = gradsweep("submit", "--lr", "0.01", "--optimizer", "sgd,lbfgs", env=stack.env, cwd=tmp_path)
    assert two.returncode == 1 and two.stdout == (
        "error: sweep refused: optimizers[1] = \"lbfgs\": Input should be 'sgd', 'momentum' or 'adam'\n")
    logspace = tmp_path / "logspace.yaml"
    logspace.write_text("learning_rates: {logspace: [-3, 1, 5]}\nseeds: [0]\nepochs: 10\n")
    refused = gradsweep("submit", "--file", str(logspace), env=stack.env, cwd=tmp_path)
    assert refused.stdout == "error: sweep refused: learning_rates.logspace[0] = -3: Input should be greater than 0\n"
    missing = gradsweep("status", "999999", env=stack.env, cwd=tmp_path)
    assert (missing.returncode, missing.stdout) == (1, "error: no sweep 999999\n")


SEARCH_FILE = """\
# As `wandb sweep` takes one: the body of POST /sweeps.
method: random
run_cap: 4
search_seed: 1
parameters:
  learning_rate: {distribution: log_uniform, min: 0.001, max: 0.1}
  optimizer: {values: [sgd, momentum]}
  beta: {distribution: uniform, min: 0.5, max: 0.95}
  epochs: {value: 30}
  seed: {values: [0, 1], repeat: true}
"""


def test_submit_takes_a_yaml_or_json_sweep_file(stack, tmp_path):
    import json

    import yaml

    path = tmp_path / "lr-search.yaml"
    path.write_text(SEARCH_FILE)
    submitted = gradsweep("submit", "--file", str(path), "--wait", env=stack.env, cwd=tmp_path, timeout=120)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    sweep_id = int(re.search(r"sweep (\d+): 8 runs queued", submitted.stdout).group(1))
    assert "8 succeeded" in submitted.stdout
    sweep = stack.http.get(f"/sweeps/{sweep_id}").json()
    assert sweep["name"] == "lr-search" and sweep["search"]["run_cap"] == 4  # named after the file

    as_json = tmp_path / "same.json"
    as_json.write_text(json.dumps(yaml.safe_load(SEARCH_FILE) | {"name": "from json"}))
    again = gradsweep("submit", "-f", str(as_json), "--wait", env=stack.env, cwd=tmp_path, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    again_id = int(re.search(r"sweep (\d+):", again.stdout).group(1))
    key = ("learning_rate", "seed", "optimizer", "beta", "final_loss")
    assert [[run[k] for k in key] for run in all_runs(stack.http, again_id)] == \
        [[run[k] for k in key] for run in all_runs(stack.http, sweep_id)]

    path.write_text(SEARCH_FILE.replace("min: 0.001, max: 0.1", "min: 0.1, max: 0.001"))
    refused = gradsweep("submit", "--file", str(path), env=stack.env, cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stdout == "error: sweep refused: parameters.learning_rate: min (0.1) must be below max (0.001)\n"
    both = gradsweep("submit", "--file", str(path), "--lr", "0.1", env=stack.env, cwd=tmp_path)
    assert both.returncode == 1 and "not both" in both.stdout


def test_status_shows_a_column_per_searched_parameter_with_numbers_for_people(stack, tmp_path):
    path = tmp_path / "beta-search.yaml"
    path.write_text(SEARCH_FILE)
    submitted = gradsweep("submit", "--file", str(path), "--wait", env=stack.env, cwd=tmp_path, timeout=120)
    sweep_id = int(re.search(r"sweep (\d+):", submitted.stdout).group(1))
    status = gradsweep("status", str(sweep_id), env=stack.env, cwd=tmp_path)
    assert status.returncode == 0, status.stdout + status.stderr
    header, *rows = [cells(line) for line in status.stdout.splitlines() if line.startswith(("┃", "│"))]
    assert header[:6] == ["run", "lr", "seed", "optimizer", "beta", "status"]
    runs = {run["id"]: run for run in all_runs(stack.http, sweep_id)}
    assert len(rows) == 8
    for row in rows:
        run = runs[int(row[0])]
        assert row[1] == human_number(run["learning_rate"])  # 0.0123, not 0.01234
        # momentum's beta as people write it; sgd has none
        assert row[4] == (human_number(run["beta"]) if run["optimizer"] == "momentum" else "—")
    assert {row[3] for row in rows} == {"sgd", "momentum"} and any(len(row[4]) == 5 for row in rows)

    by_beta = gradsweep("status", str(sweep_id), "--sort", "beta", "--descending", "--limit", "1", env=stack.env,
                        cwd=tmp_path)
    [top] = [cells(line) for line in by_beta.stdout.splitlines() if line.startswith("│")]
    assert top[4] == human_number(max(run["beta"] for run in runs.values() if run["beta"] is not None))


def test_a_diverged_run_is_said_as_everywhere_in_status_and_train(stack, tmp_path):
    submitted = gradsweep("submit", "--lr", "0.01,0.5", "--epochs", "30", "--wait", env=stack.env, cwd=tmp_path,
                          timeout=120)
    sweep_id = int(re.search(r"sweep (\d+):", submitted.stdout).group(1))
    diverged = next(run for run in all_runs(stack.http, sweep_id) if run["status"] == "diverged")
    status = gradsweep("status", str(sweep_id), env=stack.env, cwd=tmp_path)
    header, *rows = [cells(line) for line in status.stdout.splitlines() if line.startswith(("┃", "│"))]
    notes = {int(row[0]): row[header.index("note")] for row in rows}
    assert notes[diverged["id"]] == divergence_text(diverged["diverged_at"]) == (
        "loss finite through epoch 3; diverged at epoch 4")
    assert set(notes.values()) == {"", notes[diverged["id"]]}

    trained = gradsweep("train", "--lr", "0.5", "--epochs", "30", "-o", "one.png", env=stack.env, cwd=tmp_path)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert trained.stdout.startswith("sgd, lr 0.5, seed 0: loss finite through epoch 3; diverged at epoch 4 ("), \
        trained.stdout


def test_train_and_submit_train_the_same_default_epochs(stack, tmp_path):
    from gradsweep.engine.tasks.linear_regression import train

    trained = gradsweep("train", "-o", "one.svg", env=stack.env, cwd=tmp_path)
    assert trained.stdout.startswith("sgd, lr 0.05, seed 0: 300 epochs, final loss "), trained.stdout
    submitted = gradsweep("submit", "--lr", "0.05", "--one-run-per-job", "--wait", env=stack.env, cwd=tmp_path,
                          timeout=120)
    sweep_id = int(re.search(r"sweep (\d+):", submitted.stdout).group(1))
    [run] = all_runs(stack.http, sweep_id)
    assert run["epochs"] == 300
    assert stack.http.get(f"/runs/{run['id']}").json()["losses"] == train(0.05, 0, 300).losses.tolist()


HYPERBAND_FILE = """\
method: bayes
run_cap: 4
wave_size: 2
early_stopping: {type: hyperband, min_epochs: 4, eta: 2}
parameters:
  learning_rate: {distribution: log_uniform, min: 0.001, max: 1}
  optimizer: {values: [sgd, adam]}
  epochs: {value: 30}
  seed: {values: [0, 1, 2], repeat: true}
"""


def test_a_bayesian_search_counts_its_planned_runs_from_the_first_wave(stack, tmp_path):
    path = tmp_path / "hyperband.yaml"
    path.write_text(HYPERBAND_FILE)
    submitted = gradsweep("submit", "--file", str(path), env=stack.env, cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    sweep_id = int(re.search(r"sweep (\d+): a search of 12 runs; its first 6 runs queued in \d+ jobs?, the others "
                             r"in waves of 2 points as those before end\n", submitted.stdout).group(1))
    # Between its waves as at its end: of 12, not of the 6 it has so far (issue 24).
    status = gradsweep("status", str(sweep_id), "--limit", "1", env=stack.env, cwd=tmp_path)
    assert re.search(r"“hyperband”: (queued|running|finished), \d+/12 runs ended; ", status.stdout), status.stdout
    listed = gradsweep("list", env=stack.env, cwd=tmp_path)
    row = next(cells(line) for line in listed.stdout.splitlines() if line.startswith(f"│ {sweep_id} "))
    assert row[3].endswith("/12"), listed.stdout

    waited = gradsweep("submit", "--file", str(path), "--wait", env=stack.env, cwd=tmp_path, timeout=120)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert "12/12 runs" in waited.stdout and "/6 runs" not in waited.stdout  # the progress bar's last state
    waited_id = int(re.search(r"sweep (\d+):", waited.stdout).group(1))
    counts = stack.http.get(f"/sweeps/{waited_id}").json()["counts"]
    assert waited.stdout.splitlines()[-1] == ", ".join(f"{n} {status}" for status, n in counts.items() if n)


def test_list_cancel_and_retry(stack, tmp_path):
    # The seed's graph of Variables for 100,000 epochs: still queued or running when cancelled
    long = gradsweep("submit", "--lr", "1e-4,2e-4", "--epochs", "100000", "--mode", "scalar", "--name", "long one",
                     env=stack.env, cwd=tmp_path)
    sweep_id = int(re.search(r"sweep (\d+): 2 runs queued in \d jobs?\n", long.stdout).group(1))
    listed = gradsweep("list", env=stack.env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    header, *rows = [cells(line) for line in listed.stdout.splitlines() if line.startswith(("┃", "│"))]
    assert header == ["sweep", "name", "status", "progress", "runs", "created (UTC)", "by"]
    ids = [int(row[0]) for row in rows]
    assert ids == sorted(ids, reverse=True) and ids[0] == sweep_id  # newest first
    assert rows[0][1:4] == ["long one", rows[0][2], "0/2"] and rows[0][2] in ("queued", "running")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", rows[0][5])

    first = gradsweep("list", "--limit", "1", env=stack.env, cwd=tmp_path)
    if len(ids) > 1:
        assert first.stdout.splitlines()[-1] == f"older sweeps: gradsweep list --before {sweep_id} --limit 1"
        older = gradsweep("list", "--before", str(sweep_id), env=stack.env, cwd=tmp_path)
        assert [int(cells(line)[0]) for line in older.stdout.splitlines() if line.startswith("│")] == ids[1:]
    assert gradsweep("list", "--before", "1", env=stack.env, cwd=tmp_path).stdout == "no sweeps older than sweep 1\n"

    cancelled = gradsweep("cancel", str(sweep_id), env=stack.env, cwd=tmp_path)
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert re.fullmatch(r"sweep \d+ “long one”: cancelled 2 runs( \(those running stop at their next write of "
                        r"losses\))?; 2 cancelled\n", cancelled.stdout), cancelled.stdout
    again = gradsweep("cancel", str(sweep_id), env=stack.env, cwd=tmp_path)
    assert again.stdout == f"sweep {sweep_id} “long one” has no queued or running run: nothing to cancel; 2 cancelled\n"
    status = gradsweep("status", str(sweep_id), env=stack.env, cwd=tmp_path)
    assert status.stdout.startswith(f"sweep {sweep_id} “long one”: finished, 2/2 runs ended; 2 cancelled\n")

    retried = gradsweep("retry", str(sweep_id), env=stack.env, cwd=tmp_path)
    assert retried.stdout == f"sweep {sweep_id} “long one”: 2 cancelled runs queued again; 2 queued\n", retried.stdout
    nothing = gradsweep("retry", str(sweep_id), env=stack.env, cwd=tmp_path)
    assert nothing.stdout.startswith(f"sweep {sweep_id} “long one” has no failed or cancelled run: nothing to retry; ")
    assert gradsweep("cancel", str(sweep_id), env=stack.env, cwd=tmp_path).returncode == 0
    stack.wait_for_sweep(sweep_id)  # its runs stopped: nothing left running for the next test
    unknown = gradsweep("cancel", "999999", env=stack.env, cwd=tmp_path)
    assert (unknown.returncode, unknown.stdout) == (1, "error: no sweep 999999\n")


def test_db_upgrade_says_what_it_did(database, tmp_path):
    from alembic import command
    from alembic.script import ScriptDirectory

    from gradsweep.service.storage import alembic_config
    from gradsweep.service.storage.engine import database_url

    url = database.render_as_string(hide_password=False)
    shown = database_url(url).render_as_string(hide_password=True)  # as the CLI names it: postgresql+psycopg://...
    env = embedded_settings(tmp_path, GRADSWEEP_DATABASE_URL=url) | {"PATH": os.environ["PATH"]}
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    created = gradsweep("db", "upgrade", env=env, cwd=tmp_path)
    assert created.stdout == f"created the schema at revision {head} in the database at {shown}\n", created.stderr
    again = gradsweep("db", "upgrade", env=env, cwd=tmp_path)
    assert again.stdout == f"the database at {shown} is already at revision {head}, the newest\n"

    command.downgrade(alembic_config(url), "-1")  # as a database of the version before
    upgraded = gradsweep("db", "upgrade", env=env, cwd=tmp_path)
    previous = ScriptDirectory.from_config(alembic_config(url)).get_revision(head).down_revision
    assert upgraded.stdout == f"upgraded the database at {shown} from revision {previous} to {head}\n"


def cells(line: str) -> list[str]:
    """A Rich table row's cells, stripped."""
    return [cell.strip() for cell in re.split(r"[│┃]", line)[1:-1]]
