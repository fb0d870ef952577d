"""A sweep's loss curves as JSON (and its plots), encoded once for each state of the sweep and kept in memory.

Reading and encoding the curves of 10,000 runs costs about a second, far more than
sending them, and a finished sweep's curves never change; while a sweep runs, the
dashboard asks for them again every few seconds. So the encoded answer is kept under
(sweep, points, the sweep's version): `Storage.sweep_version` changes with every change
to the sweep's runs, from any worker, so a kept answer is never stale and nothing has
to be told to forget it. The version is read before the curves, so a write landing in
between leaves newer curves under an older version, never older ones under a newer.
The entries are bounded by bytes (`GRADSWEEP_CURVE_CACHE_BYTES`), least recently used
out first; each API process keeps its own. Requests for the same missing entry wait for
the one that computes it, rather than all computing it at once.

Only answers down-sampled to a bounded size are kept: every epoch of a large sweep is
read, encoded and sent a page of runs at a time instead (service/api/exports.py, issue 22).

The answer is also kept compressed, for the clients that accept it (browsers and httpx
take zstd): JSON of float64 losses compresses 3.1x at zstd's level 1, which costs 0.18 s
once for 10,000 curves of 200 points (50 MB) and 0.08 s a reading client to undo, while
every answer then sends 16 MB instead of 50. gzip is the fallback (2.6x, 0.6 s once).
"""

from __future__ import annotations

import gzip
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import zstandard

from gradsweep.service.api.exports import curves_json, sweep_pages
from gradsweep.service.storage import Storage

__all__ = ["CurveCache", "bounded_curves_json", "content_encoding", "streamed_curves_json", "sweep_curves_json"]

Key = tuple[int, Hashable, int]  # sweep id, what (the points of curves, a plot), version


class CurveCache:
    """Bytes by key, at most `capacity` bytes of them; safe to share between the API's threads."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[Key, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self._computing: dict[Key, threading.Lock] = {}

    def get_or_compute(self, key: Key, compute: Callable[[], bytes]) -> bytes:
        """The kept value, or `compute()`'s, computed once however many threads ask at the same time."""
        found = self.get(key)
        if found is not None:
            return found
        with self._lock:
            computing = self._computing.setdefault(key, threading.Lock())
        try:
            with computing:
                found = self.get(key)
                if found is None:
                    found = compute()
                    self.put(key, found)
                return found
        finally:
            with self._lock:
                self._computing.pop(key, None)

    def get(self, key: Key) -> bytes | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: Key, value: bytes) -> None:
        if len(value) > self.capacity:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            self._size += len(value) - (len(old) if old is not None else 0)
            self._entries[key] = value
            # The sweep's older versions are of no more use.
            for stale in [k for k in self._entries if k[0] == key[0] and k != key and k[2] != key[2]]:
                self._size -= len(self._entries.pop(stale))
            while self._size > self.capacity:
                _, dropped = self._entries.popitem(last=False)
                self._size -= len(dropped)


# Content codings we compress the curves in, best first, each with its compressor (fast levels: the
# answer is compressed once per state of the sweep, but the first reader waits for it).
_COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "zstd": lambda data: zstandard.ZstdCompressor(level=1).compress(data),
    "gzip": lambda data: gzip.compress(data, compresslevel=1, mtime=0),
}
# The same codings, a piece at a time, for answers too large to hold (`streamed_curves_json`).
_STREAM_COMPRESSORS: dict[str, Callable[[], Any]] = {
    "zstd": lambda: zstandard.ZstdCompressor(level=1).compressobj(),
    "gzip": lambda: zlib.compressobj(1, wbits=31),  # wbits 31: a gzip stream
}
# The most losses a down-sampled answer may have to be held whole and kept: some 25 MB of JSON (twice
# that while it is joined), 3x what a dashboard asks at most (charts.js's POINT_BUDGET); a larger one is streamed.
CACHED_LOSSES = 1_000_000


def content_encoding(accept_encoding: str | None) -> str | None:
    """Which of our codings a request's `Accept-Encoding` takes (None: send the JSON as it is).

    A coding given `q=0` is refused; a q that is not a number counts as given without one.
    """
    accepted = set()
    for part in (accept_encoding or "").lower().split(","):
        coding, _, parameters = part.partition(";")
        quality = parameters.strip().removeprefix("q=").strip()
        try:
            refused = quality != "" and float(quality) <= 0
        except ValueError:
            refused = False
        if not refused:
            accepted.add(coding.strip())
    return next((coding for coding in _COMPRESSORS if coding in accepted or "*" in accepted), None)


def sweep_curves_json(storage: Storage, cache: CurveCache, sweep_id: int, points: int | None, version: int,
                      encoding: str | None = None) -> bytes:
    """`GET /sweeps/{id}/losses` as JSON (schemas.SweepLosses), from the cache when the sweep has not changed.

    `version` is `storage.sweep_version(sweep_id)`, read before this call (see above).
    `encoding` (one `content_encoding` gives): the same JSON, compressed so. The answer is
    held whole: `bounded_curves_json` says whether it is small enough to be.
    """
    if encoding is not None:
        return cache.get_or_compute(_key(sweep_id, points, version, encoding), lambda: _COMPRESSORS[encoding](
            sweep_curves_json(storage, cache, sweep_id, points, version)))
    return cache.get_or_compute(_key(sweep_id, points, version, None),
                                lambda: b"".join(curves_json(sweep_id, sweep_pages(storage, sweep_id), points)))


def bounded_curves_json(storage: Storage, cache: CurveCache, sweep_id: int, points: int | None, version: int,
                        encoding: str | None = None) -> bytes | None:
    """`sweep_curves_json`, if its curves are down-sampled to at most CACHED_LOSSES losses in all;
    None otherwise: an answer that grows with the sweep is streamed (`streamed_curves_json`), never held."""
    if points is None:
        return None
    found = cache.get(_key(sweep_id, points, version, encoding))
    if found is None and sum(min(points, n) for n in storage.loss_counts(sweep_id).values()) > CACHED_LOSSES:
        return None
    return found or sweep_curves_json(storage, cache, sweep_id, points, version, encoding)


def streamed_curves_json(storage: Storage, sweep_id: int, points: int | None,
                         encoding: str | None = None) -> Iterator[bytes]:
    """`GET /sweeps/{id}/losses` as JSON, read, encoded and compressed a page of runs at a time, never kept."""
    pieces = curves_json(sweep_id, sweep_pages(storage, sweep_id), points)
    if encoding is None:
        return pieces
    return _compressed(pieces, _STREAM_COMPRESSORS[encoding]())


def _compressed(pieces: Iterator[bytes], compressor: Any) -> Iterator[bytes]:
    for piece in pieces:
        if out := compressor.compress(piece):
            yield out
    yield compressor.flush()


def _key(sweep_id: int, points: int | None, version: int, encoding: str | None) -> Key:
    return (sweep_id, points if encoding is None else (points, encoding), version)
