"""A loopback, single-node Aerospike test server that speaks enough of the wire protocol for tests.

A small server that the official ``aerospike`` Python client (19.x, C client 7.x) can connect to,
tend and use for every call the storage backend makes, so that ``make test`` needs no Aerospike
installation. It behaves like a single Aerospike Community Edition 8.1 node with default settings,
and ``tests/aerospike_conformance`` holds it to a real one call by call (``make test-aerospike``).
Section numbers (§) below refer to the wire protocol's parts: framing (§2), info (§3),
single-record messages (§4), batch (§5), scan and query (§6).

Run it as its own process (it must not run inside the test process: ``client.truncate()`` holds
the GIL while it waits for the answer). In tests::

    with start_aerospike_server(namespaces=("test",)) as server:
        client = aerospike.client({"hosts": [(server.host, server.port)]}).connect()
        ...
        server.restart()  # same port, data kept; the client reconnects by itself

By hand::

    python tests/support/aerospike_server.py --port 0 --namespaces test,bar \
        --max-record-size 1048576 [--data-file PATH] [--nsup-period 0] [--flush-max-ms 1000]

Once it listens it prints one line, ``READY <port>``, to stdout. SIGTERM or SIGINT stop it cleanly.

What it implements, as a Community Edition 8.1.2.0 node does it:

* Proto framing (§2): info (type 1) and AS_MSG (type 3) requests. A compressed request (type 4)
  is answered ENTERPRISE_ONLY (25), and replies are never compressed, as on Community Edition.
* The info commands the client uses to connect and tend (§3): ``node``, ``partition-generation``,
  ``build`` (8.1.2.0), ``user-agent-set`` (once per connection), ``peers-generation``,
  ``peers-clear-std``, ``replicas`` (one node owns all 4096 partitions of every namespace) and
  ``cluster-name``. It also answers ``namespaces``, ``status``, ``sets``, ``sets/<ns>[/<set>]``,
  ``namespace/<ns>``, ``truncate`` and ``truncate-namespace``, plus ``test-server-statistics``
  (request counters, not a real Aerospike command). Unknown commands give
  ``ERROR:4:unrecognized command``.
* Single-record commands (§4): get, select, exists, put, operate (read, write, incr, append,
  prepend, touch, delete-all) and remove, with the real server's order of checks: exists policy
  and generation, then the TTL, then the ops, then the size. TTLs: with ``nsup-period`` 0 (the
  default, as on a default server) any TTL other than 0, -1 and -2 is FORBIDDEN (22), a TTL over
  10 years is PARAMETER (4). The size checked against ``max-record-size`` (13) is the size of the
  record as a real 8.1 server stores it (:meth:`Record.size`, measured against one). Unknown
  namespaces give NAMESPACE (20).
* The batch protocol (§5): read, exists, read-bins, write/operate and remove rows.
* Scan and query of a set or a whole namespace (§6): partition list, resume digests, select
  lists, no-bins and max-records. Partitions are read one after the other and streamed, each
  under the lock on its own, so a scan sees records written meanwhile to partitions it has not
  reached yet, like a real scan (it is not a snapshot).
* Storage (``--data-file``): like a namespace on a device. Writes are acknowledged once they are
  in a write buffer that goes to the file every ``--flush-max-ms`` (1000, the real default) and on
  a clean stop: a SIGKILL loses the writes of the last flush interval, no more. Deletes are not
  durable, as on Community Edition (no durable deletes): after any restart a deleted record is
  back with its last written version, unless a truncate covered it.

What it does not implement:

* Requests answered with UNSUPPORTED_FEATURE (result 16): secondary-index queries (``where``),
  filter expressions, UDFs (``apply``, aggregations), CDT (list/map), bit, HLL and expression
  operations, background scans and queries, multi-record transactions.
* Security (admin messages close the connection), TLS, XDR, rack awareness, more than one node,
  PARTITION_DONE messages.
* Eviction, defragmentation, a namespace default TTL (0 means "never expire") and the TTL's
  share of the record size (a default server refuses TTLs anyway).
* A write that would leave a brand-new record without bins (e.g. ``remove_bin`` on a missing
  key) answers NOT_FOUND and stores nothing.

Standard library only.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import errno
import io
import json
import logging
import os
import selectors
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

LOG = logging.getLogger("aerospike_test_server")

# ---------------------------------------------------------------------------------------------
# Protocol constants
# ---------------------------------------------------------------------------------------------

PROTO_VERSION = 2
PROTO_TYPE_INFO = 1
PROTO_TYPE_ADMIN = 2
PROTO_TYPE_MESSAGE = 3
PROTO_TYPE_COMPRESSED = 4
PROTO_HEADER = struct.Struct(">Q")
PROTO_SIZE_MAX = 128 * 1024 * 1024

# as_msg header: header_sz, info1, info2, info3, info4, result_code, generation, record_ttl,
# transaction_ttl, n_fields, n_ops (22 bytes, §4.1).
MSG_HEADER = struct.Struct(">BBBBBBIIIHH")
MSG_HEADER_SIZE = MSG_HEADER.size
FIELD_HEADER = struct.Struct(">IB")  # size (= len(data) + 1), type
OP_HEADER = struct.Struct(">IBBBB")  # op_sz (= 4 + len(name) + len(value)), op, particle, flags, name_len

INFO1_READ = 0x01
INFO1_GET_ALL = 0x02
INFO1_BATCH = 0x08
INFO1_GET_NOBINDATA = 0x20
INFO1_COMPRESS_RESPONSE = 0x80

INFO2_WRITE = 0x01
INFO2_DELETE = 0x02
INFO2_GENERATION = 0x04
INFO2_GENERATION_GT = 0x08
INFO2_CREATE_ONLY = 0x20
INFO2_RESPOND_ALL_OPS = 0x80

INFO3_LAST = 0x01
INFO3_UPDATE_ONLY = 0x08
INFO3_CREATE_OR_REPLACE = 0x10
INFO3_REPLACE_ONLY = 0x20

FIELD_NAMESPACE = 0
FIELD_SET = 1
FIELD_KEY = 2
FIELD_DIGEST = 4
FIELD_TASK_ID = 7
FIELD_SOCKET_TIMEOUT = 9
FIELD_RPS = 10
FIELD_PID_ARRAY = 11
FIELD_DIGEST_ARRAY = 12
FIELD_MAX_RECORDS = 13
FIELD_BATCH_INDEX = 41

# Fields each kind of request may carry. Any other field (transactions, filter expressions, UDFs,
# secondary-index ranges...) asks for something this server does not do.
SINGLE_RECORD_FIELDS = frozenset({FIELD_NAMESPACE, FIELD_SET, FIELD_DIGEST, FIELD_KEY})
BATCH_ROW_FIELDS = frozenset({FIELD_NAMESPACE, FIELD_SET, FIELD_KEY})
SCAN_FIELDS = frozenset(
    {
        FIELD_NAMESPACE,
        FIELD_SET,
        FIELD_TASK_ID,
        FIELD_SOCKET_TIMEOUT,
        FIELD_RPS,
        FIELD_PID_ARRAY,
        FIELD_DIGEST_ARRAY,
        FIELD_MAX_RECORDS,
    }
)

OP_READ = 1
OP_WRITE = 2
OP_INCR = 5
OP_APPEND = 9
OP_PREPEND = 10
OP_TOUCH = 11
OP_DELETE_ALL = 14
# CDT, expression, bit and HLL operations: known to the protocol, not implemented here.
UNSUPPORTED_OPS = frozenset({3, 4, 7, 8, 12, 13, 15, 16})
WRITE_OPS = frozenset({OP_WRITE, OP_INCR, OP_APPEND, OP_PREPEND, OP_TOUCH, OP_DELETE_ALL})

PARTICLE_NULL = 0
PARTICLE_INTEGER = 1
PARTICLE_FLOAT = 2
PARTICLE_STRING = 3
PARTICLE_BLOB = 4
PARTICLE_BOOL = 17

RESULT_OK = 0
RESULT_NOT_FOUND = 2
RESULT_GENERATION = 3
RESULT_PARAMETER = 4
RESULT_RECORD_EXISTS = 5
RESULT_INCOMPATIBLE_TYPE = 12
RESULT_RECORD_TOO_BIG = 13
RESULT_UNSUPPORTED_FEATURE = 16
RESULT_NAMESPACE = 20
RESULT_BIN_NAME = 21
RESULT_FORBIDDEN = 22
RESULT_ENTERPRISE_ONLY = 25

BATCH_ROW_REPEAT = 0x01
BATCH_ROW_INFO = 0x02
BATCH_ROW_GENERATION = 0x04
BATCH_ROW_TTL = 0x08
BATCH_ROW_INFO4 = 0x10
BATCH_ROW_MIN_SIZE = 4 + 20 + 1

N_PARTITIONS = 4096
DIGEST_SIZE = 20
MAX_BIN_NAME_SIZE = 15
MAX_NAMESPACE_NAME_SIZE = 31
CITRUSLEAF_EPOCH = 1262304000  # 2010-01-01T00:00:00Z, the origin of void_time
MAX_TTL_SECONDS = 10 * 365 * 24 * 3600
TTL_NAMESPACE_DEFAULT = 0
TTL_NEVER_EXPIRE = 0xFFFFFFFF
TTL_DONT_UPDATE = 0xFFFFFFFE
# The stored size of a record, as a real 8.1 server computes it for max-record-size and for the
# data_used_bytes of ``sets`` (found by measuring a real server, see Record.size).
RECORD_HEADER_BYTES = 39
RBLOCK_BYTES = 16  # a device stores a record in whole 16-byte blocks (data_used_bytes counts them)
VARIABLE_BIN_HEADER_BYTES = 5  # strings, blobs, lists, maps: particle type and a 4-byte size
# Target size of one proto message in a multi-message (batch or scan) reply.
STREAM_CHUNK_BYTES = 512 * 1024

SERVER_BUILD = "8.1.2.0"
PARTITION_GENERATION = 1
PEERS_GENERATION = 1
DATA_FILE_FORMAT = "aerospike-test-server/2"


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class CommandError(Exception):
    """A request that fails with an Aerospike result code."""

    def __init__(self, result_code: int, message: str) -> None:
        super().__init__(message)
        self.result_code = result_code


def malformed(message: str) -> CommandError:
    return CommandError(RESULT_PARAMETER, message)


def unsupported(message: str) -> CommandError:
    return CommandError(RESULT_UNSUPPORTED_FEATURE, message)


class CloseConnection(Exception):
    """A framing error after which the connection cannot be trusted: close it."""


# ---------------------------------------------------------------------------------------------
# Wire format: fields, ops, as_msg
# ---------------------------------------------------------------------------------------------


class ByteReader:
    """Reads big-endian integers and byte strings from a buffer, raising PARAMETER on overrun."""

    def __init__(self, data: bytes, offset: int = 0) -> None:
        self.data = data
        self.offset = offset

    @property
    def remaining(self) -> int:
        return len(self.data) - self.offset

    def take(self, size: int) -> bytes:
        end = self.offset + size
        if size < 0 or end > len(self.data):
            raise malformed(f"truncated request: need {size} bytes at offset {self.offset}")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")


class Field(NamedTuple):
    type: int
    data: bytes


class Op(NamedTuple):
    op: int
    particle_type: int
    name: bytes
    value: bytes


class Bin(NamedTuple):
    particle_type: int
    value: bytes


NULL_BIN = Bin(PARTICLE_NULL, b"")

ResponseBins = list[tuple[bytes, Bin]]


@dataclasses.dataclass(frozen=True)
class Message:
    """A parsed as_msg request (§4.1)."""

    info1: int
    info2: int
    info3: int
    info4: int
    generation: int
    record_ttl: int
    transaction_ttl: int
    fields: list[Field]
    ops: list[Op]

    def field(self, field_type: int) -> bytes | None:
        for field in self.fields:
            if field.type == field_type:
                return field.data
        return None

    def field_types(self) -> set[int]:
        return {field.type for field in self.fields}


def read_fields(reader: ByteReader, count: int) -> list[Field]:
    fields = []
    for _ in range(count):
        size = reader.u32()
        if size < 1:
            raise malformed("field size 0")
        field_type = reader.u8()
        fields.append(Field(field_type, reader.take(size - 1)))
    return fields


def read_ops(reader: ByteReader, count: int) -> list[Op]:
    ops = []
    for _ in range(count):
        op_size = reader.u32()
        op_code = reader.u8()
        particle_type = reader.u8()
        reader.u8()  # flags
        name_size = reader.u8()
        value_size = op_size - 4 - name_size
        if value_size < 0:
            raise malformed(f"op size {op_size} shorter than its bin name")
        name = reader.take(name_size)
        ops.append(Op(op_code, particle_type, name, reader.take(value_size)))
    return ops


def parse_message(body: bytes) -> Message:
    """Parse the body of a type-3 proto message (header, fields, ops)."""
    if len(body) < MSG_HEADER_SIZE:
        raise malformed(f"as_msg body of {len(body)} bytes is shorter than its header")
    (
        header_size,
        info1,
        info2,
        info3,
        info4,
        _result_code,
        generation,
        record_ttl,
        transaction_ttl,
        n_fields,
        n_ops,
    ) = MSG_HEADER.unpack_from(body)
    if header_size < MSG_HEADER_SIZE:
        raise malformed(f"as_msg header_sz {header_size} < {MSG_HEADER_SIZE}")
    reader = ByteReader(body, header_size)
    fields = read_fields(reader, n_fields)
    ops = read_ops(reader, n_ops)
    return Message(info1, info2, info3, info4, generation, record_ttl, transaction_ttl, fields, ops)


def encode_message(
    *,
    result_code: int = RESULT_OK,
    info1: int = 0,
    info2: int = 0,
    info3: int = 0,
    generation: int = 0,
    void_time: int = 0,
    transaction_ttl: int = 0,
    fields: Sequence[tuple[int, bytes]] = (),
    bins: Sequence[tuple[bytes, Bin]] = (),
) -> bytes:
    """Encode one as_msg (without the proto header). Bins are sent as READ ops (§4.4)."""
    parts = [
        MSG_HEADER.pack(
            MSG_HEADER_SIZE,
            info1,
            info2,
            info3,
            0,
            result_code,
            generation,
            void_time,
            transaction_ttl,
            len(fields),
            len(bins),
        )
    ]
    for field_type, data in fields:
        parts.append(FIELD_HEADER.pack(len(data) + 1, field_type))
        parts.append(data)
    for name, bin_ in bins:
        parts.append(
            OP_HEADER.pack(4 + len(name) + len(bin_.value), OP_READ, bin_.particle_type, 0, len(name))
        )
        parts.append(name)
        parts.append(bin_.value)
    return b"".join(parts)


def error_message(result_code: int) -> bytes:
    """A header-only reply carrying an error. LAST also ends a batch or scan stream."""
    return encode_message(result_code=result_code, info3=INFO3_LAST)


def frame(proto_type: int, body: bytes) -> bytes:
    """Prefix a body with the 8-byte proto header (§2)."""
    return PROTO_HEADER.pack((PROTO_VERSION << 56) | (proto_type << 48) | len(body)) + body


def frame_message(body: bytes) -> bytes:
    """Frame an as_msg body as a type-3 message (Community Edition never compresses replies)."""
    return frame(PROTO_TYPE_MESSAGE, body)


def decode_proto_header(header: bytes) -> tuple[int, int, int]:
    """Return (version, type, body size) of an 8-byte proto header."""
    value = PROTO_HEADER.unpack(header)[0]
    return value >> 56, (value >> 48) & 0xFF, value & 0xFFFF_FFFF_FFFF


def partition_id(digest: bytes) -> int:
    return int.from_bytes(digest[0:2], "little") & (N_PARTITIONS - 1)


def now_since_citrusleaf_epoch() -> int:
    return int(time.time()) - CITRUSLEAF_EPOCH


# ---------------------------------------------------------------------------------------------
# The record store
# ---------------------------------------------------------------------------------------------


def uvarint_size(value: int) -> int:
    """Bytes of ``value`` as an unsigned LEB128 varint (how a stored record encodes lengths)."""
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


def stored_bin_value_size(bin_: Bin) -> int:
    """Bytes a bin value takes in a stored record: integers in 1, 2, 4 or 8 bytes, as needed."""
    if bin_.particle_type == PARTICLE_INTEGER:
        value = int.from_bytes(bin_.value, "big", signed=True)
        width = 8 if value < 0 else next(n for n in (1, 2, 4, 8) if value < 1 << (8 * n))
        return 2 + width
    if bin_.particle_type in (PARTICLE_FLOAT, PARTICLE_BOOL):
        return 1 + len(bin_.value)
    return VARIABLE_BIN_HEADER_BYTES + len(bin_.value)


@dataclasses.dataclass(frozen=True)
class Record:
    """One stored record. Records are replaced, never changed in place, so scans can share them."""

    set_name: bytes
    key: bytes | None  # the KEY field as sent: [particle type][value], or None if not sent
    bins: dict[bytes, Bin]
    generation: int
    void_time: int  # seconds since 2010-01-01 UTC, 0 = never expires
    last_update_ns: int  # Unix time in nanoseconds, for truncate's lut

    def is_expired(self, now: int) -> bool:
        return self.void_time != 0 and self.void_time <= now

    def size(self) -> int:
        """The record's stored size, checked against max-record-size, as a real 8.1 server has it.

        Measured on a real server (largest blob that still fits, varying one thing at a time):
        39 bytes of header; the set name with a varint length; the sent key (particle type and
        value) with a varint length; a varint bin count; per bin a length byte, the name and the
        value (:func:`stored_bin_value_size`).
        """
        size = RECORD_HEADER_BYTES + uvarint_size(len(self.bins))
        if self.set_name:
            size += uvarint_size(len(self.set_name)) + len(self.set_name)
        if self.key is not None:
            size += uvarint_size(len(self.key)) + len(self.key)
        for name, bin_ in self.bins.items():
            size += 1 + len(name) + stored_bin_value_size(bin_)
        return size

    def device_size(self) -> int:
        """What the record takes on the device: :meth:`size` in whole blocks."""
        return -(-self.size() // RBLOCK_BYTES) * RBLOCK_BYTES


class NamespaceRecords(MutableMapping[bytes, Record]):
    """The live records of one namespace by digest, kept per partition for scans."""

    def __init__(self) -> None:
        self.partitions: list[dict[bytes, Record]] = [{} for _ in range(N_PARTITIONS)]
        self._count = 0

    def __getitem__(self, digest: bytes) -> Record:
        return self.partitions[partition_id(digest)][digest]

    def __setitem__(self, digest: bytes, record: Record) -> None:
        partition = self.partitions[partition_id(digest)]
        if digest not in partition:
            self._count += 1
        partition[digest] = record

    def __delitem__(self, digest: bytes) -> None:
        del self.partitions[partition_id(digest)][digest]
        self._count -= 1

    def __iter__(self) -> Iterator[bytes]:
        for partition in self.partitions:
            yield from list(partition)

    def __len__(self) -> int:
        return self._count


def record_to_json(digest: bytes, record: Record) -> dict[str, Any]:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    return {
        "digest": digest.hex(),
        "set": b64(record.set_name),
        "key": None if record.key is None else b64(record.key),
        "generation": record.generation,
        "void_time": record.void_time,
        "last_update_ns": record.last_update_ns,
        "bins": [[b64(name), bin_.particle_type, b64(bin_.value)] for name, bin_ in record.bins.items()],
    }


def record_from_json(row: dict[str, Any]) -> tuple[bytes, Record]:
    record = Record(
        set_name=base64.b64decode(row["set"]),
        key=None if row["key"] is None else base64.b64decode(row["key"]),
        bins={
            base64.b64decode(name): Bin(int(particle_type), base64.b64decode(value))
            for name, particle_type, value in row["bins"]
        },
        generation=int(row["generation"]),
        void_time=int(row["void_time"]),
        last_update_ns=int(row["last_update_ns"]),
    )
    return bytes.fromhex(row["digest"]), record


class WriteBuffer:
    """The data file's journal: what was written since the last snapshot, flushed like a device.

    Entries wait in memory and go to the file every ``flush_max_ms`` (and when a thousand are
    pending), like a real server's write buffer; a SIGKILL loses the entries not flushed yet. A
    clean stop flushes everything. Entries are encoded when flushed, off the request's path.
    """

    FLUSH_ENTRIES = 1000

    def __init__(self, path: Path, flush_max_ms: int) -> None:
        self.path = path
        self.flush_max_ms = flush_max_ms
        self._pending: list[Callable[[], dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._stop = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="write-buffer", daemon=True)
        self._thread.start()

    def append(self, entry: Callable[[], dict[str, Any]]) -> None:
        """Queue an entry (a function that makes it: records never change, so it can wait)."""
        with self._lock:
            self._pending.append(entry)
            full = len(self._pending) >= self.FLUSH_ENTRIES
        if full:
            self._wake.set()

    def flush(self) -> None:
        with self._lock:
            lines = [json.dumps(make(), separators=(",", ":")).encode("ascii") + b"\n" for make in self._pending]
            self._pending = []
            if lines:
                with self.path.open("ab") as journal:
                    journal.write(b"".join(lines))

    def reset(self) -> None:
        """Forget the journal (after a snapshot holds everything in it)."""
        with self._lock:
            self._pending = []
            self.path.write_bytes(b"")

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(5)
        self.flush()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.flush_max_ms / 1000)
            self._wake.clear()
            self.flush()

    @staticmethod
    def entries(path: Path) -> Iterator[dict[str, Any]]:
        """The journal's entries; a last line cut short by a crash ends it."""
        if not path.exists():
            return
        for line in path.read_bytes().splitlines():
            try:
                yield json.loads(line)
            except ValueError:
                LOG.warning("journal %s ends with a partial entry: ignored", path)
                return


