"""What senders (the API, the reaper) use: put jobs on the queue, and check that the broker answers."""

from __future__ import annotations

from collections.abc import Sequence

from kombu.exceptions import ChannelError, OperationalError

from gradsweep.service.storage import Job, RunConfig
from gradsweep.worker.app import QUEUE, TRAIN_JOB, app

# Fail fast when the broker is down: the API answers 503 instead of hanging.
RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}


class BrokerUnavailable(Exception):
    """The broker could not be reached; nothing was enqueued by the failing call."""


# Generous bounds on a job's time, from the seed's task (100 x 50) on a 2-core VM: scalar mode
# takes about 16 ms an epoch (3 us an element of X), a batched tensor epoch under 1 us a run.
SECONDS_PER_ELEMENT_EPOCH = {"scalar": 2e-5, "tensor": 2e-8}
SECONDS_PER_EPOCH = 2e-3


# After its soft limit a job has this long to record its runs as failed before it is killed.
HARD_LIMIT_GRACE_SECONDS = 30


def time_limit(config: RunConfig, batch_size: int) -> float:
    """The soft time limit of a job of `batch_size` runs like `config`, in seconds: long enough for its whole
    batch, at any load. The sender puts it in the job's message; the worker takes no less (worker.tasks.JobRequest)."""
    elements = batch_size * config.n_samples * config.n_features
    return 60 + config.epochs * (SECONDS_PER_EPOCH + elements * SECONDS_PER_ELEMENT_EPOCH[config.mode])


def enqueue_jobs(jobs: Sequence[Job]) -> None:
    """One message per job, holding its runs' ids, when they were queued and its time limits, over one connection."""
    try:
        with app.producer_or_acquire() as producer:
            for job in jobs:
                limit = time_limit(job.config, job.batch_size)
                app.send_task(TRAIN_JOB, args=[list(job.run_ids), job.queued_at.isoformat()],
                              soft_time_limit=limit, time_limit=limit + HARD_LIMIT_GRACE_SECONDS,
                              producer=producer, retry=True, retry_policy=RETRY_POLICY)
    except (OperationalError, OSError) as error:
        raise BrokerUnavailable(f"the broker is unreachable: {error}") from error


def waiting_messages() -> int:
    """How many messages wait on the queue (not those a worker has taken)."""
    try:
        with app.connection_for_read() as connection:
            return connection.default_channel.queue_declare(queue=QUEUE, passive=True).message_count
    except ChannelError:  # the queue does not exist yet, or any more: nothing waits
        return 0
    except (OperationalError, OSError) as error:
        raise BrokerUnavailable(f"the broker is unreachable: {error}") from error


def ping_broker() -> None:
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
    except (OperationalError, OSError) as error:
        raise BrokerUnavailable(f"the broker is unreachable: {error}") from error
