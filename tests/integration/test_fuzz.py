"""Schemathesis against the running API's own /openapi.json: over five thousand generated requests,
valid and invalid, and not one gets a 5xx or a response that breaks the document.

It runs as the `schemathesis` command a user would run, against a real `gradsweep api`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.integration.faults import count
from tests.integration.stack import Stack

# Every check but positive_data_acceptance, which expects every schema-valid body to be
# accepted: ours also has rules across fields that JSON Schema cannot state (the grid's
# size, n_samples × n_features, logspace's low ≤ high, epochs up to a configured limit).
CHECKS = ["--checks", "all", "--exclude-checks", "positive_data_acceptance"]


def test_no_generated_request_gets_a_5xx_or_breaks_the_schema(tmp_path: Path):
    stack = Stack({"GRADSWEEP_DATABASE_URL": f"sqlite:///{tmp_path}/gradsweep.sqlite",
                   "GRADSWEEP_BROKER_URL": f"sqla+sqlite:///{tmp_path}/gradsweep-broker.sqlite",
                   # small limits keep generated sweeps cheap; the rules are the same
                   "GRADSWEEP_MAX_RUNS_PER_SWEEP": "20", "GRADSWEEP_MAX_EPOCHS": "50"}, tmp_path)
    try:
        stack.migrate()
        stack.start_api()
        for name in ("a", "b"):  # something for generated ids to find
            stack.http.post("/sweeps", json={"name": name, "learning_rates": [0.01], "seeds": [0, 1], "epochs": 5})
        fuzz = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", f"{stack.url}/openapi.json", *CHECKS,
             "--max-examples", "450", "--phases", "examples,coverage,fuzzing", "--workers", "2",
             "--request-timeout", "30", "--seed", "1", "--no-color"],
            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    finally:
        stack.stop()
    generated = int(re.search(r"(\d+) generated", fuzz.stdout).group(1))
    count("fuzzed requests", generated)
    count("fuzzed requests answered 5xx", fuzz.stdout.count("Server error"))
    assert fuzz.returncode == 0, fuzz.stdout[-5000:]
    assert generated >= 5000