class Store:
    """The records of every namespace. Callers hold ``lock`` and change records only through
    :meth:`write`, :meth:`delete` and :meth:`truncate`.

    Besides the live records it keeps what a device would hold: the last written version of every
    record, deleted or not (Community Edition has no durable deletes). With a data file, a restart
    loads that, so deleted records come back, as they do on a real node.
    """

    def __init__(self, namespaces: Sequence[str], data_file: Path | None = None, flush_max_ms: int = 1000) -> None:
        self.lock = threading.Lock()
        self.namespaces: dict[str, NamespaceRecords] = {namespace: NamespaceRecords() for namespace in namespaces}
        self.device: dict[str, dict[bytes, Record]] = {namespace: {} for namespace in namespaces}
        self.truncate_luts: dict[tuple[str, bytes], int] = {}
        self.data_file = data_file
        self.buffer: WriteBuffer | None = None
        if data_file is not None:
            self._cold_start(data_file)
            self.buffer = WriteBuffer(journal_path(data_file), flush_max_ms)

    def records(self, namespace: str) -> NamespaceRecords:
        try:
            return self.namespaces[namespace]
        except KeyError:
            raise CommandError(RESULT_NAMESPACE, f"unknown namespace {namespace!r}") from None

    @staticmethod
    def live_record(records: NamespaceRecords, digest: bytes, now: int) -> Record | None:
        """The record with this digest, or None if missing or expired (expired ones are dropped)."""
        record = records.get(digest)
        if record is not None and record.is_expired(now):
            del records[digest]
            return None
        return record

    def write(self, namespace: str, digest: bytes, record: Record) -> None:
        self.records(namespace)[digest] = record
        self.device[namespace][digest] = record
        if self.buffer is not None:
            self.buffer.append(lambda: {"put": namespace, **record_to_json(digest, record)})

    def delete(self, namespace: str, digest: bytes) -> None:
        """Delete the live record; the device keeps its last version (no durable deletes)."""
        del self.records(namespace)[digest]

    def truncate(self, namespace: str, set_name: bytes | None, before_ns: int) -> int:
        """Delete records of a set (or the whole namespace) last updated before ``before_ns``
        (which counts in whole milliseconds, as a real node's last-update times do: a record
        written in the same millisecond as the cut-off stays).

        Unlike a delete this is durable: truncated records do not come back after a restart.
        """
        before_ns -= before_ns % 1_000_000
        deleted = self._truncate(namespace, set_name, before_ns)
        if self.buffer is not None:
            set_text = None if set_name is None else base64.b64encode(set_name).decode("ascii")
            entry = {"truncate": namespace, "set": set_text, "before_ns": before_ns}
            self.buffer.append(lambda: entry)
        return deleted

    def _truncate(self, namespace: str, set_name: bytes | None, before_ns: int) -> int:
        records = self.records(namespace)

        def doomed(record: Record) -> bool:
            return (set_name is None or record.set_name == set_name) and record.last_update_ns < before_ns

        live = [digest for digest, record in records.items() if doomed(record)]
        for digest in live:
            del records[digest]
        device = self.device[namespace]
        for digest in [digest for digest, record in device.items() if doomed(record)]:
            del device[digest]
        sets = {record.set_name for record in device.values()} if set_name is None else {set_name}
        for name in sets:
            self.truncate_luts[(namespace, name)] = before_ns
        return len(live)

    def set_names(self, namespace: str) -> set[bytes]:
        """Every set the namespace has held since the start (a real node lists empty sets too)."""
        truncated = {name for (ns, name) in self.truncate_luts if ns == namespace and name}
        return {record.set_name for record in self.device[namespace].values() if record.set_name} | truncated

    # -- the data file -----------------------------------------------------------------------

    def _cold_start(self, data_file: Path) -> None:
        """Load the snapshot and the journal; every record on the device becomes live again."""
        if data_file.exists():
            document = json.loads(data_file.read_text(encoding="utf-8"))
            if document.get("format") != DATA_FILE_FORMAT:
                raise ValueError(f"{data_file} is not a {DATA_FILE_FORMAT} data file")
            for namespace, rows in document["namespaces"].items():
                if namespace not in self.device:
                    LOG.warning("data file namespace %r is not configured: its records are dropped", namespace)
                    continue
                self.device[namespace].update(record_from_json(row) for row in rows)
            for namespace, set_text, lut in document["truncate_luts"]:
                if namespace in self.device:
                    self.truncate_luts[(namespace, base64.b64decode(set_text))] = int(lut)
        for entry in WriteBuffer.entries(journal_path(data_file)):
            if "put" in entry and entry["put"] in self.device:
                digest, record = record_from_json(entry)
                self.device[entry["put"]][digest] = record
            elif "truncate" in entry and entry["truncate"] in self.device:
                set_name = None if entry["set"] is None else base64.b64decode(entry["set"])
                self._truncate(entry["truncate"], set_name, int(entry["before_ns"]))
        for namespace, device in self.device.items():
            records = self.namespaces[namespace]
            for digest, record in device.items():
                records[digest] = record
        self._write_snapshot(data_file)
        journal_path(data_file).write_bytes(b"")

    def _write_snapshot(self, data_file: Path) -> None:
        document = {
            "format": DATA_FILE_FORMAT,
            "namespaces": {
                namespace: [record_to_json(digest, record) for digest, record in device.items()]
                for namespace, device in self.device.items()
            },
            "truncate_luts": [
                [namespace, base64.b64encode(name).decode("ascii"), lut]
                for (namespace, name), lut in self.truncate_luts.items()
            ],
        }
        temporary = data_file.with_name(data_file.name + ".tmp")
        temporary.write_text(json.dumps(document), encoding="utf-8")
        os.replace(temporary, data_file)

    def close(self) -> None:
        """A clean stop: everything written is in the data file."""
        if self.buffer is None or self.data_file is None:
            return
        self.buffer.close()
        with self.lock:
            self._write_snapshot(self.data_file)
            self.buffer.reset()


