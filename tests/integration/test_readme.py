"""The README as a user follows it: its code blocks, read from README.md by heading and fence, run as written.

    Quick start                   command 2 is what .ci/run runs; what command 1 writes, git ignores
                                  (command 1 itself: test_demo.py)
    A tour of a sweep             its commands, against the API and worker of `stack` (either backend)
    The command line              every command in the table exists, and every command is in the table
    From Python or a notebook     the example, in this process as a notebook runs it, against `stack`
    Searches                      search.yaml and hyperband.yaml, written out and submitted with the CLI
    docs/engine.md                its example

The deployment sections are run by tests/deploy/ (tests/deploy/compose.py reads them).
"""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer

from gradsweep.service.client.cli import app
from gradsweep.service.client.demo import LOG_FILE
from gradsweep.service.settings import get_settings
from tests.integration.test_end_to_end import png_size
from tests.support.processes import gradsweep
from tests.support.services import unavailable
from tests.support.sweeps import all_runs

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
ENDED = {"succeeded", "diverged", "failed", "cancelled", "stopped_early"}


def section(heading: str, path: Path = README) -> str:
    """The text under `## heading`, up to the next `## ` heading (as tests/deploy/compose.py reads it)."""
    return path.read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def blocks(heading: str | None, language: str, path: Path = README) -> list[str]:
    """The section's fenced blocks of `language` (the whole file's if `heading` is None), in order."""
    text = path.read_text() if heading is None else section(heading, path)
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


def commands(block: str) -> list[str]:
    """A bash block's commands, one per line, without their comments."""
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def run_shell(command: str, env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """A README command in bash, as typed, with `gradsweep` this interpreter's (the venv need not be on PATH)."""
    script = f'gradsweep() {{ "{sys.executable}" -m gradsweep "$@"; }}\n{command}\n'
    return subprocess.run(["bash", "-c", script], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


# ---- Quick start ----


def test_the_quick_starts_second_command_is_the_one_ci_runs():
    first, second = [line for line in blocks("Quick start", "bash")[0].splitlines() if line and line[0] != "#"]
    assert first.endswith("&& pip install -e . && gradsweep demo")
    assert second.endswith("&& pip install -e '.[test]' && python -m pytest -n 2")
    assert (ROOT / ".ci/run").read_text().rstrip().splitlines()[-1] == second


def test_what_the_readmes_commands_write_in_the_working_folder_is_ignored_by_git():
    if not (ROOT / ".git").exists():
        unavailable("not a git checkout")
    written = ["gradsweep.sqlite", "gradsweep-broker.sqlite", "demo-curves.png", "demo-final.png", LOG_FILE,
               "loss-curve.png",  # `gradsweep train`'s default
               "one-run.png", "curves.png", "curves.csv"]  # the tour's and the command table's
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *written], cwd=ROOT, capture_output=True,
                             text=True).stdout.split()
    assert ignored == written


# ---- A tour of a sweep ----


def test_the_tour_of_a_sweep_as_typed(stack, tmp_path):
    lines = commands(blocks("A tour of a sweep", "bash")[0])
    servers = [line for line in lines if line.endswith("&")]
    # `stack` has done what these do: the tables migrated, the API and a worker of two processes started.
    assert [line.split()[:2] for line in servers] == [["gradsweep", "api"], ["gradsweep", "worker"]]
    assert "--concurrency 2" in servers[1]
    sweep_id = None
    outputs = {}
    for line in lines:
        if line in servers:
            continue
        if sweep_id is not None:  # the README's sweep is sweep 1 on a new database; here it may be another
            line = re.sub(r"^(gradsweep \w+) 1\b", rf"\g<1> {sweep_id}", line)
        done = run_shell(line, stack.env, tmp_path)
        assert done.returncode == 0, f"{line}\n{done.stdout}{done.stderr}"
        outputs[line.split()[1]] = done.stdout
        if line.startswith("gradsweep submit"):
            sweep_id = int(re.search(r"sweep (\d+): 24 runs queued", done.stdout).group(1))

    runs = all_runs(stack.http, sweep_id)
    assert stack.http.get(f"/sweeps/{sweep_id}").json()["name"] == "learning rate × optimizer"
    assert "21 succeeded, 3 diverged" in outputs["submit"]
    # As the README says below the picture: the three sgd runs at 0.1, above 2/λmax ≈ 0.074, diverged.
    assert sorted((r["optimizer"], r["learning_rate"], r["seed"]) for r in runs if r["status"] == "diverged") == [
        ("sgd", 0.1, 0), ("sgd", 0.1, 1), ("sgd", 0.1, 2)]
    assert 0.07 < stack.http.get(f"/sweeps/{sweep_id}").json()["stability_limit"] < 0.08

    best = sorted((r for r in runs if r["final_loss"] is not None), key=lambda r: r["final_loss"])[:5]
    table_rows = [line for line in outputs["status"].splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in table_rows] == [str(r["id"]) for r in best]
    assert png_size((tmp_path / "curves.png").read_bytes())[0] >= 600
    rows = list(csv.DictReader(io.StringIO((tmp_path / "curves.csv").read_text())))
    assert len(rows) == sum(r["epochs_done"] for r in runs) and {int(r["run_id"]) for r in rows} == {
        r["id"] for r in runs}


