"""The ``segments`` command line.

The core registers the commands that need nothing but the library; the
``api`` and ``ingest`` packages add theirs (``serve``, ``ingest``, ``push``)
through the ``segments.commands`` entry-point group, so this module never
imports them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from .admin import GC_GRACE_MS
from .client import connect
from .errors import SegmentsError

DEFAULT_STORE = "sqlite:///./data/segments.db"


def add_store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        default=os.environ.get("SEGMENTS_STORE", DEFAULT_STORE),
        help="store URL: memory://, sqlite:///path or aerospike://host:port/namespace "
        "(env SEGMENTS_STORE; default %(default)s)",
    )


def _cmd_info(args: argparse.Namespace) -> int:
    with connect(args.store) as segs:
        infos = [segs.info(args.name)] if args.name else segs.infos()
        for info in infos:
            print(json.dumps(info.as_dict()))
    return 0


def _cmd_reach(args: argparse.Namespace) -> int:
    with connect(args.store) as segs:
        result = segs.reach_detailed(args.expr)
        print(json.dumps({"reach": result.reach, "segments": result.versions}))
    return 0


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cmd_verify(args: argparse.Namespace) -> int:
    from . import admin

    with connect(args.store) as segs:
        reports = admin.verify(segs, fix=args.fix, progress=None if args.quiet else _progress)
        bad = [r for r in reports if not r.ok]
        for report in reports:
            print(json.dumps({"segment": report.name, "ok": report.ok, "problems": report.problems,
                              "fixed": report.fixed, "note": report.note}))
        if args.gc:
            collected = admin.collect_garbage(segs, grace_ms=int(args.gc_grace * 1000))
            print(json.dumps({"garbage_collected": collected}))
    print(f"{len(reports)} segments checked, {len(bad)} with problems"
          + (f", {sum(r.fixed for r in bad)} fixed" if args.fix else ""), file=sys.stderr)
    return 1 if bad and not args.fix else 0


def _cmd_snapshot(args: argparse.Namespace) -> int:
    from . import admin

    with connect(args.store) as segs, open(args.file, "w", encoding="utf-8") as out:
        count = admin.write_snapshot(segs, out, progress=_progress)
    print(f"wrote {count} segments to {args.file}", file=sys.stderr)
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    from . import admin

    with connect(args.store) as segs, open(args.file, encoding="utf-8") as source:
        count = admin.restore_snapshot(segs, source, progress=_progress)
    print(f"restored {count} segments from {args.file}", file=sys.stderr)
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from . import admin

    with connect(args.store) as segs:
        print(json.dumps(admin.stats(segs), indent=2))
    return 0


def _cmd_expire(args: argparse.Namespace) -> int:
    with connect(args.store) as segs:
        expired = segs.expire()
    print(json.dumps({"expired": {name: sorted(buckets) for name, buckets in expired.items()}}, sort_keys=True))
    return 0


def _add_admin(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    admin = sub.add_parser("admin", help="operator tools: verify, snapshot, restore, stats, expire")
    cmds = admin.add_subparsers(dest="admin_command", metavar="ADMIN_COMMAND", required=True)
    verify = cmds.add_parser("verify", help="recompute cardinalities from shards; report or fix drift")
    add_store_option(verify)
    verify.add_argument("--fix", action="store_true", help="rewrite segments whose metadata drifted")
    verify.add_argument("--gc", action="store_true", help="also delete records no segment reaches")
    verify.add_argument(
        "--gc-grace", type=float, default=GC_GRACE_MS / 1000, metavar="SECONDS",
        help="only collect records older than this, so writes in flight are never touched (default: %(default)g)",
    )
    verify.add_argument("--quiet", action="store_true", help="no progress on stderr")
    verify.set_defaults(func=_cmd_verify)
    snap = cmds.add_parser("snapshot", help="write every segment to a portable file")
    add_store_option(snap)
    snap.add_argument("file", help="output path (JSON lines, Roaring portable bitmaps in base64)")
    snap.set_defaults(func=_cmd_snapshot)
    restore = cmds.add_parser("restore", help="replace segments from a snapshot file")
    add_store_option(restore)
    restore.add_argument("file", help="a file written by 'segments admin snapshot'")
    restore.set_defaults(func=_cmd_restore)
    stats = cmds.add_parser("stats", help="counts for capacity planning")
    add_store_option(stats)
    stats.set_defaults(func=_cmd_stats)
    expire = cmds.add_parser(
        "expire",
        help="delete the time buckets of windowed segments past their retention (idempotent, safe on a "
        "live store); prints {\"expired\": {segment: [buckets]}}",
    )
    add_store_option(expire)
    expire.set_defaults(func=_cmd_expire)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segments",
        description="Real-time audience segmentation over roaring bitmaps.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="show one segment's info, or every segment's")
    add_store_option(info)
    info.add_argument("name", nargs="?", help="segment name (default: all segments)")
    info.set_defaults(func=_cmd_info)
    reach = sub.add_parser("reach", help="print the reach of an expression")
    add_store_option(reach)
    reach.add_argument("expr", help="expression, e.g. '(premium | gold) & active_30d - churned'")
    reach.set_defaults(func=_cmd_reach)
    _add_admin(sub)
    for ep in sorted(entry_points(group="segments.commands"), key=lambda e: e.name):
        try:
            register: Callable[[argparse._SubParsersAction], None] = ep.load()  # type: ignore[type-arg]
        except ImportError as exc:  # a broken plugin must not take the whole CLI down
            print(f"segments: command {ep.name!r} unavailable: {exc}", file=sys.stderr)
            continue
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except SegmentsError as exc:
        print(f"segments: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"segments: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