def journal_path(data_file: Path) -> Path:
    return data_file.with_name(data_file.name + ".journal")


# ---------------------------------------------------------------------------------------------
# Single-record commands (§4), also used for each batch row
# ---------------------------------------------------------------------------------------------


class RecordCommand(NamedTuple):
    namespace: str
    set_name: bytes
    digest: bytes
    key: bytes | None
    info1: int
    info2: int
    info3: int
    generation: int
    record_ttl: int
    ops: list[Op]


class RecordResult(NamedTuple):
    result_code: int
    generation: int = 0
    void_time: int = 0
    bins: ResponseBins = []


def decode_namespace(data: bytes | None) -> str:
    if data is None:
        raise malformed("missing namespace field")
    if not 0 < len(data) <= MAX_NAMESPACE_NAME_SIZE:
        raise CommandError(RESULT_NAMESPACE, f"bad namespace name {data!r}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError(RESULT_NAMESPACE, f"bad namespace name {data!r}") from None


def build_record_command(
    fields: Sequence[Field],
    digest: bytes,
    *,
    allowed_fields: frozenset[int],
    info1: int,
    info2: int,
    info3: int,
    generation: int,
    record_ttl: int,
    ops: list[Op],
) -> RecordCommand:
    by_type = {field.type: field.data for field in fields}
    extra = set(by_type) - allowed_fields
    if extra:
        raise unsupported(f"fields {sorted(extra)} are not supported")
    if len(digest) != DIGEST_SIZE:
        raise malformed(f"digest of {len(digest)} bytes")
    return RecordCommand(
        namespace=decode_namespace(by_type.get(FIELD_NAMESPACE)),
        set_name=by_type.get(FIELD_SET, b""),
        digest=digest,
        key=by_type.get(FIELD_KEY),
        info1=info1,
        info2=info2,
        info3=info3,
        generation=generation,
        record_ttl=record_ttl,
        ops=ops,
    )


def decode_integer(value: bytes) -> int:
    if not 1 <= len(value) <= 8:
        raise malformed(f"integer of {len(value)} bytes")
    return int.from_bytes(value, "big", signed=True)


def decode_float(value: bytes) -> float:
    if len(value) != 8:
        raise malformed(f"float of {len(value)} bytes")
    return float(struct.unpack(">d", value)[0])


def add_to_bin(current: Bin | None, op: Op) -> Bin:
    """INCR: int + int (wrapping at 64 bits) or float + float."""
    if op.particle_type == PARTICLE_INTEGER:
        delta = decode_integer(op.value)
        if current is None:
            return Bin(PARTICLE_INTEGER, delta.to_bytes(8, "big", signed=True))
        if current.particle_type != PARTICLE_INTEGER:
            raise CommandError(RESULT_INCOMPATIBLE_TYPE, "increment of a non-integer bin")
        total = (decode_integer(current.value) + delta + 2**63) % 2**64 - 2**63
        return Bin(PARTICLE_INTEGER, total.to_bytes(8, "big", signed=True))
    if op.particle_type == PARTICLE_FLOAT:
        delta_float = decode_float(op.value)
        if current is None:
            return Bin(PARTICLE_FLOAT, struct.pack(">d", delta_float))
        if current.particle_type != PARTICLE_FLOAT:
            raise CommandError(RESULT_INCOMPATIBLE_TYPE, "float increment of a non-float bin")
        return Bin(PARTICLE_FLOAT, struct.pack(">d", decode_float(current.value) + delta_float))
    raise CommandError(RESULT_INCOMPATIBLE_TYPE, f"increment by particle type {op.particle_type}")


def concatenate_bin(current: Bin | None, op: Op) -> Bin:
    """APPEND / PREPEND: string onto string or blob onto blob."""
    if op.particle_type not in (PARTICLE_STRING, PARTICLE_BLOB):
        raise CommandError(RESULT_INCOMPATIBLE_TYPE, f"append of particle type {op.particle_type}")
    if current is None:
        return Bin(op.particle_type, op.value)
    if current.particle_type != op.particle_type:
        raise CommandError(RESULT_INCOMPATIBLE_TYPE, "append/prepend of a different particle type")
    if op.op == OP_APPEND:
        return Bin(current.particle_type, current.value + op.value)
    return Bin(current.particle_type, op.value + current.value)


def check_bin_name(name: bytes) -> None:
    if not 0 < len(name) <= MAX_BIN_NAME_SIZE:
        raise CommandError(RESULT_BIN_NAME, f"bad bin name {name!r}")


def check_generation(command: RecordCommand, current_generation: int) -> None:
    if command.info2 & INFO2_GENERATION and command.generation != current_generation:
        raise CommandError(RESULT_GENERATION, "generation mismatch")
    if command.info2 & INFO2_GENERATION_GT and command.generation <= current_generation:
        raise CommandError(RESULT_GENERATION, "generation not greater")


def check_exists_policy(command: RecordCommand, existing: Record | None) -> None:
    """Exists policy and generation checks of a write, in the real server's order."""
    if existing is None:
        if command.info3 & (INFO3_UPDATE_ONLY | INFO3_REPLACE_ONLY):
            raise CommandError(RESULT_NOT_FOUND, "record not found")
        check_generation(command, 0)
    else:
        if command.info2 & INFO2_CREATE_ONLY:
            raise CommandError(RESULT_RECORD_EXISTS, "record exists")
        check_generation(command, existing.generation)


def new_void_time(record_ttl: int, existing: Record | None, now: int, nsup_period: int) -> int:
    """Apply a request TTL (§4.7): 0 = namespace default (never), -1 = never, -2 = keep.

    Any other TTL needs a namespace with a ``nsup-period`` (the supervisor that deletes expired
    records): without one, as on a default server, it is FORBIDDEN. Over 10 years it is a bad
    parameter either way (checked first, as the real server does).
    """
    if record_ttl in (TTL_NAMESPACE_DEFAULT, TTL_NEVER_EXPIRE):
        return 0
    if record_ttl == TTL_DONT_UPDATE:
        return existing.void_time if existing is not None else 0
    if record_ttl > MAX_TTL_SECONDS:
        raise malformed(f"ttl {record_ttl} exceeds 10 years")
    if nsup_period == 0:
        raise CommandError(RESULT_FORBIDDEN, f"ttl {record_ttl} on a namespace without nsup-period")
    return now + record_ttl


def read_bins(bins: dict[bytes, Bin], ops: Sequence[Op], respond_all_ops: bool) -> ResponseBins:
    """Answer READ ops: a named bin if it exists (NULL with RESPOND_ALL_OPS), every bin if unnamed."""
    response: ResponseBins = []
    for op in ops:
        if op.op != OP_READ:
            raise malformed(f"op {op.op} in a read")
        if not op.name:
            response.extend(bins.items())
        elif op.name in bins:
            response.append((op.name, bins[op.name]))
        elif respond_all_ops:
            response.append((op.name, NULL_BIN))
    return response


class RecordEngine:
    """Executes single-record commands against the store (the rules of §4.6 and §4.7)."""

    def __init__(self, store: Store, max_record_size: int, nsup_period: int) -> None:
        self.store = store
        self.max_record_size = max_record_size
        self.nsup_period = nsup_period

    def execute(self, command: RecordCommand) -> RecordResult:
        try:
            with self.store.lock:
                records = self.store.records(command.namespace)
                now = now_since_citrusleaf_epoch()
                if command.info2 & INFO2_DELETE:
                    return self._delete(command, records, now)
                if command.info2 & INFO2_WRITE:
                    return self._write(command, records, now)
                return self._read(command, records, now)
        except CommandError as error:
            return RecordResult(error.result_code)

    def _read(self, command: RecordCommand, records: NamespaceRecords, now: int) -> RecordResult:
        for op in command.ops:
            if op.op in UNSUPPORTED_OPS:
                raise unsupported(f"op {op.op} is not supported")
        record = self.store.live_record(records, command.digest, now)
        if record is None:
            return RecordResult(RESULT_NOT_FOUND)
        if command.info1 & INFO1_GET_NOBINDATA:
            bins: ResponseBins = []
        elif not command.ops and command.info1 & INFO1_GET_ALL:
            bins = list(record.bins.items())
        else:
            bins = read_bins(record.bins, command.ops, bool(command.info2 & INFO2_RESPOND_ALL_OPS))
        return RecordResult(RESULT_OK, record.generation, record.void_time, bins)

    def _delete(self, command: RecordCommand, records: NamespaceRecords, now: int) -> RecordResult:
        record = self.store.live_record(records, command.digest, now)
        if record is None:
            return RecordResult(RESULT_NOT_FOUND)
        check_generation(command, record.generation)
        self.store.delete(command.namespace, command.digest)
        return RecordResult(RESULT_OK)

    def _write(self, command: RecordCommand, records: NamespaceRecords, now: int) -> RecordResult:
        if not command.ops:
            raise malformed("write without ops")
        for op in command.ops:
            if op.op in UNSUPPORTED_OPS:
                raise unsupported(f"op {op.op} is not supported")
            if op.op not in WRITE_OPS and op.op != OP_READ:
                raise malformed(f"unknown op {op.op}")
        existing = self.store.live_record(records, command.digest, now)
        check_exists_policy(command, existing)
        if existing is None and any(op.op == OP_TOUCH for op in command.ops):
            raise CommandError(RESULT_NOT_FOUND, "touch of a missing record")
        void_time = new_void_time(command.record_ttl, existing, now, self.nsup_period)

        replace = bool(command.info3 & (INFO3_CREATE_OR_REPLACE | INFO3_REPLACE_ONLY))
        bins = {} if existing is None or replace else dict(existing.bins)
        response = self._apply_ops(command, bins)

        if not bins:
            if existing is None:
                return RecordResult(RESULT_NOT_FOUND)
            self.store.delete(command.namespace, command.digest)
            return RecordResult(RESULT_OK, 0, 0, response)

        record = Record(
            set_name=existing.set_name if existing is not None and existing.set_name else command.set_name,
            key=command.key if command.key is not None else (existing.key if existing is not None else None),
            bins=bins,
            generation=(existing.generation if existing is not None else 0) % 0xFFFF + 1,
            void_time=void_time,
            last_update_ns=time.time_ns(),
        )
        if record.size() > self.max_record_size:
            raise CommandError(RESULT_RECORD_TOO_BIG, f"record of {record.size()} bytes")
        self.store.write(command.namespace, command.digest, record)
        return RecordResult(RESULT_OK, record.generation, record.void_time, response)

    @staticmethod
    def _apply_ops(command: RecordCommand, bins: dict[bytes, Bin]) -> ResponseBins:
        """Run the ops in order on a working copy of the bins; return the bins to answer with."""
        respond_all_ops = bool(command.info2 & INFO2_RESPOND_ALL_OPS)
        response: ResponseBins = []
        for op in command.ops:
            if op.op == OP_READ:
                response.extend(read_bins(bins, [op], respond_all_ops))
                continue
            if op.op == OP_WRITE:
                check_bin_name(op.name)
                if op.particle_type == PARTICLE_NULL:
                    bins.pop(op.name, None)
                else:
                    bins[op.name] = Bin(op.particle_type, op.value)
            elif op.op == OP_INCR:
                check_bin_name(op.name)
                bins[op.name] = add_to_bin(bins.get(op.name), op)
            elif op.op in (OP_APPEND, OP_PREPEND):
                check_bin_name(op.name)
                bins[op.name] = concatenate_bin(bins.get(op.name), op)
            elif op.op == OP_DELETE_ALL:
                bins.clear()
            # OP_TOUCH changes no bins: the generation and TTL update happen on commit.
            if respond_all_ops:
                response.append((op.name, NULL_BIN))
        return response


# ---------------------------------------------------------------------------------------------
# Batch (§5)
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BatchRowAttributes:
    """What a batch row says besides its digest. REPEAT rows reuse the previous row's."""

    info1: int
    info2: int
    info3: int
    generation: int
    record_ttl: int
    fields: list[Field]
    ops: list[Op]


class BatchRow(NamedTuple):
    batch_index: int
    digest: bytes
    attributes: BatchRowAttributes
    repeated: bool


def parse_batch_rows(data: bytes) -> list[BatchRow]:
    reader = ByteReader(data)
    n_rows = reader.u32()
    reader.u8()  # batch flags: inline / respond-all-keys hints, nothing to do here
    if n_rows * BATCH_ROW_MIN_SIZE > reader.remaining:
        raise malformed(f"batch of {n_rows} rows in {reader.remaining} bytes")
    rows: list[BatchRow] = []
    previous: BatchRowAttributes | None = None
    for _ in range(n_rows):
        index = reader.u32()
        digest = reader.take(DIGEST_SIZE)
        row_type = reader.u8()
        if row_type & BATCH_ROW_REPEAT:
            if previous is None:
                raise malformed("first batch row is a REPEAT")
            rows.append(BatchRow(index, digest, previous, True))
            continue
        info1 = reader.u8()
        info2 = info3 = 0
        generation = record_ttl = 0
        if row_type & BATCH_ROW_INFO:
            info2 = reader.u8()
            info3 = reader.u8()
        if row_type & BATCH_ROW_INFO4:
            reader.u8()  # info4: transaction bits, not supported and zero without transactions
        if row_type & BATCH_ROW_GENERATION:
            generation = reader.u16()
        if row_type & BATCH_ROW_TTL:
            record_ttl = reader.u32()
        n_fields = reader.u16()
        n_ops = reader.u16()
        fields = read_fields(reader, n_fields)
        ops = read_ops(reader, n_ops)
        previous = BatchRowAttributes(info1, info2, info3, generation, record_ttl, fields, ops)
        rows.append(BatchRow(index, digest, previous, False))
    return rows


def execute_batch_row(engine: RecordEngine, row: BatchRow) -> RecordResult:
    attributes = row.attributes
    # A repeated row must not inherit the previous row's user key.
    fields = [field for field in attributes.fields if not (row.repeated and field.type == FIELD_KEY)]
    try:
        command = build_record_command(
            fields,
            row.digest,
            allowed_fields=BATCH_ROW_FIELDS,
            info1=attributes.info1,
            info2=attributes.info2,
            info3=attributes.info3,
            generation=attributes.generation,
            record_ttl=attributes.record_ttl,
            ops=attributes.ops,
        )
    except CommandError as error:
        return RecordResult(error.result_code)
    return engine.execute(command)


def chunk_messages(messages: Iterable[bytes]) -> Iterator[bytes]:
    """Pack as_msg records into proto messages of about STREAM_CHUNK_BYTES each, then end the
    stream with a LAST message (an error message if producing the records failed)."""
    pending: list[bytes] = []
    pending_size = 0
    last = encode_message(info3=INFO3_LAST)
    try:
        for message in messages:
            pending.append(message)
            pending_size += len(message)
            if pending_size >= STREAM_CHUNK_BYTES:
                yield frame_message(b"".join(pending))
                pending = []
                pending_size = 0
    except CommandError as error:
        last = error_message(error.result_code)
    except Exception:  # never let one bad request take the server down
        LOG.exception("unexpected error in a batch or scan")
        last = error_message(RESULT_PARAMETER)
    if pending:
        yield frame_message(b"".join(pending))
    yield frame_message(last)


def handle_batch(engine: RecordEngine, message: Message) -> Iterator[bytes]:
    """Run the rows one after the other and stream their answers (a batch is not atomic)."""
    extra = message.field_types() - {FIELD_BATCH_INDEX}
    if extra:
        raise unsupported(f"batch fields {sorted(extra)} are not supported")
    data = message.field(FIELD_BATCH_INDEX)
    if data is None:
        raise malformed("batch without a BATCH_INDEX field")
    rows = parse_batch_rows(data)

    def row_replies() -> Iterator[bytes]:
        for row in rows:
            result = execute_batch_row(engine, row)
            yield encode_message(
                result_code=result.result_code,
                generation=result.generation,
                void_time=result.void_time,
                transaction_ttl=row.batch_index,
                bins=result.bins,
            )

    return chunk_messages(row_replies())


# ---------------------------------------------------------------------------------------------
# Scan / query (§6)
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ScanRequest:
    namespace: str
    set_name: bytes | None  # None: every set of the namespace
    partitions: frozenset[int]
    resume_after: dict[int, bytes]  # partition id -> last digest already returned
    max_records: int  # 0: no limit
    selected_bins: list[bytes]
    no_bins: bool

    @classmethod
    def from_message(cls, message: Message) -> ScanRequest:
        extra = message.field_types() - SCAN_FIELDS
        if extra:
            raise unsupported(
                f"scan/query fields {sorted(extra)} (secondary index, filter, UDF) are not supported"
            )
        if message.info2 & (INFO2_WRITE | INFO2_DELETE):
            raise unsupported("background scans and queries are not supported")
        for op in message.ops:
            if op.op != OP_READ:
                raise unsupported(f"scan/query op {op.op} is not supported")
        namespace = decode_namespace(message.field(FIELD_NAMESPACE))
        set_field = message.field(FIELD_SET)

        pid_data = message.field(FIELD_PID_ARRAY)
        digest_data = message.field(FIELD_DIGEST_ARRAY)
        partitions: set[int] = set()
        if pid_data is not None:
            if len(pid_data) % 2:
                raise malformed("odd PID_ARRAY length")
            partitions.update(pid for (pid,) in struct.iter_unpack("<H", pid_data))
        resume_after: dict[int, bytes] = {}
        if digest_data is not None:
            if len(digest_data) % DIGEST_SIZE:
                raise malformed("DIGEST_ARRAY length is not a multiple of 20")
            for offset in range(0, len(digest_data), DIGEST_SIZE):
                digest = digest_data[offset : offset + DIGEST_SIZE]
                resume_after[partition_id(digest)] = digest
        partitions.update(resume_after)
        if pid_data is None and digest_data is None:
            partitions = set(range(N_PARTITIONS))
        if any(pid >= N_PARTITIONS for pid in partitions):
            raise malformed("partition id out of range")

        max_records_data = message.field(FIELD_MAX_RECORDS)
        if max_records_data is not None and len(max_records_data) != 8:
            raise malformed("MAX_RECORDS is not 8 bytes")
        return cls(
            namespace=namespace,
            set_name=set_field if set_field else None,
            partitions=frozenset(partitions),
            resume_after=resume_after,
            max_records=int.from_bytes(max_records_data, "big") if max_records_data else 0,
            selected_bins=[op.name for op in message.ops if op.name],
            no_bins=bool(message.info1 & INFO1_GET_NOBINDATA),
        )

    def matching_records(self, store: Store) -> Iterator[tuple[bytes, Record]]:
        """The live records to return, partition after partition, in digest order within one.

        Each partition is read under the lock on its own, as the scan reaches it: like a real
        scan, this one sees what was written meanwhile to partitions it has not reached yet.
        """
        for pid in sorted(self.partitions):
            after = self.resume_after.get(pid, b"")
            now = now_since_citrusleaf_epoch()
            with store.lock:
                partition = store.records(self.namespace).partitions[pid]
                found = [
                    (digest, record)
                    for digest, record in partition.items()
                    if (self.set_name is None or record.set_name == self.set_name)
                    and digest > after
                    and not record.is_expired(now)
                ]
            found.sort(key=lambda item: item[0])
            yield from found

    def response_bins(self, record: Record) -> ResponseBins | None:
        """The bins to send, or None to skip a record that has none of the selected bins."""
        if self.no_bins:
            return []
        if not self.selected_bins:
            return list(record.bins.items())
        bins = [(name, record.bins[name]) for name in self.selected_bins if name in record.bins]
        return bins or None


def handle_scan(store: Store, message: Message) -> Iterator[bytes]:
    request = ScanRequest.from_message(message)
    with store.lock:
        store.records(request.namespace)  # an unknown namespace fails the request, not the stream
    namespace_field = request.namespace.encode("utf-8")

    def record_messages() -> Iterator[bytes]:
        sent = 0
        for digest, record in request.matching_records(store):
            if request.max_records and sent >= request.max_records:
                return
            bins = request.response_bins(record)
            if bins is None:
                continue
            fields = [(FIELD_NAMESPACE, namespace_field), (FIELD_DIGEST, digest)]
            if record.set_name:
                fields.append((FIELD_SET, record.set_name))
            if record.key is not None:
                fields.append((FIELD_KEY, record.key))
            yield encode_message(
                info1=INFO1_GET_NOBINDATA if request.no_bins else 0,
                generation=record.generation,
                void_time=record.void_time,
                fields=fields,
                bins=bins,
            )
            sent += 1

    return chunk_messages(record_messages())


# ---------------------------------------------------------------------------------------------
# Info commands (§3)
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    namespaces: tuple[str, ...]
    max_record_size: int
    cluster_name: str
    node_name: str = ""
    port: int = 0
    nsup_period: int = 0
    flush_max_ms: int = 1000
    on_device: bool = False  # a data file: storage-engine device, else memory


def replicas_value(namespaces: Iterable[str]) -> str:
    """``<ns>:0,1,<bitmap>`` per namespace: AP mode, replication factor 1, all partitions owned."""
    bitmap = base64.b64encode(b"\xff" * (N_PARTITIONS // 8)).decode("ascii")
    return ";".join(f"{namespace}:0,1,{bitmap}" for namespace in namespaces)


def parse_info_parameters(text: str) -> dict[str, str]:
    """``namespace=test;set=demo`` -> {"namespace": "test", "set": "demo"}."""
    parameters = {}
    for item in text.split(";"):
        if item:
            name, _, value = item.partition("=")
            parameters[name.strip()] = value.strip()
    return parameters


class ServerStatistics:
    """Request counters, readable with the ``test-server-statistics`` info command."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, int] = {
            "info_requests": 0,
            "message_requests": 0,
            "compressed_requests": 0,
            "error_replies": 0,
        }

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counters[name] = self._counters.get(name, 0) + amount

    def render(self) -> str:
        with self._lock:
            return ";".join(f"{name}={value}" for name, value in self._counters.items())


@dataclasses.dataclass
class ConnectionState:
    """What a real node remembers per client connection."""

    user_agent: str | None = None


#: ``sets`` fields after the counts, as an 8.1 node lists them (with default set settings)
SET_SETTINGS = (
    "sindexes=0:index_populating=false:truncating=false:default-read-touch-ttl-pct=0:default-ttl=0"
    ":disable-eviction=false:enable-index=false:stop-writes-count=0:stop-writes-size=0"
)


class InfoResponder:
    """Answers info requests: one ``<request line>\\t<value>\\n`` per request line."""

    def __init__(self, config: ServerConfig, store: Store, statistics: ServerStatistics) -> None:
        self.config = config
        self.store = store
        self.statistics = statistics

    def respond(self, body: bytes, connection: ConnectionState) -> bytes:
        # latin-1 maps every byte to one character, so each line is echoed back exactly.
        lines = [line for line in body.decode("latin-1").split("\n") if line]
        return "".join(f"{line}\t{self.value(line, connection)}\n" for line in lines).encode("latin-1")

    def value(self, line: str, connection: ConnectionState) -> str:
        name, _, argument = line.partition(":")
        try:
            return self._value(name.strip(), argument, connection)
        except CommandError as error:
            return f"ERROR:{error.result_code}:{error}"
        except Exception:  # a bad info request must not take the connection down
            LOG.exception("info command %r failed", line)
            return "ERROR:4:internal error"

    def _value(self, name: str, argument: str, connection: ConnectionState) -> str:
        config = self.config
        fixed = {
            "node": config.node_name,
            "partition-generation": str(PARTITION_GENERATION),
            "build": SERVER_BUILD,
            "version": f"Aerospike Community Edition build {SERVER_BUILD}",
            "edition": "Aerospike Community Edition",
            "peers-generation": str(PEERS_GENERATION),
            "peers-clear-std": f"{PEERS_GENERATION},{config.port},[]",
            "peers-clear-alt": f"{PEERS_GENERATION},,[]",
            "peers-tls-std": f"{PEERS_GENERATION},,[]",
            "peers-tls-alt": f"{PEERS_GENERATION},,[]",
            "replicas": replicas_value(config.namespaces),
            "partitions": str(N_PARTITIONS),
            "cluster-name": config.cluster_name,
            "namespaces": ";".join(config.namespaces),
            "status": "ok",
            "service": f"127.0.0.1:{config.port}",
            "service-clear-std": f"127.0.0.1:{config.port}",
            "services": "",
            "services-alumni": "",
        }
        if name in fixed:
            return fixed[name]
        if name == "user-agent-set":
            return self._user_agent_set(parse_info_parameters(argument), connection)
        if name == "test-server-statistics":
            return self.statistics.render()
        if name == "sets" or name.startswith("sets/"):
            return self._sets(name)
        if name.startswith("namespace/"):
            return self._namespace_statistics(name.removeprefix("namespace/"))
        if name in ("truncate", "truncate-namespace"):
            return self._truncate(name, parse_info_parameters(argument))
        raise CommandError(RESULT_PARAMETER, "unrecognized command")

    @staticmethod
    def _user_agent_set(parameters: dict[str, str], connection: ConnectionState) -> str:
        """What an 8.1 client sends first on every connection: its user agent, in base64."""
        if connection.user_agent is not None:
            raise CommandError(RESULT_PARAMETER, "already set")
        if "value" not in parameters:
            raise CommandError(RESULT_PARAMETER, "missing 'value'")
        if not parameters["value"]:
            raise CommandError(RESULT_PARAMETER, "missing 'value' value")
        try:
            connection.user_agent = base64.b64decode(parameters["value"], validate=True).decode("latin-1")
        except ValueError:
            raise CommandError(RESULT_PARAMETER, "'value' invalid base64") from None
        return "ok"

    def _sets(self, name: str) -> str:
        """``sets``, ``sets/<ns>`` or ``sets/<ns>/<set>``: per-set statistics like the real server.

        Sets stay listed once written to, with 0 objects when empty, as on a real node.
        """
        parts = name.split("/")
        namespaces = list(self.config.namespaces) if len(parts) == 1 else [parts[1]]
        only_set = parts[2].encode("utf-8") if len(parts) > 2 else None
        if namespaces[0] not in self.config.namespaces:
            return "ns_type=unknown"
        now = now_since_citrusleaf_epoch()
        entries = []
        with self.store.lock:
            for namespace in namespaces:
                records = self.store.records(namespace)
                objects: dict[bytes, int] = {}
                data_bytes: dict[bytes, int] = {}
                for record in records.values():
                    if record.set_name and not record.is_expired(now):
                        objects[record.set_name] = objects.get(record.set_name, 0) + 1
                        data_bytes[record.set_name] = data_bytes.get(record.set_name, 0) + record.device_size()
                for set_name in sorted(self.store.set_names(namespace)):
                    if only_set is not None and set_name != only_set:
                        continue
                    prefix = "" if only_set is not None else (
                        f"ns={namespace}:set={set_name.decode('utf-8', 'replace')}:"
                    )
                    entries.append(
                        f"{prefix}objects={objects.get(set_name, 0)}:tombstones=0"
                        f":data_used_bytes={data_bytes.get(set_name, 0)}"
                        f":truncate_lut={self.store.truncate_luts.get((namespace, set_name), 0) // 1_000_000}"
                        f":{SET_SETTINGS};"
                    )
        return "".join(entries)

    def _namespace_statistics(self, namespace: str) -> str:
        if namespace not in self.config.namespaces:
            return "type=unknown"
        with self.store.lock:
            objects = len(self.store.records(namespace))
        config = self.config
        return ";".join(
            [
                "ns_cluster_size=1",
                f"objects={objects}",
                "allow-ttl-without-nsup=false",
                "default-ttl=0",
                f"max-record-size={config.max_record_size}",
                f"nsup-period={config.nsup_period}",
                "replication-factor=1",
                "strong-consistency=false",
                f"storage-engine={'device' if config.on_device else 'memory'}",
                f"storage-engine.flush-max-ms={config.flush_max_ms}",
                "storage-engine.commit-to-device=false",
            ]
        )

    def _truncate(self, name: str, parameters: dict[str, str]) -> str:
        if not parameters.get("namespace"):
            raise CommandError(RESULT_NAMESPACE, "missing 'namespace'")
        namespace = parameters["namespace"]
        set_name: bytes | None = None
        if name == "truncate":
            if "set" not in parameters:
                raise CommandError(RESULT_PARAMETER, "missing 'set'")
            set_name = parameters["set"].encode("utf-8")
            if not set_name:
                raise CommandError(RESULT_PARAMETER, "missing 'set' value")
        lut_text = parameters.get("lut")
        try:
            before_ns = int(lut_text) if lut_text else time.time_ns()
        except ValueError:
            raise CommandError(RESULT_PARAMETER, f"bad lut {lut_text!r}") from None
        if namespace not in self.config.namespaces:
            return "ok"  # what a real node answers for a namespace it does not have
        with self.store.lock:
            deleted = self.store.truncate(namespace, set_name, before_ns)
        LOG.info("truncated %d records of %s/%s", deleted, namespace, set_name)
        return "ok"


# ---------------------------------------------------------------------------------------------
# Request dispatch and the TCP server
# ---------------------------------------------------------------------------------------------


class RequestProcessor:
    """Turns one request proto message into the proto messages to answer with."""

    def __init__(self, config: ServerConfig, store: Store) -> None:
        self.config = config
        self.store = store
        self.engine = RecordEngine(store, config.max_record_size, config.nsup_period)
        self.statistics = ServerStatistics()
        self.info = InfoResponder(config, store, self.statistics)

    def handle(self, proto_type: int, body: bytes, connection: ConnectionState) -> Iterator[bytes]:
        """The replies, produced as they are sent (a batch or a scan streams)."""
        if proto_type == PROTO_TYPE_INFO:
            self.statistics.count("info_requests")
            return iter([frame(PROTO_TYPE_INFO, self.info.respond(body, connection))])
        if proto_type not in (PROTO_TYPE_MESSAGE, PROTO_TYPE_COMPRESSED):
            raise CloseConnection(f"unsupported proto type {proto_type}")
        self.statistics.count("message_requests")
        try:
            if proto_type == PROTO_TYPE_COMPRESSED:
                # What Community Edition answers, whatever the request: one header with 25, not
                # marked LAST (a batch or scan client then waits for the rest until its timeout).
                self.statistics.count("compressed_requests")
                return iter([frame(PROTO_TYPE_MESSAGE, encode_message(result_code=RESULT_ENTERPRISE_ONLY))])
            return self.handle_message(parse_message(body))
        except CommandError as error:
            self.statistics.count("error_replies")
            LOG.debug("request failed with %d: %s", error.result_code, error)
            return iter([frame(PROTO_TYPE_MESSAGE, error_message(error.result_code))])
        except Exception:  # never let one bad request take the server down
            LOG.exception("unexpected error handling a request")
            return iter([frame(PROTO_TYPE_MESSAGE, error_message(RESULT_PARAMETER))])

    def handle_message(self, message: Message) -> Iterator[bytes]:
        if message.info1 & INFO1_BATCH:
            return handle_batch(self.engine, message)
        digest = message.field(FIELD_DIGEST)
        if digest is None:
            return handle_scan(self.store, message)
        command = build_record_command(
            message.fields,
            digest,
            allowed_fields=SINGLE_RECORD_FIELDS,
            info1=message.info1,
            info2=message.info2,
            info3=message.info3,
            generation=message.generation,
            record_ttl=message.record_ttl,
            ops=message.ops,
        )
        result = self.engine.execute(command)
        reply = encode_message(
            result_code=result.result_code,
            generation=result.generation,
            void_time=result.void_time,
            bins=result.bins,
        )
        return iter([frame_message(reply)])


def read_exact(stream: io.BufferedIOBase, size: int) -> bytes | None:
    """Read exactly ``size`` bytes, or return None if the peer closed the connection first."""
    data = stream.read(size)
    if len(data) != size:
        return None
    return bytes(data)


class ConnectionHandler(socketserver.BaseRequestHandler):
    """Serves one client connection: strict request/response, info and data messages alike."""

    server: AerospikeTestServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track_connection(sock, True)
        try:
            with sock.makefile("rb") as stream:
                self._serve(sock, stream)
        except OSError:
            pass  # the client went away, or the server is shutting down
        except CloseConnection as reason:
            LOG.warning("closing connection from %s: %s", self.client_address, reason)
        finally:
            self.server.track_connection(sock, False)

    def _serve(self, sock: socket.socket, stream: io.BufferedIOBase) -> None:
        connection = ConnectionState()
        while True:
            header = read_exact(stream, PROTO_HEADER.size)
            if header is None:
                return
            version, proto_type, size = decode_proto_header(header)
            if version != PROTO_VERSION:
                raise CloseConnection(f"proto version {version}")
            if size > PROTO_SIZE_MAX:
                raise CloseConnection(f"proto size {size}")
            body = read_exact(stream, size)
            if body is None:
                return
            for reply in self.server.processor.handle(proto_type, body, connection):
                sock.sendall(reply)


ProcessorFactory = Callable[[int], RequestProcessor]  # bound port -> processor


class AerospikeTestServer(socketserver.ThreadingTCPServer):
    """Thread-per-connection TCP server; remembers connections so a stop can close them."""

    allow_reuse_address = True
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], processor_factory: ProcessorFactory) -> None:
        super().__init__(address, ConnectionHandler)
        self.processor: RequestProcessor = processor_factory(self.server_address[1])
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def track_connection(self, sock: socket.socket, active: bool) -> None:
        with self._connections_lock:
            if active:
                self._connections.add(sock)
            else:
                self._connections.discard(sock)

    def close_connections(self) -> None:
        """Shut down every client connection so their handler threads see EOF and stop."""
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def bind_server(
    host: str, port: int, processor_factory: ProcessorFactory, retry_seconds: float
) -> AerospikeTestServer:
    """Bind, retrying for a while if a fixed port is still held (a restart on the same port)."""
    deadline = time.monotonic() + retry_seconds
    while True:
        try:
            return AerospikeTestServer((host, port), processor_factory)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or port == 0 or time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def watch_parent(parent_pid: int, server: AerospikeTestServer) -> None:
    """Stop the server if the process that started it dies (so tests never leak servers)."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            LOG.warning("parent process %d is gone: stopping", parent_pid)
            server.shutdown()
            return


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Loopback single-node Aerospike test server.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=3000, help="port to listen on, 0 = any free port")
    parser.add_argument("--namespaces", default="test", help="comma-separated namespace names")
    parser.add_argument("--max-record-size", type=int, default=1024 * 1024, help="max record size in bytes")
    parser.add_argument("--cluster-name", default="null", help="value of the cluster-name info command")
    parser.add_argument(
        "--data-file", type=Path, help="keep the records in this file (and a .journal beside it) across restarts"
    )
    parser.add_argument(
        "--flush-max-ms", type=int, default=1000, help="how often written records go to the data file's journal"
    )
    parser.add_argument(
        "--nsup-period", type=int, default=0, help="namespace supervisor period; 0 (the default) refuses TTLs"
    )
    parser.add_argument("--parent-pid", type=int, help="exit when this parent process goes away")
    parser.add_argument(
        "--bind-retry-seconds", type=float, default=10.0, help="retry a busy fixed port this long"
    )
    parser.add_argument("--log-level", default="WARNING", help="logging level for stderr")
    arguments = parser.parse_args(argv)
    namespaces = tuple(name.strip() for name in arguments.namespaces.split(",") if name.strip())
    if not namespaces or any(
        not 0 < len(name.encode("utf-8")) <= MAX_NAMESPACE_NAME_SIZE for name in namespaces
    ):
        parser.error("--namespaces needs 1 to 31 byte names")
    arguments.namespaces = namespaces
    return arguments


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=arguments.log_level.upper(),
        format="aerospike-test-server %(levelname)s %(message)s",
    )

    data_file: Path | None = arguments.data_file
    store = Store(arguments.namespaces, data_file, arguments.flush_max_ms)

    def make_processor(port: int) -> RequestProcessor:
        config = ServerConfig(
            namespaces=arguments.namespaces,
            max_record_size=arguments.max_record_size,
            cluster_name=arguments.cluster_name,
            node_name=f"BB9{port:012X}",
            port=port,
            nsup_period=arguments.nsup_period,
            flush_max_ms=arguments.flush_max_ms,
            on_device=data_file is not None,
        )
        return RequestProcessor(config, store)

    server = bind_server(arguments.host, arguments.port, make_processor, arguments.bind_retry_seconds)

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        LOG.info("signal %d: stopping", signum)
        # shutdown() waits for serve_forever() to return, so it cannot run on this (main) thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    if arguments.parent_pid is not None:
        threading.Thread(target=watch_parent, args=(arguments.parent_pid, server), daemon=True).start()

    print(f"READY {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.05)
    finally:
        server.server_close()
        server.close_connections()
        store.close()
    return 0


# ---------------------------------------------------------------------------------------------
# Test fixture helpers
# ---------------------------------------------------------------------------------------------


def freeze_process(pid: int, timeout: float = 10.0) -> None:
    """SIGSTOP, then wait until the kernel reports the process stopped (delivery is asynchronous)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while True:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
        if state in ("T", "t"):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {pid} did not stop after SIGSTOP (state {state})")
        time.sleep(0.01)


def thaw_process(pid: int) -> None:
    """SIGCONT: a frozen process carries on where it was."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


@dataclasses.dataclass
class AerospikeServerProcess:
    """A running (or stopped) server subprocess, as yielded by :func:`start_aerospike_server`.

    Its controls (``stop``, ``start``, ``restart``, ``kill``, ``freeze``, ``thaw``) are the ones
    :class:`tests.support.real_aerospike.RealAerospikeServer` has for a real node.
    """

    namespaces: tuple[str, ...] = ("test",)
    max_record_size: int = 1024 * 1024
    data_file: Path | None = None
    cluster_name: str | None = None
    startup_timeout: float = 15.0
    host: str = "127.0.0.1"
    port: int = 0
    nsup_period: int = 0
    flush_max_ms: int = 1000
    process: subprocess.Popen[bytes] | None = None
    frozen: bool = False
    kind: str = "Aerospike test server"

    @property
    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.is_running and self.process is not None else None

    @property
    def hosts(self) -> list[tuple[str, int]]:
        return [(self.host, self.port)]

    def client_config(self, **policies: Any) -> dict[str, Any]:
        """A config dict for ``aerospike.client()``; keyword arguments become ``policies``."""
        config: dict[str, Any] = {"hosts": self.hosts, "policies": dict(policies)}
        if self.cluster_name is not None:
            config["cluster_name"] = self.cluster_name
        return config

    def command(self) -> list[str]:
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--namespaces",
            ",".join(self.namespaces),
            "--max-record-size",
            str(self.max_record_size),
            "--nsup-period",
            str(self.nsup_period),
            "--flush-max-ms",
            str(self.flush_max_ms),
            "--parent-pid",
            str(os.getpid()),
        ]
        if self.cluster_name is not None:
            command += ["--cluster-name", self.cluster_name]
        if self.data_file is not None:
            command += ["--data-file", str(self.data_file)]
        return command

    def start(self) -> None:
        """Start the server (on the same port as before, if it ran already) and wait for READY."""
        if self.is_running:
            raise RuntimeError("the Aerospike test server is already running")
        self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        try:
            self.port = self._wait_until_ready(self.process)
        except BaseException:
            self.kill()
            raise

    def _wait_until_ready(self, process: subprocess.Popen[bytes]) -> int:
        assert process.stdout is not None
        deadline = time.monotonic() + self.startup_timeout
        output = b""
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while b"\n" not in output:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"Aerospike test server not ready after {self.startup_timeout} s")
                if selector.select(remaining):
                    chunk = os.read(process.stdout.fileno(), 4096)
                    if not chunk:
                        raise RuntimeError(f"Aerospike test server exited early with code {process.wait()}")
                    output += chunk
        line = output.split(b"\n", 1)[0].decode("ascii", "replace").strip()
        word, _, port = line.partition(" ")
        if word != "READY" or not port.isdigit():
            raise RuntimeError(f"unexpected Aerospike test server output {line!r}")
        return int(port)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (the store is saved to the data file, if any) and wait; SIGKILL on timeout.

        Returns the exit code (0 after a clean stop), or None if the server was not started.
        """
        process = self.process
        if process is None:
            return None
        self.thaw()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._forget_process()
        return process.returncode

    def kill(self) -> None:
        """SIGKILL: a crash. The writes of the last flush interval (``flush_max_ms``) are lost."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait()
        self.frozen = False
        self._forget_process()

    def freeze(self) -> None:
        """SIGSTOP: connections stay open, nothing answers (a hung node)."""
        if self.process is None:
            raise RuntimeError("the Aerospike test server is not running")
        freeze_process(self.process.pid)
        self.frozen = True

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        if self.frozen and self.process is not None:
            thaw_process(self.process.pid)
        self.frozen = False

    def restart(self, keep_data: bool = True) -> None:
        """Stop and start again on the same port. Data survives if there is a data file."""
        self.stop()
        if not keep_data and self.data_file is not None:
            self.data_file.unlink(missing_ok=True)
            journal_path(self.data_file).unlink(missing_ok=True)
        self.start()

    def _forget_process(self) -> None:
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None


