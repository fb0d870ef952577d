"""Schemathesis against the running API's own /openapi.json: thousands of generated requests, valid and
invalid, and not one gets a 5xx or a response that breaks the document; with each role.

It runs as the `schemathesis` command a user would run, against a real `gradsweep api`: open (no
token, as on a laptop), with a write token, and with a read token, which must change nothing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.faults import count
from tests.support.processes import Stack, embedded_settings, gradsweep

# Every check but positive_data_acceptance, which expects every schema-valid body to be
# accepted: ours also has rules across fields that JSON Schema cannot state (the grid's
# size, n_samples × n_features, logspace's low ≤ high, epochs up to a configured limit).
CHECKS = ["--checks", "all", "--exclude-checks", "positive_data_acceptance"]
WRITE_TOKEN = "fuzz-write-token"
# Examples per operation: the open API gets the most; the roles' runs add what differs with a token.
# One schemathesis worker: with two threads, Python 3.11's AST validation sometimes fails in schemathesis
# itself ("AST constructor recursion depth mismatch"), a runtime error that is not the API's.
EXAMPLES = {"open": 250, "write": 120, "read": 80}


@pytest.mark.parametrize("role", ["open", "write", "read"])
def test_no_generated_request_gets_a_5xx_or_breaks_the_schema(tmp_path: Path, role: str):
    # small limits keep generated sweeps cheap; the rules are the same
    settings = embedded_settings(tmp_path, GRADSWEEP_MAX_RUNS_PER_SWEEP="20", GRADSWEEP_MAX_EPOCHS="50",
                                 GRADSWEEP_API_TOKEN="" if role == "open" else WRITE_TOKEN)
    stack = Stack(settings, tmp_path)
    try:
        stack.migrate()
        stack.start_api()
        for name in ("a", "b"):  # something for generated ids to find
            stack.http.post("/sweeps", json={"name": name, "learning_rates": [0.01], "seeds": [0, 1], "epochs": 5})
        token = WRITE_TOKEN
        if role == "read":
            made = gradsweep("token", "create", "fuzzer", "--role", "read", env=stack.env, cwd=tmp_path)
            token = made.stdout.strip().splitlines()[-1]
        before = stack.http.get("/audit", params={"limit": 1000}).json(), stack.http.get("/sweeps").json()
        # On an open API the first token made closes it (as it should), and the rest of the run would be 401s:
        # the write token's run fuzzes /tokens instead.
        auth = (["--exclude-path", "/tokens"] if role == "open"
                else ["--header", f"Authorization: Bearer {token}"])
        fuzz = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", f"{stack.url}/openapi.json", *CHECKS, *auth,
             "--max-examples", str(EXAMPLES[role]), "--phases", "examples,coverage,fuzzing", "--workers", "1",
             "--request-timeout", "30", "--seed", "1", "--no-color"],
            cwd=tmp_path, capture_output=True, text=True, timeout=600)
        after = stack.http.get("/audit", params={"limit": 1000}).json(), stack.http.get("/sweeps").json()
    finally:
        stack.stop()
    generated = int(re.search(r"(\d+) generated", fuzz.stdout).group(1))
    count(f"fuzzed requests ({role})", generated)
    count(f"fuzzed requests answered 5xx ({role})", fuzz.stdout.count("Server error"))
    assert fuzz.returncode == 0, fuzz.stdout[-5000:]
    assert generated >= 10 * EXAMPLES[role]
    if role == "read":  # every write was refused: nothing was created, cancelled, retried, deleted or revoked
        assert after == before
    else:
        assert len(after[0]) > len(before[0])  # the fuzz did change things, so a read token's run means something
