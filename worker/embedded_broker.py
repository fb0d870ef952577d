"""The embedded broker: kombu's SQLAlchemy transport on a SQLite file, so one machine needs no server.

Three changes to kombu's transport, registered under its own name `sqla` so that
a `sqla+sqlite:///...` broker URL picks them up:
- each channel's database session is used under a lock: when a pool process
  dies, Celery puts its message back from another thread than the one reading
  the queue, and two threads in one session crash the worker ("This session is
  in 'prepared' state");
- it polls an empty queue every 50 ms instead of every second, which otherwise
  leaves each worker idle for up to a second between short runs;
- it deletes delivered messages, which kombu keeps in its table forever;
- it declares a queue that another process declares at the same moment (the
  API's first message and a starting worker) without dying of the unique key:
  kombu's own lock is per process, and its worker stops on the IntegrityError.
It still forgets the messages a worker held if the whole worker is killed (they
are marked delivered when handed out): our own database, not the broker, keeps
runs from being lost (see worker.reaper).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import sqlalchemy as kombu_sqlalchemy
from sqlalchemy.exc import IntegrityError

CLEANUP_SECONDS = 10.0


class Channel(kombu_sqlalchemy.Channel):
    _last_cleanup = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._session_lock = threading.RLock()
        super().__init__(*args, **kwargs)

    def _get(self, queue: str) -> object:
        with self._session_lock:
            payload = super()._get(queue)
            if time.monotonic() - self._last_cleanup > CLEANUP_SECONDS:
                self._last_cleanup = time.monotonic()
                self.session.query(self.message_cls).filter(self.message_cls.visible.is_(False)).delete()
                self.session.commit()
            return payload

    def _get_or_create(self, queue: str) -> object:
        with self._session_lock:
            try:
                return super()._get_or_create(queue)
            except IntegrityError:  # created by another process since kombu looked
                self.session.rollback()
                return self.session.query(self.queue_cls).filter(self.queue_cls.name == queue).one()

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        with self._session_lock:
            super()._put(queue, payload, **kwargs)

    def _size(self, queue: str) -> int:
        with self._session_lock:
            return super()._size(queue)

    def _purge(self, queue: str) -> int:
        with self._session_lock:
            return super()._purge(queue)


class Transport(kombu_sqlalchemy.Transport):
    Channel = Channel
    polling_interval = 0.05


TRANSPORT_ALIASES["sqla"] = f"{__name__}:Transport"
