"""Takes back runs that nobody is working on, so that no run is lost or stays `running` forever.

Our database, not the broker, is what says a run still has to be done. Every
worker's main process checks, every quarter of a lease (GRADSWEEP_RUN_LEASE_SECONDS):
- for running runs quiet for longer than the lease (a worker writes a running
  run's losses, and so its heartbeat, at least every 0.5 s): their worker is gone.
  They are queued again; after GRADSWEEP_MAX_ATTEMPTS attempts, marked failed.
- when the broker's queue is empty, for runs queued for longer than the lease:
  their message is gone (a worker was killed with it in hand). They are enqueued again.
- for Bayesian searches whose wave has ended with no next wave proposed: the worker
  that ended it died first. It proposes the wave (worker/waves.py).
This is what recovers a run when a worker is killed: the embedded broker forgets
the messages the worker held, and Redis would redeliver them only after its
one-hour visibility timeout.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import timedelta

from celery.signals import worker_ready, worker_shutdown

from gradsweep.service.settings import get_settings
from gradsweep.service.storage import Storage, StorageError
from gradsweep.worker.queue import BrokerUnavailable, enqueue_jobs, waiting_messages
from gradsweep.worker.waves import propose_next_wave

log = logging.getLogger(__name__)
_stop = threading.Event()
# This process forks new pool processes (after a kill, say). One forked while a pass
# had SQLite open would inherit SQLite's record of that connection's locks and wait
# on them forever ("database is locked"), so a pass and a fork take turns.
_pass_or_fork = threading.Lock()
os.register_at_fork(before=_pass_or_fork.acquire, after_in_parent=_pass_or_fork.release,
                    after_in_child=_pass_or_fork.release)


def reap_once(storage: Storage) -> None:
    settings = get_settings()
    lease = timedelta(seconds=settings.run_lease_seconds)
    requeued, failed = storage.requeue_stale_runs(lease, settings.max_attempts, enqueue_jobs)
    if requeued:
        log.warning("requeued runs %s: their worker stopped responding", requeued)
    if failed:
        log.error("failed runs %s: their worker stopped responding on every attempt", failed)
    if waiting_messages() == 0:
        lost = storage.requeue_unclaimed_runs(lease, enqueue_jobs)
        if lost:
            log.warning("enqueued runs %s again: queued for over %s with no message waiting", lost, lease)
    for sweep_id in storage.waiting_searches():
        try:
            if propose_next_wave(storage, sweep_id, enqueue_jobs):
                log.warning("proposed the next wave of sweep %s: the worker that ended its last wave did not",
                            sweep_id)
        except (StorageError, BrokerUnavailable):
            raise
        except Exception:  # a search that cannot go on must not stop the reaper
            log.exception("could not propose the next wave of sweep %s", sweep_id)


def _reap_until_stopped() -> None:
    interval = max(get_settings().run_lease_seconds / 4, 0.5)
    while not _stop.wait(interval):
        with _pass_or_fork:  # a Storage per pass, closed before any fork (see _pass_or_fork)
            storage = Storage(get_settings().database_url)
            try:
                reap_once(storage)
            except (StorageError, BrokerUnavailable) as error:
                log.warning("could not check for stale runs: %s", error)
            finally:
                storage.close()


@worker_ready.connect
def _start(**_: object) -> None:
    threading.Thread(target=_reap_until_stopped, name="gradsweep-reaper", daemon=True).start()


@worker_shutdown.connect
def _stop_reaping(**_: object) -> None:
    _stop.set()
