"""The attack suite's target: a real `gradsweep api` process on the embedded defaults, probed as an attacker would.

No worker runs: a probe looks at what the API accepts, answers and stores, not at training.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.processes import Stack, embedded_settings, running_stack


@pytest.fixture(scope="module")
def open_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """An API without a token, as `gradsweep api` starts on a laptop."""
    workdir = tmp_path_factory.mktemp("attacks")
    with running_stack(embedded_settings(workdir), workdir, concurrency=None) as stack:
        yield stack
