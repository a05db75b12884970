"""``python -m bench.patched_serve <segments serve options>``: the HTTP API with the proposed engine.

Applies ``bench/patches`` (see ``proposals.py``) and makes every ``Segments``
of this process use the last patched ``Engine``, then runs the real
``segments serve`` command in this process (one uvicorn worker). Used to
measure what the engine proposals change end to end over HTTP.
"""

from __future__ import annotations

import sys

import segments.client
from segments import cli

from .proposals import variants


def main(argv: list[str]) -> int:
    usable = [v.module for v in variants() if v.module is not None]
    if usable:
        setattr(segments.client, "Engine", usable[-1].Engine)  # noqa: B010 - replace the class Segments uses
    return cli.main(["serve", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
