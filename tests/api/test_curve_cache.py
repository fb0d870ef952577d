"""The encoded curves of a sweep are kept until the sweep changes, and never handed out stale."""

import gzip
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import zstandard

from gradsweep.service.api.curve_cache import CurveCache, sweep_curves_json
from gradsweep.service.storage import RunConfig, RunStatus, Storage
from tests.support.writes import finish_run, start_run, write_losses

CONFIG = RunConfig(learning_rate=0.01, seed=0, optimizer="sgd", epochs=1_000, n_samples=100, n_features=50,
                   data_seed=0, mode="tensor")


def curves(body: bytes) -> dict[int, list[float]]:
    return {run["run_id"]: run["losses"] for run in json.loads(body)["runs"]}


def test_a_sweeps_curves_are_encoded_once_until_a_worker_writes(storage: Storage) -> None:
    sweep, (first, second) = storage.create_sweep("s", [CONFIG, CONFIG], lambda jobs: None)
    cache = CurveCache(capacity=2**20)
    start_run(storage, first.id, "w")
    write_losses(storage, first.id, 0, np.linspace(1.0, 0.5, 300))

    once = sweep_curves_json(storage, cache, sweep.id, 50, storage.sweep_version(sweep.id))
    assert sweep_curves_json(storage, cache, sweep.id, 50, storage.sweep_version(sweep.id)) is once  # kept
    assert len(curves(once)[first.id]) <= 50 and curves(once)[second.id] == []

    write_losses(storage, first.id, 300, [0.1])  # a spike down at the end: the new curve must show it
    again = sweep_curves_json(storage, cache, sweep.id, 50, storage.sweep_version(sweep.id))
    assert again is not once and 0.1 in curves(again)[first.id]
    finish_run(storage, first.id, RunStatus.SUCCEEDED, final_loss=0.1)
    whole = sweep_curves_json(storage, cache, sweep.id, None, storage.sweep_version(sweep.id))
    assert curves(whole)[first.id] == storage.run_losses(first.id).tolist()
    finished = json.loads(whole)["runs"][0]
    assert (finished["status"], finished["final_loss"], finished["best_loss"]) == ("succeeded", 0.1, 0.1)


def test_the_cache_keeps_at_most_its_capacity_and_drops_a_sweeps_older_versions() -> None:
    cache = CurveCache(capacity=100)
    cache.put((1, 50, 1), b"x" * 40)
    cache.put((2, 50, 1), b"y" * 40)
    cache.put((1, 50, 2), b"z" * 40)  # sweep 1's version 1 goes, not sweep 2
    assert cache.get((1, 50, 1)) is None and cache.get((2, 50, 1)) == b"y" * 40
    cache.put((3, 50, 1), b"w" * 40)  # over capacity: the least recently used goes
    assert cache.get((1, 50, 2)) is None and cache.get((2, 50, 1)) is not None
    cache.put((4, None, 1), b"v" * 101)  # bigger than the whole cache: not kept
    assert cache.get((4, None, 1)) is None


def test_threads_asking_for_the_same_missing_entry_compute_it_once() -> None:
    cache, calls = CurveCache(capacity=2**20), []
    started = threading.Event()

    def compute() -> bytes:
        calls.append(1)
        started.wait(5)  # every thread has asked before the first answer is ready
        return b"curves"

    with ThreadPoolExecutor(8) as pool:
        answers = [pool.submit(cache.get_or_compute, (1, 50, 1), compute) for _ in range(8)]
        time.sleep(0.2)
        started.set()
    assert [answer.result() for answer in answers] == [b"curves"] * 8 and len(calls) == 1


def test_the_compressed_curves_are_kept_beside_the_json_and_decompress_to_it(storage: Storage) -> None:
    sweep, (run,) = storage.create_sweep("s", [CONFIG], lambda jobs: None)
    start_run(storage, run.id, "w")
    write_losses(storage, run.id, 0, np.linspace(1.0, 0.5, 1_000))
    cache, version = CurveCache(capacity=2**20), storage.sweep_version(sweep.id)

    packed = sweep_curves_json(storage, cache, sweep.id, 200, version, "zstd")
    assert sweep_curves_json(storage, cache, sweep.id, 200, version, "zstd") is packed  # compressed once
    plain = sweep_curves_json(storage, cache, sweep.id, 200, version)
    assert zstandard.ZstdDecompressor().decompress(packed) == plain and len(packed) < len(plain) / 2
    assert gzip.decompress(sweep_curves_json(storage, cache, sweep.id, 200, version, "gzip")) == plain
