"""Deployment fixtures: `built_project`, one copy of the project with its images built offline once for all
the deployment tests; `project`, that copy for one test, its stack taken down with its volumes afterwards."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.deploy.compose import Project
from tests.integration.faults import count

OFFLINE_BUILD = "docker/offline-build.sh"


@pytest.fixture(scope="session")
def built_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """The repository copied to a folder of its own, with .env from .env.example and the README's offline build run.

    Every test that brings the stack up takes it down with its volumes.
    """
    project = Project(tmp_path_factory.mktemp("compose"))
    project.run("cp .env.example .env")
    started = time.monotonic()
    built = subprocess.run(["bash", OFFLINE_BUILD], cwd=project.directory, env=project.environment(),
                           capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout + built.stderr
    count("deploy: offline build, seconds", round(time.monotonic() - started))
    yield project
    project.down()


@pytest.fixture
def project(built_project: Project) -> Iterator[Project]:
    yield built_project
    built_project.down()
