"""The README's first command: `gradsweep demo`, on the embedded defaults, in an empty folder."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.processes import gradsweep
from tests.integration.test_end_to_end import png_size


def processes_in(folder: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(os.readlink(entry / "cwd")) == folder:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_the_demo_trains_a_sweep_plots_it_and_stops_what_it_started(tmp_path):
    env = {name: value for name, value in os.environ.items() if not name.startswith("GRADSWEEP_")}
    demo = gradsweep("demo", "--epochs", "100", env=env, cwd=tmp_path, timeout=300)
    assert demo.returncode == 0, demo.stdout + demo.stderr

    assert "60 runs trained and stored" in demo.stdout
    for optimizer in ("sgd", "momentum", "adam"):
        assert optimizer in demo.stdout
    for kind in ("curves", "final"):
        assert png_size((tmp_path / f"demo-{kind}.png").read_bytes())[0] >= 600
    assert (tmp_path / "gradsweep.sqlite").exists()  # the embedded default database, in the working folder
    assert processes_in(tmp_path) == []
