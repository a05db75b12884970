"""``aerospike://host:3000[,host2:3000]/namespace``: the production store, on the official client.

This is the only module that imports ``aerospike``. Every client call runs inside
:func:`_translated`, which turns Aerospike exceptions into the ``segments`` exception tree
(``raise ... from exc``); batch calls report per-row result codes instead of raising, and those
codes go through the same table (:func:`_error_for`). No Aerospike type leaves this module.

URL query parameters (all optional; anything else is rejected):

==================== ========= ==============================================================
parameter            default   meaning
==================== ========= ==============================================================
``prefix``           ``""``    prepended to every set name (tests, several deployments per
                               namespace); ``[A-Za-z0-9_.-]``
``timeout_ms``       1000      total timeout of single-record reads and of ``ping``
``socket_timeout_ms`` 500      idle-socket timeout before a retry (retried commands only)
``write_timeout_ms`` 2000      total timeout of single-record writes and deletes
``batch_timeout_ms`` 5000      total timeout of one batch call and of one scan page
``connect_timeout_s`` 5        how long connecting keeps retrying (a node that just started
                               answers ``ClientError -1`` until it has formed its cluster)
``user``/``password``          credentials, for clusters with security enabled
``cluster_name``               the expected cluster name (the client checks it)
==================== ========= ==============================================================

Records never expire (TTL -1: a server with default settings refuses any TTL > 0 with code 22)
and are written with ``POLICY_KEY_SEND`` so that scans return the user key. Retries: reads,
unconditional writes and batch calls are retried (re-running them is harmless); conditional
writes and single deletes are not. A conditional write whose reply was lost would otherwise be
re-sent, fail its generation check against its own first attempt and be reported as a
``Conflict``, and the core would then discard the records the committed write points to. Without
the retry it ends as ``StorageTimeout`` ("may have been applied") and the core keeps them.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, quote

import aerospike
from aerospike import exception as aex
from aerospike_helpers.batch import records as batch_records  # type: ignore[import-untyped, unused-ignore]
from aerospike_helpers.operations import operations as ops  # type: ignore[import-untyped, unused-ignore]

from ..errors import (
    Conflict,
    CorruptSegment,
    RecordTooLarge,
    SegmentsError,
    StorageError,
    StorageFull,
    StorageMisconfigured,
    StorageTimeout,
    StorageUnavailable,
)
from ..types import BinValue
from .base import Bins, Record, Store

LOG = logging.getLogger(__name__)

DEFAULT_PORT = 3000
#: Keys per ``batch_read`` / ``batch_remove`` call.
READ_CHUNK = 5000
#: Rows and payload bytes per ``batch_write`` call.
WRITE_CHUNK_ROWS = 1000
WRITE_CHUNK_BYTES = 4 << 20
#: Records per scan page (a scan holds at most one page in memory).
SCAN_PAGE = 1000

_MAX_SET_NAME = 63  # bytes (the server's limit is 64 including the NUL)
_MAX_BIN_NAME = 15  # bytes
_MAX_NAMESPACE = 31  # bytes
_INT64 = (-(2**63), 2**63 - 1)
_PREFIX_RE = re.compile(r"[A-Za-z0-9_.\-]*")
_SET_FORBIDDEN = re.compile(r"[:;\x00]")
_PASSWORD_RE = re.compile(r"([?&]password=)[^&#]*")

# Result codes (the server's and the C client's).
_OK = 0
_NOT_FOUND = 2
_BATCH_FAILED = -16  # "some rows failed": look at the rows
_NO_RESPONSE = -15


# ---------------------------------------------------------------------------------------------
# URL
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AerospikeSettings:
    """Everything an ``aerospike://`` URL says (see the module docstring for the parameters)."""

    hosts: tuple[tuple[str, int], ...]
    namespace: str
    prefix: str = ""
    timeout_ms: int = 1000
    socket_timeout_ms: int = 500
    write_timeout_ms: int = 2000
    batch_timeout_ms: int = 5000
    connect_timeout_s: float = 5.0
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    cluster_name: str | None = None

    @property
    def where(self) -> str:
        """``host:port,host2:port/namespace``, for messages."""
        return ",".join(_host_text(h, p) for h, p in self.hosts) + f"/{self.namespace}"

    def url(self) -> str:
        """The canonical URL, with the password masked."""
        params: list[tuple[str, str]] = []
        defaults = AerospikeSettings(hosts=self.hosts, namespace=self.namespace)
        for name in _PARAMETERS:
            value = getattr(self, name)
            if value is None or value == getattr(defaults, name):
                continue
            if name == "password":
                value = "***"
            params.append((name, _format_number(value) if not isinstance(value, str) else value))
        query = "&".join(f"{k}={quote(v, safe='*')}" for k, v in params)
        return f"aerospike://{self.where}" + (f"?{query}" if query else "")


