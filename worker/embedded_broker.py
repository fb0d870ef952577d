"""The embedded broker: kombu's SQLAlchemy transport on a SQLite file, so one machine needs no server.

Two changes to kombu's transport, registered under its own name `sqla` so that
a `sqla+sqlite:///...` broker URL picks them up:
- it polls an empty queue every 50 ms instead of every second, which otherwise
  leaves each worker idle for up to a second between short runs;
- it deletes delivered messages, which kombu keeps in its table forever.
It still forgets a message whose worker dies mid-run (the message is marked
delivered when it is handed out): our own database, not the broker, keeps runs from being lost.
"""

from __future__ import annotations

import time

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import sqlalchemy as kombu_sqlalchemy

CLEANUP_SECONDS = 10.0


class Channel(kombu_sqlalchemy.Channel):
    _last_cleanup = 0.0

    def _get(self, queue: str) -> object:
        payload = super()._get(queue)
        if time.monotonic() - self._last_cleanup > CLEANUP_SECONDS:
            self._last_cleanup = time.monotonic()
            self.session.query(self.message_cls).filter(self.message_cls.visible.is_(False)).delete()
            self.session.commit()
        return payload


class Transport(kombu_sqlalchemy.Transport):
    Channel = Channel
    polling_interval = 0.05


TRANSPORT_ALIASES["sqla"] = f"{__name__}:Transport"
