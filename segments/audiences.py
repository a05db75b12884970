"""Audiences: live named expressions, always evaluated from the current segments.

An audience is an expression stored under a name; wherever a segment name is
accepted (reach, evaluate, overlap, export, other audiences) an audience name
is too, and it is expanded into its definition before planning, so every
answer is computed from the segments as they are now. A *materialized*
snapshot (``Segments.replace(name, segs.evaluate(expr))``) is the opposite: a
frozen copy.

Record: set ``audience`` (with the deployment's prefix), key = the name, bins
``expr`` (canonical text), ``desc``, ``ver`` (definition version, from 1),
``created``/``updated`` (ms) and ``hist`` (JSON list of the last
:data:`HISTORY_KEPT` definitions, ``[version, ms, expr, description]``).
Writes are generation-checked, so two definers never lose each other's
change silently.

Segments and audiences share one namespace: a name is a segment or an
audience, never both (``NameTaken``). An audience may use other audiences;
a definition that would make one use itself is refused (``AudienceCycle``),
and so is deleting what an audience uses (``InUse``) unless asked to cascade.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .catalog import Sets, check_free, now_ms
from .errors import (
    AudienceCycle,
    Conflict,
    CorruptSegment,
    ExpressionTooComplex,
    InUse,
    InvalidInput,
    NameTaken,
    SegmentNotFound,
)
from .expressions import And, Diff, Expr, Not, Or, Ref, Xor, refs, to_expr
from .names import check_name
from .records import RecordReader
from .storage.base import Record, Store

#: definitions remembered per audience
HISTORY_KEPT = 100
#: references an expanded expression may hold (audiences of audiences can multiply them)
MAX_EXPANDED_REFS = 4096
MAX_DESCRIPTION = 1000
_ATTEMPTS = 16


@dataclass(frozen=True)
class Definition:
    version: int
    at_ms: int
    expr: str
    description: str


@dataclass(frozen=True)
class Audience:
    name: str
    expr: Expr
    description: str
    version: int
    created_ms: int
    updated_ms: int
    history: list[Definition] = field(default_factory=list)
    generation: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "expr": str(self.expr),
            "description": self.description,
            "version": self.version,
            "created_ms": self.created_ms,
            "updated_ms": self.updated_ms,
        }


def _decode(name: str, record: Record) -> Audience:
    bins = record.bins
    try:
        history = [Definition(int(v), int(t), str(e), str(d)) for v, t, e, d in json.loads(str(bins["hist"]))]
        return Audience(
            name=name,
            expr=to_expr(str(bins["expr"])),
            description=str(bins.get("desc") or ""),
            version=int(bins["ver"]),
            created_ms=int(bins["created"]),
            updated_ms=int(bins["updated"]),
            history=history,
            generation=record.generation,
        )
    except (KeyError, TypeError, ValueError, InvalidInput) as exc:
        raise CorruptSegment(f"the definition of audience {name!r} is damaged: {exc}", segment=name) from exc


class Audiences:
    """The audience definitions of one deployment."""

    def __init__(self, store: Store, sets: Sets, reader: RecordReader, universe: str) -> None:
        self.store = store
        self.set = sets.audience
        self.sets = sets
        self.reader = reader
        self.universe = universe

    # -- reading ------------------------------------------------------------

    def get_many(self, names: Sequence[str]) -> dict[str, Audience | None]:
        records = self.store.get_many(self.set, list(names))
        return {n: (None if r is None else _decode(n, r)) for n, r in zip(names, records)}

    def get(self, name: str) -> Audience:
        found = self.get_many([check_name(name)])[name]
        if found is None:
            raise SegmentNotFound([name], f"unknown audience: {name!r}")
        return found

    def all(self) -> list[Audience]:
        return sorted((_decode(k, r) for k, r in self.store.scan(self.set)), key=lambda a: a.name)

    # -- expansion ----------------------------------------------------------

    def expand(self, expr: Expr, known: dict[str, Audience] | None = None) -> tuple[Expr, dict[str, int]]:
        """``expr`` with every audience replaced by its definition (recursively).

        Returns the expression over segments only and the version of every
        audience it used. Names that are neither are left for the segment
        read to report. ``known`` overrides stored definitions (a definition
        being checked before it is stored).
        """
        known = dict(known or {})
        used: dict[str, int] = {}
        budget = [MAX_EXPANDED_REFS]

        def fetch(names: Iterable[str]) -> None:
            todo = [n for n in dict.fromkeys(names) if n not in known]
            if todo:
                for name, found in self.get_many(todo).items():
                    if found is not None:
                        known[name] = found

        def walk(node: Expr, path: tuple[str, ...]) -> Expr:
            if isinstance(node, Ref):
                audience = known.get(node.name)
                if audience is None:
                    budget[0] -= 1
                    if budget[0] < 0:
                        raise ExpressionTooComplex(
                            f"the expression names more than {MAX_EXPANDED_REFS} segments once its "
                            "audiences are expanded", 0,
                        )
                    return node
                if node.name in path:
                    cycle = [*path[path.index(node.name):], node.name]
                    raise AudienceCycle(cycle)
                used[node.name] = audience.version
                fetch(refs(audience.expr))
                return walk(audience.expr, (*path, node.name))
            if isinstance(node, Not):
                return Not(walk(node.operand, path))
            cls: type[And] | type[Or] | type[Diff] | type[Xor] = type(node)
            return cls(tuple(walk(op, path) for op in node.operands))

        fetch(refs(expr))
        expanded = walk(expr, ())
        return (expanded, used) if used else (expr, {})

    # -- writing ------------------------------------------------------------

    def define(self, name: str, expr: object, description: str = "") -> Audience:
        """Store (or redefine) an audience. Checks names, cycles and that every name it uses exists."""
        check_name(name)
        if name == self.universe:
            raise NameTaken(f"{name!r} is the universe segment; an audience cannot take its name")
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
            raise InvalidInput(f"an audience description is text of at most {MAX_DESCRIPTION} characters")
        tree = to_expr(expr)
        check_free(self.store, self.sets, name, kind="audience")
        for _ in range(_ATTEMPTS):
            current = self.get_many([name])[name]
            now = now_ms()
            candidate = Audience(
                name, tree, description,
                version=(current.version + 1) if current else 1,
                created_ms=current.created_ms if current else now,
                updated_ms=now,
                history=[*(current.history if current else []),
                         Definition((current.version + 1) if current else 1, now, str(tree), description)],
            )
            expanded, _ = self.expand(Ref(name), {name: candidate})
            missing = [n for n, m in self.reader.metas(sorted(set(refs(expanded)))).items() if m is None]
            if missing:  # windowed segments have a config record, not a meta record
                windowed = self.store.get_many(self.sets.window, missing)
                missing = [n for n, config in zip(missing, windowed) if config is None]
            if missing:
                raise SegmentNotFound(missing, "the audience uses unknown segments or audiences: "
                                      + ", ".join(map(repr, sorted(missing))))
            history = candidate.history[-HISTORY_KEPT:]
            bins: dict[str, str | int] = {
                "expr": str(tree),
                "desc": description,
                "ver": candidate.version,
                "created": candidate.created_ms,
                "updated": now,
                "hist": json.dumps([[d.version, d.at_ms, d.expr, d.description] for d in history]),
            }
            try:
                gen = self.store.put(self.set, name, bins, generation=current.generation if current else 0)
            except Conflict:
                continue
            return Audience(name, tree, description, candidate.version, candidate.created_ms, now, history, gen)
        raise Conflict(f"audience {name!r} is being redefined too often; try again")

    def dependents(self, name: str) -> list[str]:
        """Every audience that uses ``name``, directly or through other audiences."""
        users: dict[str, set[str]] = {}
        for audience in self.all():
            for ref in set(refs(audience.expr)):
                users.setdefault(ref, set()).add(audience.name)
        found: set[str] = set()
        todo = [name]
        while todo:
            for user in users.get(todo.pop(), ()):
                if user not in found:
                    found.add(user)
                    todo.append(user)
        return sorted(found)

    def check_deletable(self, name: str, cascade: bool) -> list[str]:
        """The audiences to delete along with ``name``; ``InUse`` if there are some and no cascade."""
        dependents = self.dependents(name)
        if dependents and not cascade:
            raise InUse(name, dependents)
        return dependents

    def delete(self, name: str, *, cascade: bool = False) -> list[str]:
        """Delete an audience (and, with ``cascade``, the audiences using it); returns what was deleted."""
        self.get(name)
        doomed = self.check_deletable(name, cascade)
        for victim in [*doomed, name]:
            self.store.delete(self.set, victim)
        return [name, *doomed]


__all__ = ["HISTORY_KEPT", "Audience", "Audiences", "Definition"]