_PARAMETERS = (
    "prefix",
    "timeout_ms",
    "socket_timeout_ms",
    "write_timeout_ms",
    "batch_timeout_ms",
    "connect_timeout_s",
    "user",
    "password",
    "cluster_name",
)


def _format_number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _host_text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_url(url: str) -> AerospikeSettings:
    """Parse and validate an ``aerospike://`` URL; ``StorageError`` says what is wrong."""
    raw_url, url = url, _masked(url)
    scheme, sep, rest = raw_url.partition("://")
    if not sep or scheme.lower() != "aerospike":
        raise StorageMisconfigured(f"not an aerospike URL: {url!r}")
    if "#" in rest:
        raise StorageMisconfigured(f"aerospike URL {url!r}: a fragment ('#...') is not allowed")
    location, _, query = rest.partition("?")
    netloc, slash, path = location.partition("/")
    if "@" in netloc:
        raise StorageMisconfigured(
            f"aerospike URL {url!r}: give credentials as query parameters (?user=...&password=...), "
            "not before the host"
        )
    hosts = tuple(_parse_host(part, url) for part in netloc.split(","))
    namespace = path.strip("/") if slash else ""
    if not namespace:
        raise StorageMisconfigured(
            f"aerospike URL {url!r} names no namespace: expected aerospike://host:3000/namespace"
        )
    if "/" in namespace or len(namespace.encode()) > _MAX_NAMESPACE or _SET_FORBIDDEN.search(namespace):
        raise StorageMisconfigured(
            f"aerospike URL {url!r}: invalid namespace {namespace!r} "
            f"(one path segment of at most {_MAX_NAMESPACE} bytes)"
        )
    values: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in _PARAMETERS:
            raise StorageMisconfigured(
                f"aerospike URL {url!r}: unknown parameter {name!r}; known: {', '.join(_PARAMETERS)}"
            )
        if name in values:
            raise StorageMisconfigured(f"aerospike URL {url!r}: parameter {name!r} is given twice")
        values[name] = _parse_parameter(name, value, url)
    if ("user" in values) != ("password" in values):
        raise StorageMisconfigured(f"aerospike URL {url!r}: user and password must be given together")
    settings = AerospikeSettings(hosts=hosts, namespace=namespace, **values)
    if settings.socket_timeout_ms > settings.timeout_ms:
        settings = replace(settings, socket_timeout_ms=settings.timeout_ms)
    return settings


def _masked(url: str) -> str:
    """The URL with the password parameter's value hidden, for messages."""
    return _PASSWORD_RE.sub(r"\1***", url)