@contextlib.contextmanager
def start_aerospike_server(
    namespaces: Sequence[str] = ("test",),
    max_record_size: int = 1024 * 1024,
    *,
    data_file: str | os.PathLike[str] | None = None,
    persist: bool = True,
    cluster_name: str | None = None,
    startup_timeout: float = 15.0,
    nsup_period: int = 0,
    flush_max_ms: int = 1000,
) -> Iterator[AerospikeServerProcess]:
    """Run the test server in a subprocess for the duration of the ``with`` block.

    With ``persist`` (the default) and no ``data_file``, the store is kept in a temporary file, so
    ``restart()`` keeps the data. Pass ``persist=False`` for a server that forgets on restart.
    The process is always stopped when the block exits.
    """
    with contextlib.ExitStack() as cleanup:
        path: Path | None = Path(data_file) if data_file is not None else None
        if path is None and persist:
            directory = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="aerospike-test-server-"))
            path = Path(directory) / "store.json"
        server = AerospikeServerProcess(
            namespaces=tuple(namespaces),
            max_record_size=max_record_size,
            data_file=path,
            cluster_name=cluster_name,
            startup_timeout=startup_timeout,
            nsup_period=nsup_period,
            flush_max_ms=flush_max_ms,
        )
        cleanup.callback(server.kill)
        cleanup.callback(server.stop)
        server.start()
        yield server


if __name__ == "__main__":
    sys.exit(main())
