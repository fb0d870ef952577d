"""The `gradsweep` client commands against the running service, as a user types them."""

from __future__ import annotations

import csv
import io
import os
import re

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


def test_bad_input_from_the_cli_names_the_field(stack, tmp_path):
    refused = gradsweep("submit", "--lr", "0.01,-1", "--epochs", "10", env=stack.env, cwd=tmp_path)
    assert refused.returncode == 1
    assert "learning_rates" in refused.stdout and "greater than 0" in refused.stdout


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
    assert refused.returncode == 1 and "learning_rate" in refused.stdout and "must be below max" in refused.stdout
    both = gradsweep("submit", "--file", str(path), "--lr", "0.1", env=stack.env, cwd=tmp_path)
    assert both.returncode == 1 and "not both" in both.stdout


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
