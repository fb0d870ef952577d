"""Reads whose size an attacker chooses: the API's memory must not grow with the sweep it serves (issue 22).

A 10,000-run × 100,000-epoch sweep is 8 GB of losses; the CSV and every epoch's JSON
used to be built whole in the API's memory. Here a 4 × 10^6-loss sweep (32 MB of
float64) must be served within a peak of MEMORY_CAP above the API's resident memory
before the request: built whole, the JSON alone needs several times that, the CSV ten.
"""

from __future__ import annotations

import pytest

from benchmarks.common import fill_sweep, peak_rss, reset_peak_rss
from gradsweep.service.api.exports import COLUMNS
from gradsweep.service.storage import Storage

RUNS, EPOCHS = 40, 100_000
MEMORY_CAP = 80 * 2**20


@pytest.fixture(scope="module")
def big_sweep(open_api) -> int:
    """RUNS × EPOCHS losses, written as workers would write them."""
    created = open_api.http.post("/sweeps", json={"name": "big", "learning_rates": {"logspace": [1e-3, 1e-1, RUNS]},
                                                  "seeds": [0], "epochs": EPOCHS})
    assert created.status_code == 201, created.text
    sweep_id = created.json()["id"]
    storage = Storage(open_api.env["GRADSWEEP_DATABASE_URL"])
    fill_sweep(storage, [run.id for run in storage.list_runs(sweep_id)], EPOCHS)
    storage.close()
    return sweep_id


def served_within_cap(api, path: str) -> tuple[bytes, bytes, int]:
    """The answer's first and last bytes and its size, read as it streams; asserts the API's peak memory meanwhile."""
    pid = api.named["api"].pid
    reset_peak_rss(pid)
    before = peak_rss(pid)
    head, tail, size = b"", b"", 0
    with api.http.stream("GET", path, headers={"Accept-Encoding": "identity"}, timeout=120) as answer:
        assert answer.status_code == 200
        for piece in answer.iter_raw():
            head = head if len(head) >= 100 else (head + piece)[:100]
            tail = (tail + piece)[-100:]
            size += len(piece)
    grown = peak_rss(pid) - before
    assert grown < MEMORY_CAP, f"{path}: the API grew by {grown / 2**20:.0f} MB to serve {size / 2**20:.0f} MB"
    return head, tail, size


def test_every_epochs_json_is_streamed_in_bounded_memory(open_api, big_sweep):
    head, tail, size = served_within_cap(open_api, f"/sweeps/{big_sweep}/losses")
    assert head.startswith(b'{"sweep_id":%d,"runs":[{"run_id":' % big_sweep) and tail.endswith(b',"sampled_epochs":null}]}')
    assert size > RUNS * EPOCHS * 10  # every loss, as text


def test_the_csv_is_streamed_in_bounded_memory(open_api, big_sweep):
    head, tail, size = served_within_cap(open_api, f"/sweeps/{big_sweep}/losses?format=csv")
    assert head.startswith(",".join(COLUMNS).encode() + b"\n1,,0.001,0,sgd,")
    assert tail.endswith(b"\n") and tail.splitlines()[-1].split(b",")[-2] == str(EPOCHS - 1).encode()
    assert size > RUNS * EPOCHS * 30  # a row per loss


def test_compare_draws_a_sweep_given_twice_once(open_api, big_sweep):
    small = open_api.http.post("/sweeps", json={"name": "twice-given", "learning_rates": [0.01], "seeds": [0],
                                                "epochs": 10}).json()["id"]
    repeated = ",".join([str(small)] * 30 + [str(big_sweep)] * 5)
    answer = open_api.http.get("/compare/plot.svg", params={"sweeps": repeated}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.text.count(f"{big_sweep} big: best lr") == 1  # the legend's entry, in the SVG's text comments


def test_compare_refuses_more_than_twenty_different_sweeps_by_name(open_api):
    answer = open_api.http.get("/compare/plot.png", params={"sweeps": ",".join(map(str, range(1, 22)))})
    assert answer.status_code == 422
    assert any(error["loc"] == ["query", "sweeps"] for error in answer.json()["detail"])


@pytest.mark.parametrize("body", [
    {"name": "huge", "learning_rates": {"logspace": [1e-3, 1e-1, 100]}, "seeds": list(range(20)), "epochs": 100_000},
    {"name": "huge", "method": "grid",
     "parameters": {"learning_rate": {"values": [1e-3, 1e-2]}, "seed": {"values": list(range(1_000))},
                    "epochs": {"values": [100, 100_000]}}},
])
def test_a_sweep_of_more_losses_than_the_limit_is_a_422_naming_runs_and_epochs(open_api, body):
    """2,000 or 4,000 runs, and 100,000 epochs, are each allowed; together they make 2 × 10^8 losses."""
    before = open_api.http.get("/sweeps").json()
    answer = open_api.http.post("/sweeps", json=body)
    assert answer.status_code == 422, answer.text
    assert "runs × epochs" in answer.text and "at most 100000000" in answer.text
    assert open_api.http.get("/sweeps").json() == before


def test_a_down_sampled_answer_too_large_to_keep_is_streamed_too(open_api, big_sweep):
    """`?points=` of every epoch is every loss: streamed as the full answer is, never held whole."""
    _, tail, size = served_within_cap(open_api, f"/sweeps/{big_sweep}/losses?points=100000")
    assert tail.endswith(b"]}]}") and size > RUNS * EPOCHS * 10
