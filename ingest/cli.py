"""``segments ingest`` (the Kafka consumer) and ``segments push`` (publish one file of IDs or user keys).

Flags override ``SEGMENTS_*`` environment variables, which override the defaults.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any, NoReturn

from pydantic import ValidationError
from pyroaring import BitMap

from segments import bitmap as bm
from segments.cli import add_store_option
from segments.errors import InvalidBitmap, InvalidUserId, InvalidUserKey, SegmentsError
from segments.keys import check_user_key

from .settings import IngestSettings, KafkaSettings, PushSettings

_CHUNK = 1 << 22


def _kafka_options(values: list[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"-X expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value
    return out


def _add_kafka_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap-servers", metavar="HOST:PORT[,...]",
                        help="Kafka brokers (env SEGMENTS_BOOTSTRAP_SERVERS; default localhost:9092)")
    parser.add_argument("--topic", help="topic of segment updates (env SEGMENTS_TOPIC; default segment-updates)")
    parser.add_argument("-X", "--kafka-option", action="append", metavar="KEY=VALUE", dest="kafka_option",
                        help="extra librdkafka setting, repeatable; adds to SEGMENTS_KAFKA_OPTIONS (a JSON object)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                        help="log level (env SEGMENTS_LOG_LEVEL; default info)")
    parser.add_argument("--log-format", choices=["json", "text"],
                        help="log lines as JSON objects or text (env SEGMENTS_LOG_FORMAT; default json)")


def _settings(cls: type[KafkaSettings], args: argparse.Namespace, fields: dict[str, Any]) -> Any:
    given = {k: v for k, v in fields.items() if v is not None}
    options = _kafka_options(getattr(args, "kafka_option", None))
    if options is not None:
        given["kafka_options"] = options
    try:
        return cls(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise SystemExit(f"segments: invalid settings: {problems}") from None


# --------------------------------------------------------------------------- ingest


def ingest_settings(args: argparse.Namespace) -> IngestSettings:
    """Settings of ``segments ingest``: the flags given, then ``SEGMENTS_*`` variables, then defaults."""
    settings: IngestSettings = _settings(IngestSettings, args, {
        "bootstrap_servers": args.bootstrap_servers,
        "topic": args.topic,
        "group": args.group,
        "dlq_topic": args.dlq_topic,
        "store": args.store,
        "metrics_port": args.metrics_port,
        "metrics_host": args.metrics_host,
        "batch_max_messages": args.batch_max_messages,
        "batch_max_wait": args.batch_max_wait,
        "write_threads": args.write_threads,
        "log_level": args.log_level,
        "log_format": args.log_format,
    })
    return settings


def _cmd_ingest(args: argparse.Namespace) -> int:
    from .__main__ import run

    return run(ingest_settings(args))


# --------------------------------------------------------------------------- push


class InputError(Exception):
    """The input file cannot be read as IDs (message names the line)."""


def _detect_format(path: str, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    lower = path.lower()
    if lower.endswith(".roaring") or lower.endswith(".bitmap"):
        return "roaring"
    if lower.endswith(".csv"):
        return "csv"
    return "lines"


def _open(path: str) -> tuple[IO[bytes], int | None]:
    if path == "-":
        return sys.stdin.buffer, None
    try:
        return open(path, "rb"), os.path.getsize(path)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc


def read_ids(path: str, fmt: str = "auto", column: str = "0", progress: Callable[[int], None] | None = None) -> BitMap:
    """Read a file of user IDs: ``lines`` (one per line), ``csv`` (one column) or ``roaring``.

    Raises ``InputError`` naming the first bad line.
    """
    kind = _detect_format(path, fmt)
    stream, _ = _open(path)
    try:
        if kind == "roaring":
            data = stream.read()
            if progress:
                progress(len(data))
            try:
                return bm.deserialize(data)
            except InvalidBitmap as exc:
                raise InputError(f"{path}: {exc}") from exc
        if kind == "csv":
            return _read_csv(stream, path, column, progress)
        if kind == "lines":
            return _read_lines(stream, path, progress)
        raise InputError(f"unknown format {fmt!r}")
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def _blocks(stream: IO[bytes], progress: Callable[[int], None] | None) -> Iterator[bytes]:
    rest = b""
    while True:
        chunk = stream.read(_CHUNK)
        if progress and chunk:
            progress(len(chunk))
        if not chunk:
            if rest:
                yield rest
            return
        data = rest + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            rest = data
            continue
        yield data[: cut + 1]
        rest = data[cut + 1 :]


def _read_lines(stream: IO[bytes], path: str, progress: Callable[[int], None] | None) -> BitMap:
    out = BitMap()
    line_no = 0
    for block in _blocks(stream, progress):
        try:
            values = [int(token) for token in block.split()]
            out |= bm.from_ids(values)
        except (ValueError, InvalidUserId):
            _raise_bad_line(block, path, line_no)
        line_no += block.count(b"\n")
    return out


def _raise_bad_line(block: bytes, path: str, first_line: int) -> NoReturn:
    for number, line in enumerate(block.split(b"\n"), first_line + 1):
        for token in line.split():
            text = token.decode("utf-8", "replace")
            try:
                bm.check_user_id(int(token))
            except ValueError:
                raise InputError(f"{path}, line {number}: {text[:60]!r} is not an integer user ID") from None
            except InvalidUserId as exc:
                raise InputError(f"{path}, line {number}: {exc}") from None
    raise InputError(f"{path}: unreadable IDs after line {first_line}")


def _read_csv(stream: IO[bytes], path: str, column: str, progress: Callable[[int], None] | None) -> BitMap:
    text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
    reader = csv.reader(text)
    out = BitMap()
    pending: list[int] = []
    index: int | None = int(column) if column.isdigit() else None
    seen = 0
    try:
        for row_no, row in enumerate(reader, 1):
            if progress:
                size = sum(len(c) for c in row) + len(row)
                progress(size)
                seen += size
            if not row:
                continue
            if index is None:
                if column not in row:
                    raise InputError(f"{path}, line {row_no}: no column named {column!r} in header {row[:10]!r}")
                index = row.index(column)
                continue
            if index >= len(row):
                raise InputError(f"{path}, line {row_no}: row has {len(row)} columns, column {index} is missing")
            cell = row[index].strip()
            try:
                pending.append(bm.check_user_id(int(cell)))
            except ValueError:
                if row_no == 1:
                    continue  # a header line
                raise InputError(f"{path}, line {row_no}: {cell[:60]!r} is not an integer user ID") from None
            except InvalidUserId as exc:
                raise InputError(f"{path}, line {row_no}: {exc}") from None
            if len(pending) >= 1_000_000:
                out |= BitMap(pending)
                pending = []
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text: {exc}") from None
    except csv.Error as exc:
        raise InputError(f"{path}: bad CSV: {exc}") from None
    finally:
        text.detach()
    out |= BitMap(pending)
    return out


def read_keys(path: str, fmt: str = "auto", column: str = "0", progress: Callable[[int], None] | None = None) -> list[str]:
    """Read a file of string user keys: ``lines`` (one per line) or ``csv`` (one column).

    Keys are taken exactly as written (only the line ending is dropped; no
    trimming), and empty lines are skipped. A CSV column given by name is
    found in the first row (the header); by index, every row is a key.
    Duplicates are kept once, in first-seen order. Raises ``InputError``
    naming the line of the first key that is not valid.
    """
    kind = _detect_format(path, fmt)
    if kind not in ("lines", "csv"):
        raise InputError(f"user keys are read from lines or a CSV column, not from a {kind} file")
    stream, _ = _open(path)
    try:
        keys = _read_csv_keys(stream, path, column, progress) if kind == "csv" else _read_line_keys(stream, path, progress)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    return list(keys)


def _checked_key(text: str, path: str, line: int) -> str:
    try:
        return check_user_key(text)
    except InvalidUserKey as exc:
        raise InputError(f"{path}, line {line}: {exc}") from None


def _read_line_keys(stream: IO[bytes], path: str, progress: Callable[[int], None] | None) -> dict[str, None]:
    keys: dict[str, None] = {}
    for number, raw in enumerate(stream, 1):
        if progress:
            progress(len(raw))
        line = raw.removesuffix(b"\n").removesuffix(b"\r")
        if not line:
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}, line {number}: not UTF-8 (byte {exc.start + 1} of the line)") from None
        keys[_checked_key(text, path, number)] = None
    return keys


def _read_csv_keys(
    stream: IO[bytes], path: str, column: str, progress: Callable[[int], None] | None
) -> dict[str, None]:
    text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
    keys: dict[str, None] = {}
    index: int | None = int(column) if column.isdigit() else None
    try:
        for row_no, row in enumerate(csv.reader(text), 1):
            if progress:
                progress(sum(len(c) for c in row) + len(row))
            if not row:
                continue
            if index is None:
                if column not in row:
                    raise InputError(f"{path}, line {row_no}: no column named {column!r} in header {row[:10]!r}")
                index = row.index(column)
                continue
            if index >= len(row):
                raise InputError(f"{path}, line {row_no}: row has {len(row)} columns, column {index} is missing")
            if row[index]:
                keys[_checked_key(row[index], path, row_no)] = None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text: {exc}") from None
    except csv.Error as exc:
        raise InputError(f"{path}: bad CSV: {exc}") from None
    finally:
        text.detach()
    return keys


def _cmd_push(args: argparse.Namespace) -> int:
    import logging

    from tqdm import tqdm  # type: ignore[import-untyped]

    from .codec import at_text
    from .producer import DeliveryError, SegmentProducer, new_batch_id

    settings: PushSettings = _settings(PushSettings, args, {
        "bootstrap_servers": args.bootstrap_servers,
        "topic": args.topic,
        "max_message_bytes": args.max_message_bytes,
        "log_level": args.log_level,
    })
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    quiet = bool(args.quiet)
    try:
        size = None if args.file == "-" else os.path.getsize(args.file)
    except OSError as exc:
        print(f"segments: error: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if args.keys and args.encoding != "auto":
        print("segments: error: user keys are always sent as JSON messages: drop --encoding", file=sys.stderr)
        return 2
    if args.at is not None:
        try:
            at_text(args.at)
        except SegmentsError as exc:
            print(f"segments: error: --at: {exc}", file=sys.stderr)
            return 2
    reading = tqdm(total=size, unit="B", unit_scale=True, desc="read", disable=quiet or None, file=sys.stderr)
    try:
        members: BitMap | list[str] = (
            read_keys(args.file, args.format, args.column, reading.update) if args.keys
            else read_ids(args.file, args.format, args.column, reading.update)
        )
    except InputError as exc:
        reading.close()
        print(f"segments: error: {exc}", file=sys.stderr)
        return 2
    reading.close()
    batch = args.batch if args.op == "replace" else None
    if args.op == "replace" and batch is None:
        batch = new_batch_id()
    elif args.batch is not None and args.op != "replace":
        print("segments: error: --batch only applies to --op replace", file=sys.stderr)
        return 2
    unit = "key" if args.keys else "id"
    sending = tqdm(total=len(members), unit=unit, unit_scale=True, desc="sent", disable=quiet or None,
                   file=sys.stderr)
    try:
        producer = SegmentProducer(
            settings.bootstrap_servers,
            topic=settings.topic,
            max_message_bytes=settings.max_message_bytes,
            encoding=args.encoding,
            config=settings.kafka_options,
            delivery_timeout=settings.delivery_timeout,
        )
        if isinstance(members, list):
            sent = producer.send_keys(args.op, args.segment, members, batch=batch, at=args.at, wait=True,
                                      progress=sending.update)
        else:
            sent = producer.send(args.op, args.segment, members, batch=batch, at=args.at, wait=True,
                                 progress=sending.update)
    except DeliveryError as exc:
        sending.close()
        print(f"segments: error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, SegmentsError) as exc:
        sending.close()
        print(f"segments: error: {exc}", file=sys.stderr)
        return 2
    sending.close()
    summary = f"{sent.op} {sent.segment}: {sent.ids} {'keys' if args.keys else 'IDs'} in {sent.messages} messages " \
        f"to {settings.topic}"
    if sent.batch:
        summary += f" (batch {sent.batch})"
    print(summary)
    return 0


# --------------------------------------------------------------------------- registration


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``ingest`` and ``push`` to the ``segments`` command line."""
    ingest = sub.add_parser(
        "ingest",
        help="consume segment updates from Kafka into the store",
        description="Consume segment updates from Kafka into the store (at-least-once delivery, "
        "exactly-once effect). Stops cleanly on SIGTERM/SIGINT.",
    )
    _add_kafka_options(ingest)
    ingest.add_argument("--group", help="consumer group (env SEGMENTS_GROUP; default segments-ingest)")
    ingest.add_argument("--dlq-topic", help="dead-letter topic (env SEGMENTS_DLQ_TOPIC; default segment-updates.dlq)")
    add_store_option(ingest)
    ingest.add_argument("--metrics-port", type=int,
                        help="serve Prometheus metrics on this port (env SEGMENTS_METRICS_PORT; default 0: off)")
    ingest.add_argument("--metrics-host", metavar="ADDRESS",
                        help="address the metrics listen on (env SEGMENTS_METRICS_HOST; default 127.0.0.1, "
                        "loopback only; 0.0.0.0 for every interface)")
    ingest.add_argument("--batch-max-messages", type=int,
                        help="messages per batch at most (env SEGMENTS_BATCH_MAX_MESSAGES; default 50000)")
    ingest.add_argument("--batch-max-wait", type=float,
                        help="seconds a batch waits to fill up (env SEGMENTS_BATCH_MAX_WAIT; default 0.5)")
    ingest.add_argument("--write-threads", type=int,
                        help="segments written at once (env SEGMENTS_WRITE_THREADS; default 0: 8 on Aerospike, "
                        "else 1)")
    ingest.set_defaults(func=_cmd_ingest)

    push = sub.add_parser(
        "push",
        help="publish a file of user IDs or keys as an update of one segment",
        description="Publish add/remove/replace of one segment to Kafka from a file of IDs "
        "(one per line, a CSV column, or a .roaring bitmap), or with --keys of string user keys "
        "(one per line or a CSV column), and wait for delivery.",
    )
    _add_kafka_options(push)
    push.add_argument("--segment", required=True, help="segment name")
    push.add_argument("--op", required=True, choices=["add", "remove", "replace"])
    push.add_argument("--file", required=True, help="input file ('-' for stdin)")
    push.add_argument("--format", default="auto", choices=["auto", "lines", "csv", "roaring"],
                      help="input format (default: by extension: .roaring, .csv, else lines)")
    push.add_argument("--column", default="0", help="CSV column: index or header name (default 0)")
    push.add_argument("--keys", action="store_true",
                      help="the file holds string user keys (exactly as written, one per line or in the CSV column; "
                      "a column by index means no header line); the consumer translates them to IDs")
    push.add_argument("--at", metavar="TIME",
                      help="windowed segments: the moment whose bucket the update goes to (ISO date or timestamp, "
                      "e.g. 2026-11-30 or 2026-11-30T14:05:00Z; default: when the consumer applies it)")
    push.add_argument("--batch", help="replace batch id (default: a new unique one)")
    push.add_argument("--encoding", default="auto", choices=["auto", "json", "roaring"],
                      help="message encoding (default auto: JSON up to 64 IDs, else roaring)")
    push.add_argument("--max-message-bytes", type=int,
                      help="largest message value (env SEGMENTS_MAX_MESSAGE_BYTES; default 900000)")
    push.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    push.set_defaults(func=_cmd_push)


__all__ = ["InputError", "ingest_settings", "read_ids", "read_keys", "register"]
