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


if __name__ == "__main__":
    sys.exit(main())