# ---- The command line ----


def test_the_command_tables_commands_are_the_clis():
    table = [line for line in section("The command line").splitlines() if line.startswith("| `")]
    documented = set()
    for row in table:
        for code in re.findall(r"`([^`]+)`", row.split(" | ")[0]):
            words = code.removeprefix("gradsweep ").split()
            documented.add(" ".join(words[:2]) if words[0] in ("db", "token") else words[0])
    cli = typer.main.get_command(app)
    existing = set()
    for name, command in cli.commands.items():
        subcommands = getattr(command, "commands", None)
        existing |= {f"{name} {sub}" for sub in subcommands} if subcommands else {name}
    assert documented == existing


# ---- From Python or a notebook ----


@pytest.fixture
def notebook_settings(stack, monkeypatch):
    """The settings `Client()` reads, pointing at `stack`, as a notebook's environment would."""
    monkeypatch.setenv("GRADSWEEP_API_URL", stack.url)
    monkeypatch.setenv("GRADSWEEP_API_TOKEN", stack.env.get("GRADSWEEP_API_TOKEN", ""))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_the_python_example_as_a_notebook_runs_it(stack, notebook_settings):
    (code,) = blocks("From Python or a notebook", "python")
    # Run as two notebook cells, checked between them: everything, then the last line, which deletes the sweep.
    cells = code.rstrip().rsplit("\n", 1)
    assert cells[1].startswith("client.delete_sweep(")
    notebook: dict = {}
    exec(compile(cells[0], "README.md", "exec"), notebook)
    client, sweep = notebook["client"], notebook["sweep"]

    runs = notebook["runs"]
    assert len(runs) == 30 and set(runs["status"]) == {"succeeded"}
    assert set(notebook["finals"]["count"]) == {5}
    # The mean over seeds is over the same five seeds at every epoch: recomputed here from the arrays.
    assert list(notebook["by_seed"].columns) == [0, 1, 2, 3, 4]
    mean = notebook["mean"]
    assert len(mean) == 2 * 3 * 300
    curves = client.curves(sweep["id"])
    for (optimizer, learning_rate), group in runs.groupby(["optimizer", "learning_rate"]):
        expected = np.mean([curves[run_id][1] for run_id in group.index], axis=0)
        assert np.allclose(mean.loc[(optimizer, learning_rate)].to_numpy(), expected, rtol=1e-12, atol=0)
    # The README's warning: per epoch, down-sampled curves would mix different sets of seeds.
    sampled = client.curves_frame(sweep["id"], points=200)
    assert sampled.groupby(["optimizer", "learning_rate", "epoch"])["seed"].nunique().min() < 5

    search = client.sweep(notebook["search"]["id"])
    assert search["status"] == "finished" and search["n_runs"] == 90
    best = notebook["best"]
    assert len(best) == 5 and best["final_loss"].is_monotonic_increasing

    exec(compile(cells[1], "README.md", "exec"), notebook)
    assert sweep["id"] not in [s["id"] for s in client.sweeps()]


# ---- Searches ----


@pytest.mark.parametrize("file", ["search.yaml", "hyperband.yaml"])
def test_the_sweep_files_submitted_with_the_cli(stack, tmp_path, file):
    (text,) = [block for block in blocks("Searches", "yaml") if block.startswith(f"# {file}")]
    (tmp_path / file).write_text(text)
    done = gradsweep("submit", "--file", file, "--wait", env=stack.env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    sweep_id = int(re.search(r"sweep (\d+):", done.stdout).group(1))
    sweep = stack.wait_for_sweep(sweep_id, timeout=300)  # --wait returned once no run was queued or running
    runs = sweep["runs"]

    assert sweep["name"] == Path(file).stem and len(runs) == 90  # 30 points × 3 seeds
    assert {r["status"] for r in runs} <= ENDED and {r["epochs"] for r in runs} == {1000}
    assert {r["optimizer"] for r in runs} <= {"sgd", "momentum", "adam"}
    assert all(0.001 <= r["learning_rate"] <= 1 for r in runs)
    by_point: dict = {}
    for run in runs:
        by_point.setdefault(run["point"], []).append(run)
    assert len(by_point) == 30 and all(sorted(r["seed"] for r in point) == [0, 1, 2] for point in by_point.values())
    if file == "search.yaml":
        assert all(0.5 <= r["beta"] <= 0.99 for r in runs if r["optimizer"] == "momentum")
    else:  # hyperband: some points stopped at a rung, each point's seeds together
        assert any(r["status"] == "stopped_early" for r in runs)
        for point in by_point.values():
            assert len({r["status"] == "stopped_early" for r in point}) == 1


# ---- docs/engine.md ----


def test_the_engine_example():
    (code,) = blocks(None, "python", ROOT / "docs" / "engine.md")
    namespace: dict = {}
    exec(compile(code, "docs/engine.md", "exec"), namespace)
    assert (namespace["a"].grad, namespace["b"].grad) == (2.0, -1.0)  # as its comment says
    assert namespace["W"].grad.shape == (50, 1)
