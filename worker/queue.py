"""What senders (the API) use: put runs on the queue, and check that the broker answers."""

from __future__ import annotations

from collections.abc import Sequence

from kombu.exceptions import ChannelError, OperationalError

from worker.app import QUEUE, TRAIN_RUN, app

# Fail fast when the broker is down: the API answers 503 instead of hanging.
RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}


class BrokerUnavailable(Exception):
    """The broker could not be reached; nothing was enqueued by the failing call."""


def enqueue_runs(run_ids: Sequence[int]) -> None:
    """One message per run, over one connection."""
    try:
        with app.producer_or_acquire() as producer:
            for run_id in run_ids:
                app.send_task(TRAIN_RUN, args=[run_id], producer=producer, retry=True, retry_policy=RETRY_POLICY)
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
