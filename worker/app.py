"""The Celery app, and only that: broker, serialisation, delivery guarantees.

Tasks live in `worker.tasks`, the stale-run reaper in `worker.reaper`. The API sends them by name (`TRAIN_JOB`), so it
needs this module but never the training code.
"""

from celery import Celery

import gradsweep.worker.embedded_broker  # noqa: F401  (registers the embedded broker's transport)
from gradsweep.service.settings import get_settings

TRAIN_JOB = "gradsweep.train_job"
QUEUE = "gradsweep"


def make_celery() -> Celery:
    settings = get_settings()
    app = Celery("gradsweep", broker=settings.broker_url, include=["gradsweep.worker.tasks", "gradsweep.worker.reaper"])
    app.conf.update(
        # JSON only: a pickled message could run code in the worker.
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,  # results live in our database
        task_default_queue=QUEUE,
        # A message is acknowledged once its run is recorded, so a worker that dies
        # mid-run leaves it to be delivered again; the task is idempotent, which
        # makes that safe. Prefetch 1: a long run does not hold others back.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Celery waits this long for a dead pool process's result before it gives up on the
        # job (10 s by default), holding the job's prefetch slot; our results are in the database.
        worker_lost_wait=1.0,
        # No time limit here: each message carries its own, sized to its job (see worker.queue).
        broker_connection_retry_on_startup=True,
        broker_transport_options=_transport_options(settings.broker_url),
        worker_hijack_root_logger=False,
    )
    return app


def _transport_options(broker_url: str) -> dict:
    if broker_url.startswith("sqla+sqlite"):
        # kombu hands these to create_engine: wait for the file's lock rather than fail.
        return {"connect_args": {"timeout": 30}}
    return {}


app = make_celery()
