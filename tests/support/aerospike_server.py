"""A loopback, single-node Aerospike test server that speaks enough of the wire protocol for tests.

No real Aerospike server can be installed where the tests run. This module is a small server that
the official ``aerospike`` Python client (19.x, C client 7.x) can connect to, tend and use for
every call the storage backend makes. The spec it follows is
``/work/shared/reference/aerospike-wire-protocol.md``. Section numbers (§) below refer to it.

Run it as its own process (it must not run inside the test process: ``client.truncate()`` holds
the GIL while it waits for the answer). In tests::

    with start_aerospike_server(namespaces=("test",)) as server:
        client = aerospike.client({"hosts": [(server.host, server.port)]}).connect()
        ...
        server.restart()  # same port, data kept; the client reconnects by itself

By hand::

    python tests/support/aerospike_server.py --port 0 --namespaces test,bar \
        --max-record-size 1048576 [--data-file PATH]

Once it listens it prints one line, ``READY <port>``, to stdout. SIGTERM or SIGINT stop it cleanly.
With ``--data-file`` the store is loaded from that file at start and saved to it on a clean stop, so
a restart keeps the data. Test fixtures use :func:`start_aerospike_server` instead of running it
by hand.

What it implements:

* Proto framing (§2): info (type 1), AS_MSG (type 3) and compressed AS_MSG (type 4) requests.
  Replies are compressed when the request asks for it (info1 COMPRESS_RESPONSE).
* The info commands the client uses to connect and tend (§3): ``node``, ``partition-generation``,
  ``build`` (7.2.0.0), ``peers-generation``, ``peers-clear-std``, ``replicas`` (one node owns all
  4096 partitions of every namespace) and ``cluster-name``. It also answers ``namespaces``,
  ``status``, ``sets``, ``sets/<ns>``, ``namespace/<ns>``, ``truncate`` and ``truncate-namespace``,
  plus ``test-server-statistics`` (request counters, not a real Aerospike command). Unknown commands
  give ``ERROR:4:unrecognized command``.
* Single-record commands (§4): get, select, exists, put, operate (read, write, incr, append,
  prepend, touch, delete-all) and remove, with generation checks, exists policies, TTLs (expired
  records are dropped lazily), a max record size (result 13) and unknown namespaces (result 20).
* The batch protocol (§5): read, exists, read-bins, write/operate and remove rows.
* Scan and query of a set or a whole namespace (§6): partition list, resume digests, select
  lists, no-bins and max-records.

What it does not implement:

* Requests answered with UNSUPPORTED_FEATURE (result 16): secondary-index queries (``where``),
  filter expressions, UDFs (``apply``, aggregations), CDT (list/map), bit, HLL and expression
  operations, background scans and queries, multi-record transactions.
* Security (admin messages close the connection), TLS, XDR, rack awareness, more than one node,
  PARTITION_DONE messages, ``user-agent-set`` (never sent to a 7.2 build).
* Storage: records live in memory; no eviction, no namespace default TTL (0 means "never
  expire"), no durable-delete tombstones. Data survives only a clean stop (SIGTERM or SIGINT)
  with ``--data-file``; a SIGKILL loses everything written since the last clean stop.
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
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
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
COMPRESS_THRESHOLD = 128

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
# Fixed per-record overhead for the max-record-size check. With a one-character set name and a
# one-character bin name, the largest bytes value that fits in 1 MiB is then 1,048,525 bytes, the
# same as a real 8.1 server with default settings.
RECORD_OVERHEAD_BYTES = 48
# Target size of one proto message in a multi-message (batch or scan) reply.
STREAM_CHUNK_BYTES = 512 * 1024

SERVER_BUILD = "7.2.0.0"  # >= 6.0 for the new batch/query formats, < 8.1 to avoid user-agent-set
PARTITION_GENERATION = 1
PEERS_GENERATION = 1
DATA_FILE_FORMAT = "aerospike-test-server/1"


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


def frame_message(body: bytes, compress: bool) -> bytes:
    """Frame an as_msg body as type 3, or as type 4 when compression is asked for and worth it."""
    message = frame(PROTO_TYPE_MESSAGE, body)
    if not compress or len(message) <= COMPRESS_THRESHOLD:
        return message
    return frame(PROTO_TYPE_COMPRESSED, struct.pack(">Q", len(message)) + zlib.compress(message))


def decode_proto_header(header: bytes) -> tuple[int, int, int]:
    """Return (version, type, body size) of an 8-byte proto header."""
    value = PROTO_HEADER.unpack(header)[0]
    return value >> 56, (value >> 48) & 0xFF, value & 0xFFFF_FFFF_FFFF


def decompress_message(body: bytes) -> bytes:
    """Inflate a type-4 body and return the as_msg body of the type-3 message inside it."""
    if len(body) < 8:
        raise malformed("compressed message shorter than its size prefix")
    expected_size = struct.unpack_from(">Q", body)[0]
    if expected_size > PROTO_SIZE_MAX + PROTO_HEADER.size:
        raise malformed(f"compressed message inflates to {expected_size} bytes")
    inflater = zlib.decompressobj()
    try:
        inner = inflater.decompress(body[8:], expected_size + 1)
    except zlib.error as exc:
        raise malformed(f"bad zlib stream: {exc}") from exc
    if len(inner) != expected_size or len(inner) < PROTO_HEADER.size:
        raise malformed(f"compressed message inflated to {len(inner)} bytes, expected {expected_size}")
    version, proto_type, size = decode_proto_header(inner[: PROTO_HEADER.size])
    if version != PROTO_VERSION or proto_type != PROTO_TYPE_MESSAGE or size != len(inner) - PROTO_HEADER.size:
        raise malformed("compressed message does not hold one complete type-3 message")
    return inner[PROTO_HEADER.size :]


def partition_id(digest: bytes) -> int:
    return int.from_bytes(digest[0:2], "little") & (N_PARTITIONS - 1)


def now_since_citrusleaf_epoch() -> int:
    return int(time.time()) - CITRUSLEAF_EPOCH


# ---------------------------------------------------------------------------------------------
# The record store
# ---------------------------------------------------------------------------------------------


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
        """Record size for the max-record-size check: names and values plus a fixed overhead."""
        key_size = len(self.key) if self.key is not None else 0
        bins_size = sum(len(name) + 1 + len(bin_.value) for name, bin_ in self.bins.items())
        return RECORD_OVERHEAD_BYTES + len(self.set_name) + key_size + bins_size


class Store:
    """In-memory records of every namespace, keyed by digest. Callers hold ``lock``."""

    def __init__(self, namespaces: Sequence[str]) -> None:
        self.lock = threading.Lock()
        self.namespaces: dict[str, dict[bytes, Record]] = {namespace: {} for namespace in namespaces}
        self.truncate_luts: dict[tuple[str, bytes], int] = {}

    def records(self, namespace: str) -> dict[bytes, Record]:
        try:
            return self.namespaces[namespace]
        except KeyError:
            raise CommandError(RESULT_NAMESPACE, f"unknown namespace {namespace!r}") from None

    @staticmethod
    def live_record(records: dict[bytes, Record], digest: bytes, now: int) -> Record | None:
        """The record with this digest, or None if missing or expired (expired ones are dropped)."""
        record = records.get(digest)
        if record is not None and record.is_expired(now):
            del records[digest]
            return None
        return record

    def truncate(self, namespace: str, set_name: bytes | None, before_ns: int) -> int:
        """Delete records of a set (or the whole namespace) last updated before ``before_ns``."""
        records = self.records(namespace)
        doomed = [
            digest
            for digest, record in records.items()
            if (set_name is None or record.set_name == set_name) and record.last_update_ns < before_ns
        ]
        for digest in doomed:
            del records[digest]
        sets = {record.set_name for record in records.values()} if set_name is None else {set_name}
        for name in sets:
            self.truncate_luts[(namespace, name)] = before_ns
        return len(doomed)

    def to_json(self) -> dict[str, Any]:
        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode("ascii")

        return {
            "format": DATA_FILE_FORMAT,
            "namespaces": {
                namespace: [
                    {
                        "digest": digest.hex(),
                        "set": b64(record.set_name),
                        "key": None if record.key is None else b64(record.key),
                        "generation": record.generation,
                        "void_time": record.void_time,
                        "last_update_ns": record.last_update_ns,
                        "bins": [
                            [b64(name), bin_.particle_type, b64(bin_.value)]
                            for name, bin_ in record.bins.items()
                        ],
                    }
                    for digest, record in records.items()
                ]
                for namespace, records in self.namespaces.items()
            },
        }

    def load_json(self, document: dict[str, Any]) -> None:
        if document.get("format") != DATA_FILE_FORMAT:
            raise ValueError(f"not a {DATA_FILE_FORMAT} data file")
        for namespace, rows in document["namespaces"].items():
            if namespace not in self.namespaces:
                LOG.warning("data file namespace %r is not configured: its records are dropped", namespace)
                continue
            records = self.namespaces[namespace]
            for row in rows:
                records[bytes.fromhex(row["digest"])] = Record(
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

    def save(self, path: Path) -> None:
        """Write the store to ``path`` atomically."""
        with self.lock:
            document = self.to_json()
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(document), encoding="utf-8")
        os.replace(temporary, path)

    def load(self, path: Path) -> None:
        document = json.loads(path.read_text(encoding="utf-8"))
        with self.lock:
            self.load_json(document)


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
        check_generation(command, existing.generation)
        if command.info2 & INFO2_CREATE_ONLY:
            raise CommandError(RESULT_RECORD_EXISTS, "record exists")


def new_void_time(record_ttl: int, existing: Record | None, now: int) -> int:
    """Apply a request TTL (§4.7): 0 = namespace default (never), -1 = never, -2 = keep."""
    if record_ttl in (TTL_NAMESPACE_DEFAULT, TTL_NEVER_EXPIRE):
        return 0
    if record_ttl == TTL_DONT_UPDATE:
        return existing.void_time if existing is not None else 0
    if record_ttl > MAX_TTL_SECONDS:
        raise malformed(f"ttl {record_ttl} exceeds 10 years")
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

    def __init__(self, store: Store, max_record_size: int) -> None:
        self.store = store
        self.max_record_size = max_record_size

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

    def _read(self, command: RecordCommand, records: dict[bytes, Record], now: int) -> RecordResult:
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

    def _delete(self, command: RecordCommand, records: dict[bytes, Record], now: int) -> RecordResult:
        record = self.store.live_record(records, command.digest, now)
        if record is None:
            return RecordResult(RESULT_NOT_FOUND)
        check_generation(command, record.generation)
        del records[command.digest]
        return RecordResult(RESULT_OK)

    def _write(self, command: RecordCommand, records: dict[bytes, Record], now: int) -> RecordResult:
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
        void_time = new_void_time(command.record_ttl, existing, now)

        replace = bool(command.info3 & (INFO3_CREATE_OR_REPLACE | INFO3_REPLACE_ONLY))
        bins = {} if existing is None or replace else dict(existing.bins)
        response = self._apply_ops(command, bins)

        if not bins:
            if existing is None:
                return RecordResult(RESULT_NOT_FOUND)
            del records[command.digest]
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
        records[command.digest] = record
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


def chunk_messages(messages: Iterable[bytes], compress: bool) -> Iterator[bytes]:
    """Pack as_msg records into proto messages of about STREAM_CHUNK_BYTES each."""
    pending: list[bytes] = []
    pending_size = 0
    for message in messages:
        pending.append(message)
        pending_size += len(message)
        if pending_size >= STREAM_CHUNK_BYTES:
            yield frame_message(b"".join(pending), compress)
            pending = []
            pending_size = 0
    if pending:
        yield frame_message(b"".join(pending), compress)


def handle_batch(engine: RecordEngine, message: Message) -> list[bytes]:
    extra = message.field_types() - {FIELD_BATCH_INDEX}
    if extra:
        raise unsupported(f"batch fields {sorted(extra)} are not supported")
    data = message.field(FIELD_BATCH_INDEX)
    if data is None:
        raise malformed("batch without a BATCH_INDEX field")
    rows = parse_batch_rows(data)
    compress = bool(message.info1 & INFO1_COMPRESS_RESPONSE)

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

    replies = list(chunk_messages(row_replies(), compress))
    replies.append(frame_message(encode_message(info3=INFO3_LAST), compress))
    return replies


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

    def matching_records(self, store: Store) -> list[tuple[bytes, Record]]:
        """The live records to return, in (partition, digest) order like the real server."""
        now = now_since_citrusleaf_epoch()
        with store.lock:
            records = store.records(self.namespace)
            candidates = [
                (digest, record)
                for digest, record in records.items()
                if (self.set_name is None or record.set_name == self.set_name)
                and partition_id(digest) in self.partitions
                and not record.is_expired(now)
            ]
        candidates.sort(key=lambda item: (partition_id(item[0]), item[0]))
        return [
            (digest, record)
            for digest, record in candidates
            if partition_id(digest) not in self.resume_after
            or digest > self.resume_after[partition_id(digest)]
        ]

    def response_bins(self, record: Record) -> ResponseBins | None:
        """The bins to send, or None to skip a record that has none of the selected bins."""
        if self.no_bins:
            return []
        if not self.selected_bins:
            return list(record.bins.items())
        bins = [(name, record.bins[name]) for name in self.selected_bins if name in record.bins]
        return bins or None


def handle_scan(store: Store, message: Message) -> list[bytes]:
    request = ScanRequest.from_message(message)
    compress = bool(message.info1 & INFO1_COMPRESS_RESPONSE)
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

    replies = list(chunk_messages(record_messages(), compress))
    replies.append(frame_message(encode_message(info3=INFO3_LAST), compress))
    return replies


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
            "compressed_replies": 0,
            "error_replies": 0,
        }

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counters[name] = self._counters.get(name, 0) + amount

    def render(self) -> str:
        with self._lock:
            return ";".join(f"{name}={value}" for name, value in self._counters.items())


class InfoResponder:
    """Answers info requests: one ``<request line>\\t<value>\\n`` per request line."""

    def __init__(self, config: ServerConfig, store: Store, statistics: ServerStatistics) -> None:
        self.config = config
        self.store = store
        self.statistics = statistics

    def respond(self, body: bytes) -> bytes:
        # latin-1 maps every byte to one character, so each line is echoed back exactly.
        lines = [line for line in body.decode("latin-1").split("\n") if line]
        return "".join(f"{line}\t{self.value(line)}\n" for line in lines).encode("latin-1")

    def value(self, line: str) -> str:
        name, _, argument = line.partition(":")
        try:
            return self._value(name.strip(), argument)
        except CommandError as error:
            return f"ERROR:{error.result_code}:{error}"
        except Exception:  # a bad info request must not take the connection down
            LOG.exception("info command %r failed", line)
            return "ERROR:4:internal error"

    def _value(self, name: str, argument: str) -> str:
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
        if name == "test-server-statistics":
            return self.statistics.render()
        if name == "sets" or name.startswith("sets/"):
            return self._sets(name)
        if name.startswith("namespace/"):
            return self._namespace_statistics(name.removeprefix("namespace/"))
        if name in ("truncate", "truncate-namespace"):
            return self._truncate(name, parse_info_parameters(argument))
        raise CommandError(RESULT_PARAMETER, "unrecognized command")

    def _sets(self, name: str) -> str:
        """``sets``, ``sets/<ns>`` or ``sets/<ns>/<set>``: per-set statistics like the real server."""
        parts = name.split("/")
        namespaces = list(self.config.namespaces) if len(parts) == 1 else [parts[1]]
        only_set = parts[2].encode("utf-8") if len(parts) > 2 else None
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
                        data_bytes[record.set_name] = data_bytes.get(record.set_name, 0) + record.size()
                truncated = {name for (ns, name) in self.store.truncate_luts if ns == namespace and name}
                known = set(objects) | truncated
                for set_name in sorted(known):
                    if only_set is not None and set_name != only_set:
                        continue
                    entries.append(
                        f"ns={namespace}:set={set_name.decode('utf-8', 'replace')}"
                        f":objects={objects.get(set_name, 0)}:tombstones=0"
                        f":data_used_bytes={data_bytes.get(set_name, 0)}"
                        f":truncate_lut={self.store.truncate_luts.get((namespace, set_name), 0) // 1_000_000}"
                        ":sindexes=0:index_populating=false:truncating=false;"
                    )
        return "".join(entries)

    def _namespace_statistics(self, namespace: str) -> str:
        with self.store.lock:
            objects = len(self.store.records(namespace))
        return ";".join(
            [
                f"objects={objects}",
                "replication-factor=1",
                "default-ttl=0",
                f"max-record-size={self.config.max_record_size}",
                "nsup-period=120",
                "strong-consistency=false",
                "storage-engine=memory",
            ]
        )

    def _truncate(self, name: str, parameters: dict[str, str]) -> str:
        namespace = parameters.get("namespace", "")
        if namespace not in self.config.namespaces:
            raise CommandError(RESULT_PARAMETER, f"namespace {namespace!r} not found")
        set_name: bytes | None = None
        if name == "truncate":
            set_name = parameters.get("set", "").encode("utf-8")
            if not set_name:
                raise CommandError(RESULT_PARAMETER, "missing set")
        lut_text = parameters.get("lut")
        try:
            before_ns = int(lut_text) if lut_text else time.time_ns() + 1
        except ValueError:
            raise CommandError(RESULT_PARAMETER, f"bad lut {lut_text!r}") from None
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
        self.engine = RecordEngine(store, config.max_record_size)
        self.statistics = ServerStatistics()
        self.info = InfoResponder(config, store, self.statistics)

    def handle(self, proto_type: int, body: bytes) -> list[bytes]:
        if proto_type == PROTO_TYPE_INFO:
            self.statistics.count("info_requests")
            return [frame(PROTO_TYPE_INFO, self.info.respond(body))]
        if proto_type not in (PROTO_TYPE_MESSAGE, PROTO_TYPE_COMPRESSED):
            raise CloseConnection(f"unsupported proto type {proto_type}")
        self.statistics.count("message_requests")
        try:
            if proto_type == PROTO_TYPE_COMPRESSED:
                self.statistics.count("compressed_requests")
                body = decompress_message(body)
            message = parse_message(body)
            replies = self.handle_message(message)
            compressed = sum(1 for reply in replies if reply[1] == PROTO_TYPE_COMPRESSED)
            self.statistics.count("compressed_replies", compressed)
            return replies
        except CommandError as error:
            self.statistics.count("error_replies")
            LOG.debug("request failed with %d: %s", error.result_code, error)
            return [frame(PROTO_TYPE_MESSAGE, error_message(error.result_code))]
        except Exception:  # never let one bad request take the server down
            LOG.exception("unexpected error handling a request")
            return [frame(PROTO_TYPE_MESSAGE, error_message(RESULT_PARAMETER))]

    def handle_message(self, message: Message) -> list[bytes]:
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
        return [frame_message(reply, bool(message.info1 & INFO1_COMPRESS_RESPONSE))]


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
            for reply in self.server.processor.handle(proto_type, body):
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
    parser.add_argument("--data-file", type=Path, help="load the store from here at start, save it on stop")
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

    store = Store(arguments.namespaces)
    data_file: Path | None = arguments.data_file
    if data_file is not None and data_file.exists():
        store.load(data_file)
        LOG.info("loaded %s", data_file)

    def make_processor(port: int) -> RequestProcessor:
        config = ServerConfig(
            namespaces=arguments.namespaces,
            max_record_size=arguments.max_record_size,
            cluster_name=arguments.cluster_name,
            node_name=f"BB9{port:012X}",
            port=port,
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
        if data_file is not None:
            store.save(data_file)
            LOG.info("saved %s", data_file)
    return 0


# ---------------------------------------------------------------------------------------------
# Test fixture helpers
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class AerospikeServerProcess:
    """A running (or stopped) server subprocess, as yielded by :func:`start_aerospike_server`."""

    namespaces: tuple[str, ...] = ("test",)
    max_record_size: int = 1024 * 1024
    data_file: Path | None = None
    cluster_name: str | None = None
    startup_timeout: float = 15.0
    host: str = "127.0.0.1"
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

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
        """SIGKILL: a crash. Nothing is saved."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait()
        self._forget_process()

    def restart(self, keep_data: bool = True) -> None:
        """Stop and start again on the same port. Data survives if there is a data file."""
        self.stop()
        if not keep_data and self.data_file is not None:
            self.data_file.unlink(missing_ok=True)
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
        )
        cleanup.callback(server.kill)
        cleanup.callback(server.stop)
        server.start()
        yield server


if __name__ == "__main__":
    sys.exit(main())