def _parse_host(text: str, url: str) -> tuple[str, int]:
    text = text.strip()
    if not text:
        raise StorageMisconfigured(f"aerospike URL {url!r}: empty host (expected host:port[,host2:port])")
    if text.startswith("["):  # [ipv6]:port
        host, bracket, port_text = text[1:].partition("]")
        if not bracket or (port_text and not port_text.startswith(":")):
            raise StorageMisconfigured(f"aerospike URL {url!r}: bad IPv6 host {text!r} (expected [addr]:port)")
        port_text = port_text[1:]
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise StorageMisconfigured(f"aerospike URL {url!r}: empty host name in {text!r}")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise StorageMisconfigured(f"aerospike URL {url!r}: bad port {port_text!r} for host {host!r} (1-65535)")
    return host, int(port_text)


def _parse_parameter(name: str, value: str, url: str) -> Any:
    if name in ("user", "password", "cluster_name"):
        if not value:
            raise StorageMisconfigured(f"aerospike URL {url!r}: parameter {name!r} is empty")
        return value
    if name == "prefix":
        if not _PREFIX_RE.fullmatch(value) or len(value) > _MAX_SET_NAME - 1:
            raise StorageMisconfigured(
                f"aerospike URL {url!r}: set prefix {value!r} must be at most {_MAX_SET_NAME - 1} "
                "characters of [A-Za-z0-9_.-]"
            )
        return value
    if name == "connect_timeout_s":
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds <= 600:
            raise StorageMisconfigured(f"aerospike URL {url!r}: connect_timeout_s={value!r} is not 0-600 seconds")
        return seconds
    if not value.isdigit() or not 0 < int(value) <= 3_600_000:
        raise StorageMisconfigured(f"aerospike URL {url!r}: {name}={value!r} is not a whole number of ms (1-3600000)")
    return int(value)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

#: the bin of a tombstone: a record ``delete`` left so the delete survives a node restart
TOMBSTONE_BIN = "_deleted"
_TOMBSTONE_ATTEMPTS = 16

# Result code -> (segments error class, what it means). Codes not listed become StorageError.
_CODES: dict[int, tuple[type[SegmentsError], str]] = {
    # client-side codes
    -1: (StorageUnavailable, "client error (no connection to the cluster?)"),
    -2: (StorageMisconfigured, "invalid request parameter"),
    -4: (StorageUnavailable, "invalid host"),
    -5: (StorageUnavailable, "client is closing"),
    -6: (StorageUnavailable, "connection failed"),
    -7: (StorageUnavailable, "no more connections to the node"),
    -8: (StorageUnavailable, "no node for the partition (cluster not formed, or the node is down)"),
    -9: (StorageUnavailable, "TLS error"),
    -10: (StorageUnavailable, "connection failed"),
    -11: (StorageUnavailable, "async queue full"),
    -12: (StorageUnavailable, "retries exhausted"),
    -14: (StorageUnavailable, "node error rate exceeded, the client backs off"),
    _NO_RESPONSE: (StorageUnavailable, "no response for this record (its node failed)"),
    _BATCH_FAILED: (StorageUnavailable, "the batch failed"),
    # server codes
    1: (StorageError, "server error"),
    2: (StorageError, "record not found"),
    3: (Conflict, "generation mismatch"),
    4: (StorageMisconfigured, "the server rejected a parameter"),
    5: (Conflict, "record already exists"),
    7: (StorageUnavailable, "the cluster changed during the command"),
    8: (StorageFull, "the server is out of space (stop-writes)"),
    9: (StorageTimeout, "timeout"),
    11: (StorageUnavailable, "the cluster is unavailable (migrating or a node is missing)"),
    12: (CorruptSegment, "incompatible bin type (a record of this set was written by something else)"),
    13: (RecordTooLarge, "record too big"),
    14: (StorageUnavailable, "hot key: too many concurrent commands on this record"),
    15: (StorageUnavailable, "scan aborted"),
    18: (StorageUnavailable, "device overload"),
    20: (StorageMisconfigured, "namespace not found"),
    21: (StorageMisconfigured, "bad bin name"),
    # 22 is also what a set at its stop-writes size answers: capacity, not the message's fault
    22: (StorageFull, "forbidden by the server configuration (a set at stop-writes, or a refused TTL)"),
    212: (StorageTimeout, "query timeout"),
}


