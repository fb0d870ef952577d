"""PostgreSQL's binary formats for float64 losses, written and read without the database: a binary COPY
of loss chunks, and a float8[]'s binary form (what array_send gives); and SQLite's little-endian bytes."""

import struct
from collections.abc import Iterable

import numpy as np

__all__ = ["binary_copy", "from_array_send", "from_little_endian"]

# PostgreSQL's binary formats. A COPY: a header, then per row the number of fields and, for
# each field, its length and its big-endian value; then -1. A float8[] (what array_send
# gives, and what COPY takes as the field's value): dimensions, a null flag, the element
# type's oid (701), each dimension's size and lower bound, then each element's length and value.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, length of the header extension


_COPY_TRAILER = b"\xff\xff"


_CHUNK_HEAD = struct.Struct(">hiqiiiiiiii")  # fields, run_id, first_epoch, the array's size and header


_FLOAT8_OID = 701


_ELEMENT = np.dtype([("size", ">i4"), ("value", ">f8")])


_ARRAY_HEADER_BYTES = 20  # a one-dimensional array's header


def binary_copy(chunks: Iterable[tuple[int, int, np.ndarray]]) -> bytes:
    """A binary COPY of loss_chunks (run_id, first_epoch, losses) rows."""
    parts = [_COPY_HEADER]
    for run_id, first_epoch, values in chunks:
        elements = np.empty(values.size, dtype=_ELEMENT)
        elements["size"], elements["value"] = 8, values
        parts.append(_CHUNK_HEAD.pack(3, 8, run_id, 4, first_epoch, _ARRAY_HEADER_BYTES + elements.nbytes,
                                      1, 0, _FLOAT8_OID, values.size, 1))
        parts.append(elements.tobytes())
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


def from_array_send(array: bytes) -> np.ndarray:
    """A float8[]'s values from its binary form (an empty array has no dimension, so no elements)."""
    if len(array) <= _ARRAY_HEADER_BYTES:
        return np.empty(0)
    return np.frombuffer(array, dtype=_ELEMENT, offset=_ARRAY_HEADER_BYTES)["value"].astype(np.float64)


def from_little_endian(blob: bytes) -> np.ndarray:
    """A chunk's values as SQLite keeps them."""
    return np.frombuffer(blob, dtype="<f8").astype(np.float64)
