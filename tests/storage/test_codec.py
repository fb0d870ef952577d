"""PostgreSQL's binary formats for losses, checked without a database (tests/test_storage.py writes and
reads them through a real PostgreSQL): what binary_copy writes, from_array_send reads back bit for bit."""

import struct

import numpy as np
import pytest

from gradsweep.service.storage import codec

CURVES = [np.array([0.1 + 0.2, 5e-324, 1e300, -0.0, 0.5]), np.random.default_rng(0).random(1_000), np.empty(0)]


def rows_of(copy: bytes) -> list[tuple[int, int, bytes]]:
    """(run_id, first_epoch, the array's binary form) of each row of a binary COPY."""
    assert copy.startswith(b"PGCOPY\n\xff\r\n\x00") and copy.endswith(b"\xff\xff")
    rows, at = [], 19  # signature (11), flags (4), header extension length (4)
    while copy[at:at + 2] != b"\xff\xff":
        fields, = struct.unpack_from(">h", copy, at)
        assert fields == 3
        at += 2
        values = []
        for _ in range(fields):
            size, = struct.unpack_from(">i", copy, at)
            values.append(copy[at + 4:at + 4 + size])
            at += 4 + size
        rows.append((struct.unpack(">q", values[0])[0], struct.unpack(">i", values[1])[0], values[2]))
    return rows


def test_a_binary_copy_holds_each_chunk_and_its_array_reads_back_bit_for_bit():
    chunks = [(run_id, 10 * run_id, curve) for run_id, curve in enumerate(CURVES[:2], start=1)]
    rows = rows_of(codec.binary_copy(chunks))
    assert [(run_id, first) for run_id, first, _ in rows] == [(1, 10), (2, 20)]
    for (_, _, array), (_, _, curve) in zip(rows, chunks, strict=True):
        assert codec.from_array_send(array).tobytes() == curve.tobytes()


def test_an_empty_array_has_no_elements():
    assert codec.from_array_send(struct.pack(">iii", 0, 0, 701)).size == 0


@pytest.mark.parametrize("curve", CURVES, ids=["edge values", "random", "empty"])
def test_sqlite_bytes_read_back_as_float64(curve):
    read = codec.from_little_endian(curve.astype("<f8").tobytes())
    assert read.dtype == np.float64 and read.tobytes() == curve.tobytes()