def _error_for(
    code: int | None,
    what: str,
    where: str,
    detail: str = "",
    *,
    in_doubt: bool = False,
    size: int | None = None,
) -> SegmentsError:
    """The ``segments`` error for an Aerospike result code."""
    cls, meaning = _CODES.get(code if code is not None else 1, (StorageError, "error"))
    if 50 <= (code or 0) <= 90:  # security: authentication and authorization
        cls, meaning = StorageMisconfigured, "security error (user, password or permissions)"
    text = f"Aerospike {what} at {where}: {meaning} (code {code})"
    if code == 13:
        record = "the record" if size is None else f"the record (about {size} bytes)"
        text = (
            f"Aerospike {what} at {where}: {record} is larger than the namespace accepts "
            "(the server's max-record-size: 1 MiB by default, at most 8 MiB) (code 13)"
        )
        detail = ""
    elif code == 20:
        text = f"Aerospike {what} at {where}: the namespace does not exist on the cluster (code 20)"
    elif code == 22:
        text += "; e.g. a TTL on a namespace without nsup-period, or a set at its stop-writes size"
    if detail:
        text += f": {detail}"
    if in_doubt:
        text += " (the write may have been applied)"
    return cls(text)


@contextmanager
def _translated(what: str, where: str, size: int | None = None) -> Iterator[None]:
    """Run one client call; turn any Aerospike exception into the ``segments`` tree."""
    try:
        yield
    except aex.AerospikeError as exc:
        code = getattr(exc, "code", None)
        detail = str(getattr(exc, "msg", "") or "").strip().replace("\n", " ")
        in_doubt = bool(getattr(exc, "in_doubt", False))
        raise _error_for(code, what, where, detail, in_doubt=in_doubt, size=size) from exc


# ---------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------


