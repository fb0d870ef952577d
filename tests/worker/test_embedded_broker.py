"""The embedded broker (kombu's SQLAlchemy transport on a SQLite file) with two processes at once."""

from __future__ import annotations

from kombu import Connection, Queue
from sqlalchemy import event

import gradsweep.worker.embedded_broker  # noqa: F401  (registers the `sqla` transport)


def test_a_queue_that_another_process_declares_meanwhile_is_taken_not_fatal(tmp_path):
    """The API's first message and a starting worker declare the queue at the same moment.

    Kombu looks the queue up, finds none and inserts it; here the other connection
    inserts it in between, as another process did when a worker stopped on the unique key.
    """
    url = f"sqla+sqlite:///{tmp_path}/broker.sqlite"
    with Connection(url) as api, Connection(url) as worker:
        api_channel, worker_channel = api.channel(), worker.channel()

        @event.listens_for(worker_channel.session, "before_flush", once=True)
        def declared_by_the_api_meanwhile(*_: object) -> None:
            Queue("jobs", channel=api_channel).declare()

        Queue("jobs", channel=worker_channel).declare()

        api.SimpleQueue("jobs").put({"job": 1})
        received = worker.SimpleQueue("jobs").get(timeout=5)
        assert received.payload == {"job": 1}
        received.ack()
        assert worker_channel.session.query(worker_channel.queue_cls).filter_by(name="jobs").count() == 1
