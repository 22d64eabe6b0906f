"""The export format's pure parts (no Kafka): batch checking, re-encoded batches, a batch's tail."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import pytest
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from kmc.archive.export import encode_batch
from kmc.archive.format import HEADER, ArchiveError, batch_tail, read_batches
from tests.helpers import kmc


def built(base: int, count: int, codec: int = 0) -> bytearray:
    builder = DefaultRecordBatchBuilder(2, codec, False, -1, -1, -1, 1 << 20)
    for index in range(count):
        builder.append(index * 2, 1000 + index, b"k%d" % index, b"v%d" % index * 50, [("h", None), ("h", b"x")])
    raw = builder.build()
    HEADER.pack_into(raw, 0, base, *HEADER.unpack_from(raw)[1:])
    return raw


def records(raw: bytes) -> list[tuple]:
    return [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in DefaultRecordBatch(bytes(raw))]


@pytest.mark.parametrize("codec", [0, 1])  # none, gzip
def test_a_batch_tail_keeps_offsets_timestamps_and_headers(codec: int) -> None:
    raw = built(100, 5, codec)
    tail = batch_tail(raw, 2)
    assert records(tail) == records(raw)[2:]
    assert HEADER.unpack_from(tail)[12] == 3 and HEADER.unpack_from(tail)[5] & 7 == 0


def test_read_batches_checks_framing_crc_and_order() -> None:
    first, second = built(0, 3), built(10, 3)
    data = bytes(first + second)
    assert [b.base_offset for b in read_batches(io.BytesIO(data), "f", "t", 0)] == [0, 10]
    with pytest.raises(ArchiveError, match=r"t\[0\] damaged from offset 5 .*truncated"):
        list(read_batches(io.BytesIO(data[:-7]), "f", "t", 0))
    flipped = bytearray(data)
    flipped[len(first) + 80] ^= 1
    with pytest.raises(ArchiveError, match="offset 5 .*CRC"):
        list(read_batches(io.BytesIO(bytes(flipped)), "f", "t", 0))
    with pytest.raises(ArchiveError, match="out of order"):
        list(read_batches(io.BytesIO(bytes(second + first)), "f", "t", 0))
    with pytest.raises(ArchiveError, match="out of order"):
        list(read_batches(io.BytesIO(data), "f", "t", 0, end=12))


def test_decoded_records_are_written_at_their_source_offsets() -> None:
    decoded = [SimpleNamespace(offset=offset, timestamp=5, key=None, value=b"v", headers=[("n", None)])
               for offset in (40, 41, 45)]
    raw, base, last = encode_batch(decoded)
    assert (base, last) == (40, 45)
    assert [(r.offset, r.key, r.headers) for r in DefaultRecordBatch(bytes(raw))] == [
        (40, None, [("n", None)]), (41, None, [("n", None)]), (45, None, [("n", None)])]
    assert [b.records for b in read_batches(io.BytesIO(bytes(raw)), "f", "t", 0)] == [3]  # its CRC holds


@pytest.mark.parametrize("where", ["file/x", "file", "/proc/kmc-export"])
def test_an_export_directory_that_cannot_be_written_is_exit_3_before_connecting(tmp_path: Path, where: str) -> None:
    (tmp_path / "file").write_text("not a directory")
    destination = where if where.startswith("/") else str(tmp_path / where)
    # nothing listens on port 1: were kmc to connect first, this would be exit 4 after --timeout
    result = kmc("export", "127.0.0.1:1", "--to", destination, "--timeout", "30", expect=3)
    assert result.stderr.startswith(f"kmc: error: cannot write the export into {destination}: ")
    assert len(result.stderr.splitlines()) == 1


def test_an_export_makes_its_directory_before_connecting(tmp_path: Path) -> None:
    kmc("export", "127.0.0.1:1", "--to", str(tmp_path / "a" / "b"), "--timeout", "1", expect=4)
    assert (tmp_path / "a" / "b").is_dir() and not list((tmp_path / "a" / "b").iterdir())