class AerospikeStore:
    """Records in an Aerospike namespace: one set per store set name (plus the URL's prefix).

    Thread-safe (the client is). Fork-unsafe: open the store after forking, or use ``spawn``.
    """

    def __init__(self, url: str) -> None:
        self.settings = parse_url(url)
        #: the URL as given, so that ``open_store(store.url)`` opens the same store again
        #: (``repr`` and every message mask the password)
        self.url = url
        self.namespace = self.settings.namespace
        self._where = self.settings.where
        self._sets: dict[str, str] = {}
        self._lock = threading.Lock()
        self._closed = False
        s = self.settings
        self._read_policy = {
            "total_timeout": s.timeout_ms,
            "socket_timeout": s.socket_timeout_ms,
            "max_retries": 2,
        }
        batch_socket = min(s.batch_timeout_ms, max(s.socket_timeout_ms, s.batch_timeout_ms // 2))
        self._batch_policy = {
            "total_timeout": s.batch_timeout_ms,
            "socket_timeout": batch_socket,
            "max_retries": 2,
        }
        self._scan_policy = dict(self._batch_policy)
        self._info_policy = {"timeout": s.timeout_ms}
        write_socket = min(s.write_timeout_ms, max(s.socket_timeout_ms, s.write_timeout_ms // 2))
        retried_write = {
            "total_timeout": s.write_timeout_ms,
            "socket_timeout": write_socket,
            "max_retries": 2,
        }
        once = {"total_timeout": s.write_timeout_ms, "socket_timeout": s.write_timeout_ms, "max_retries": 0}
        # never expire: a server with default settings refuses any TTL > 0 (code 22)
        key_send = {"key": aerospike.POLICY_KEY_SEND, "ttl": aerospike.TTL_NEVER_EXPIRE}
        self._put_policies: dict[str, dict[str, Any]] = {
            "any": {**retried_write, **key_send, "exists": aerospike.POLICY_EXISTS_CREATE_OR_REPLACE},
            "create": {**once, **key_send, "exists": aerospike.POLICY_EXISTS_CREATE},
            "gen": {
                **once,
                **key_send,
                "exists": aerospike.POLICY_EXISTS_REPLACE,
                "gen": aerospike.POLICY_GEN_EQ,
            },
        }
        self._remove_policies: dict[str, dict[str, Any]] = {
            "any": dict(once),
            "gen": {**once, "gen": aerospike.POLICY_GEN_EQ},
        }
        self._batch_row_write_policy = {**key_send, "exists": aerospike.POLICY_EXISTS_CREATE_OR_REPLACE}
        self._client: Any = self._connect(s.connect_timeout_s)

    # -- connection --------------------------------------------------------------------------

    def _client_config(self) -> dict[str, Any]:
        s = self.settings
        config: dict[str, Any] = {
            "hosts": list(s.hosts),
            "connect_timeout": int(min(1000, max(100, s.connect_timeout_s * 1000))),
            "policies": {
                "read": dict(self._read_policy),
                "write": dict(self._put_policies["any"]),
                "batch": dict(self._batch_policy),
                "info": dict(self._info_policy),
            },
        }
        if s.user is not None:
            config["user"] = s.user
            config["password"] = s.password
        if s.cluster_name is not None:
            config["cluster_name"] = s.cluster_name
        return config

    def _connect(self, patience_s: float) -> Any:
        """A connected client; retries while the cluster is still forming, up to ``patience_s``."""
        deadline = time.monotonic() + patience_s
        delay = 0.05
        while True:
            try:
                client = aerospike.client(self._client_config())
                if not client.is_connected():
                    client.connect()
            except (aex.ParamError, aex.AdminError) as exc:
                raise StorageMisconfigured(
                    f"cannot connect to Aerospike at {self._where}: {exc.msg} (code {exc.code})"
                ) from exc
            except aex.AerospikeError as exc:
                failure: BaseException = exc
                reason = f"{exc.msg} (code {exc.code})"
            else:
                try:
                    self._check_namespace(client)
                    return client
                except StorageUnavailable as exc:  # connected, but the node is not answering yet
                    _close_quietly(client)
                    failure, reason = exc, str(exc)
                except BaseException:
                    _close_quietly(client)
                    raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StorageUnavailable(
                    f"cannot connect to Aerospike at {self._where} (tried for {patience_s:g} s): {reason}"
                ) from failure
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.5)

    def _check_namespace(self, client: Any) -> None:
        with _translated("namespaces info", self._where):
            answer = client.info_random_node("namespaces", self._info_policy)
        # a single-node answer may still carry the command name: "namespaces\ttest;bar\n"
        names = [n for n in str(answer).rsplit("\t", 1)[-1].strip().split(";") if n]
        if self.namespace not in names:
            raise StorageMisconfigured(
                f"namespace {self.namespace!r} does not exist on the Aerospike cluster at {self._where} "
                f"(it has: {', '.join(names) or 'none'}); add it to the server configuration"
            )

    def _conn(self) -> Any:
        """The client; reconnects lazily should the client have dropped its cluster."""
        if self._closed:
            raise StorageUnavailable(f"the Aerospike store {self._where} is closed")
        client = self._client
        if client is not None and client.is_connected():
            return client
        with self._lock:
            if self._closed:
                raise StorageUnavailable(f"the Aerospike store {self._where} is closed")
            if self._client is None or not self._client.is_connected():
                old, self._client = self._client, None
                if old is not None:
                    _close_quietly(old)
                self._client = self._connect(
                    min(self.settings.connect_timeout_s, self.settings.timeout_ms / 1000)
                )
            return self._client

    # -- helpers -----------------------------------------------------------------------------

    def _set(self, set_name: str) -> str:
        full = self._sets.get(set_name)
        if full is None:
            if not isinstance(set_name, str):
                raise TypeError(f"set name must be a str, not {type(set_name).__name__}")
            full = self.settings.prefix + set_name
            if not full or len(full.encode()) > _MAX_SET_NAME or _SET_FORBIDDEN.search(full):
                raise StorageMisconfigured(
                    f"invalid Aerospike set name {full!r} (prefix {self.settings.prefix!r} + {set_name!r}): "
                    f"1-{_MAX_SET_NAME} bytes without ':' or ';'"
                )
            self._sets[set_name] = full
        return full

    def _key(self, set_full: str, key: str) -> tuple[str, str, str]:
        if not isinstance(key, str):
            raise TypeError(f"record keys are str, not {type(key).__name__}")
        return (self.namespace, set_full, key)

    def _what(self, verb: str, set_name: str, key: str | None = None) -> str:
        """``<verb> <aerospike set>[/<key>]`` for messages (the set name as the server knows it)."""
        return f"{verb} {self.settings.prefix}{set_name}" + (f"/{key}" if key is not None else "")

    def _record(self, raw: Any, set_name: str, key: str) -> Record:
        _, meta, bins = raw
        return Record(_bins_from_client(bins or {}, set_name, key), int(meta["gen"]))

    def _row_error(
        self, code: int, what: str, size: int | None = None, in_doubt: bool = False
    ) -> SegmentsError:
        return _error_for(code, what, self._where, in_doubt=in_doubt, size=size)

    # -- the Store protocol ------------------------------------------------------------------

    def get_many(self, set_name: str, keys: Sequence[str]) -> list[Record | None]:
        if not keys:
            return []
        full = self._set(set_name)
        client = self._conn()
        out: list[Record | None] = []
        for start in range(0, len(keys), READ_CHUNK):
            chunk = keys[start : start + READ_CHUNK]
            what = self._what(f"batch read of {len(chunk)} keys from", set_name)
            akeys = [self._key(full, k) for k in chunk]
            with _translated(what, self._where):
                result = client.batch_read(akeys, policy=self._batch_policy)
            if result.result not in (_OK, _BATCH_FAILED):
                raise self._row_error(result.result, what)
            for key, row in zip(chunk, result.batch_records, strict=True):
                if row.result == _OK and row.record is not None:
                    record = self._record(row.record, set_name, key)
                    out.append(None if TOMBSTONE_BIN in record.bins else record)
                elif row.result == _NOT_FOUND:
                    out.append(None)
                else:
                    raise self._row_error(row.result, self._what("read of", set_name, key))
        return out

    def put(self, set_name: str, key: str, bins: Bins, *, generation: int | None = None) -> int:
        akey = self._key(self._set(set_name), key)
        write_ops, size = _write_ops(bins, set_name, key)
        meta: dict[str, int] = {}
        if generation is None:
            policy = self._put_policies["any"]
        elif generation == 0:
            policy = self._put_policies["create"]
        else:
            if not isinstance(generation, int) or not 0 < generation <= 0xFFFF:
                raise StorageError(f"generation {generation!r} is not 0-65535")
            policy = self._put_policies["gen"]
            meta["gen"] = generation
        what = self._what("write of", set_name, key)
        client = self._conn()
        with _translated(what, self._where, size):
            try:
                _, record_meta, _ = client.operate(akey, write_ops, meta=meta or None, policy=policy)
            except aex.RecordExistsError as exc:
                tombstone = self._tombstone_generation(set_name, key)
                if tombstone is None:
                    raise Conflict(f"record {set_name}/{key} already exists (a create-only write)") from exc
                return self.put(set_name, key, bins, generation=tombstone)  # deleted: create over it
            except aex.RecordGenerationError as exc:
                raise Conflict(
                    f"record {set_name}/{key} is no longer at generation {generation}: "
                    "a concurrent writer changed it"
                ) from exc
            except aex.RecordNotFound as exc:
                raise Conflict(
                    f"record {set_name}/{key} does not exist (expected generation {generation})"
                ) from exc
        return int(record_meta["gen"])

    def put_many(self, set_name: str, items: Sequence[tuple[str, Bins]]) -> None:
        if not items:
            return
        full = self._set(set_name)
        rows: list[tuple[str, int, Any]] = []
        for key, bins in items:
            write_ops, size = _write_ops(bins, set_name, key)
            row = batch_records.Write(self._key(full, key), write_ops, policy=self._batch_row_write_policy)
            rows.append((key, size, row))
        client = self._conn()
        start = 0
        while start < len(rows):
            end, payload = start, 0
            while (
                end < len(rows)
                and end - start < WRITE_CHUNK_ROWS
                and (end == start or payload < WRITE_CHUNK_BYTES)
            ):
                payload += rows[end][1]
                end += 1
            chunk = rows[start:end]
            what = self._what(f"batch write of {len(chunk)} records to", set_name)
            with _translated(what, self._where):
                result = client.batch_write(
                    batch_records.BatchRecords([r for _, _, r in chunk]), self._batch_policy
                )
            if result.result not in (_OK, _BATCH_FAILED):
                raise self._row_error(result.result, what, in_doubt=True)
            for (key, size, _), row in zip(chunk, result.batch_records, strict=True):
                if row.result != _OK:
                    raise self._row_error(
                        row.result,
                        self._what("write of", set_name, key),
                        size,
                        bool(getattr(row, "in_doubt", False)),
                    )
            start = end

    def delete(self, set_name: str, key: str, *, generation: int | None = None) -> bool:
        """Delete durably: the record is replaced by a tombstone that reads as missing.

        Community Edition has no durable deletes: a removed record comes back
        when the node restarts from its device, so a deleted segment (or
        audience, or window config) would reappear. A tombstone is a normal
        write and stays; a create-only ``put`` replaces it. ``delete_many``
        removes for real, for garbage only (see there).
        """
        for _ in range(_TOMBSTONE_ATTEMPTS):
            live = self._live_generation(set_name, key)
            if generation == 0:  # "must not exist"
                if live is not None:
                    raise Conflict(f"record {set_name}/{key} exists (a delete that expected none)")
                return False
            if live is None:
                if generation is not None:
                    raise Conflict(f"record {set_name}/{key} does not exist (expected generation {generation})")
                return False
            if generation is not None and live != generation:
                raise Conflict(f"record {set_name}/{key} is not at generation {generation}")
            try:
                self.put(set_name, key, {TOMBSTONE_BIN: 1}, generation=live)
            except Conflict:
                if generation is not None:
                    raise
                continue  # changed between the read and the tombstone: read again
            return True
        raise Conflict(f"record {set_name}/{key} kept changing while being deleted")

    def _live_generation(self, set_name: str, key: str) -> int | None:
        """The generation of the record when it exists and is not a tombstone."""
        found = self.get_many(set_name, [key])[0]
        return None if found is None else found.generation

    def _tombstone_generation(self, set_name: str, key: str) -> int | None:
        """The generation of the record when it is a tombstone (``None``: live or missing)."""
        full = self._set(set_name)
        what = self._what("read of", set_name, key)
        with _translated(what, self._where):
            result = self._conn().batch_read([self._key(full, key)], policy=self._batch_policy)
        row = result.batch_records[0]
        if row.result != _OK or row.record is None:
            return None
        record = self._record(row.record, set_name, key)
        return record.generation if TOMBSTONE_BIN in record.bins else None

    def delete_many(self, set_name: str, keys: Sequence[str]) -> None:
        """Remove records for real. On Community Edition they may come back after a node restart,
        so this is only used for garbage no live record refers to (superseded shard and map
        records, collected staging parts), which garbage collection removes again."""
        if not keys:
            return
        full = self._set(set_name)
        client = self._conn()
        for start in range(0, len(keys), READ_CHUNK):
            chunk = keys[start : start + READ_CHUNK]
            what = self._what(f"batch delete of {len(chunk)} keys from", set_name)
            akeys = [self._key(full, k) for k in chunk]
            with _translated(what, self._where):
                result = client.batch_remove(akeys, self._batch_policy)
            if result.result not in (_OK, _BATCH_FAILED):
                raise self._row_error(result.result, what, in_doubt=True)
            for key, row in zip(chunk, result.batch_records, strict=True):
                if row.result not in (_OK, _NOT_FOUND):
                    raise self._row_error(row.result, self._what("delete of", set_name, key))

    def scan(self, set_name: str) -> Iterator[tuple[str, Record]]:
        full = self._set(set_name)
        client = self._conn()
        what = self._what("scan of", set_name)
        with _translated(what, self._where):
            query = client.query(self.namespace, full)
            query.max_records = SCAN_PAGE
            query.paginate()
        empty_pages = 0
        while True:
            with _translated(what, self._where):
                page = query.results(self._scan_policy)
                done = query.is_done()
            empty_pages = 0 if page else empty_pages + 1
            if empty_pages > 3 and not done:
                raise StorageUnavailable(f"Aerospike {what} at {self._where} stopped making progress")
            for raw in page:
                key = raw[0][2]
                if not isinstance(key, str):
                    LOG.warning(
                        "skipping a record of set %s in %s without a stored string key (%r)",
                        full,
                        self._where,
                        key,
                    )
                    continue
                record = self._record(raw, set_name, key)
                if TOMBSTONE_BIN not in record.bins:
                    yield key, record
            if done:
                return

    def ping(self) -> None:
        self._check_namespace(self._conn())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            _close_quietly(client)

    def __repr__(self) -> str:
        return f"AerospikeStore({self.settings.url()!r})"


_: type[Store] = AerospikeStore


def _close_quietly(client: Any) -> None:
    try:
        client.close()
    except aex.AerospikeError as exc:
        LOG.debug("closing the Aerospike client failed: %s", exc)


def _write_ops(bins: Bins, set_name: str, key: str) -> tuple[list[dict[str, Any]], int]:
    """Validated write operations for ``bins`` and the payload's approximate size in bytes."""
    if not bins:
        raise StorageError(f"record {set_name}/{key}: Aerospike cannot store a record without bins")
    out: list[dict[str, Any]] = []
    size = 0
    for name, value in bins.items():
        if not isinstance(name, str) or not name or len(name.encode()) > _MAX_BIN_NAME:
            raise StorageError(
                f"record {set_name}/{key}: bin name {name!r} must be 1-{_MAX_BIN_NAME} bytes for Aerospike"
            )
        if isinstance(value, bool):
            raise TypeError(f"bin {name!r}: unsupported value type bool")
        if isinstance(value, int):
            if not _INT64[0] <= value <= _INT64[1]:
                raise StorageError(
                    f"record {set_name}/{key}: bin {name!r} is outside the signed 64-bit range"
                )
            size += 8
        elif isinstance(value, str):
            size += len(value.encode())
        elif isinstance(value, (bytes, bytearray, memoryview)):
            value = bytes(value)
            size += len(value)
        else:
            raise TypeError(f"bin {name!r}: unsupported value type {type(value).__name__}")
        size += len(name) + 8
        out.append(ops.write(name, value))
    return out, size


def _bins_from_client(bins: Mapping[str, Any], set_name: str, key: str) -> dict[str, BinValue]:
    out: dict[str, BinValue] = {}
    for name, value in bins.items():
        if isinstance(value, (bytes, str)) or (isinstance(value, int) and not isinstance(value, bool)):
            out[name] = value
        elif isinstance(value, bytearray):
            out[name] = bytes(value)
        else:
            raise CorruptSegment(
                f"record {set_name}/{key}: bin {name!r} holds a {type(value).__name__}, "
                "which this store never writes (bytes, int or str expected)"
            )
    return out


__all__ = ["TOMBSTONE_BIN", "AerospikeSettings", "AerospikeStore", "parse_url"]
