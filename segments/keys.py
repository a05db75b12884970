"""String user keys: an exact translation table between keys and dense 32-bit user IDs.

Roaring bitmaps need dense unsigned 32-bit integers; deployments key their users by strings
(customer numbers, UUIDs, hashed emails). Hashing is not exact, so the table gives every key
exactly one ID, for ever, allocated densely from a counter in the store. It is written and read
through the :class:`~segments.storage.Store` protocol only, so it works on every backend.

A key is 1-256 bytes of UTF-8 without control characters (Unicode category Cc). Keys are
compared exactly as given: case-sensitive, no Unicode normalisation (``"é"`` as one code point
and as ``e`` + combining accent are two keys).

Records (set names carry the deployment's set prefix):

=========== ======================= ========= ==========================================================
set         key                     mutable   bins
=========== ======================= ========= ==========================================================
``keyid``   the user key itself     no        ``id``: the key's ID. Created with a create-only write
                                              (``put(..., generation=0)``): the commit point.
``keypage`` ``<id // 256>``         owner     ``keys``: the 256 keys claimed for IDs ``256p .. 256p+255``
                                              joined by ``"\\n"`` (``""`` for an unclaimed ID; a key
                                              holds no control character, so no key contains the
                                              separator); ``ok``: 32 bytes, bit ``i`` set once the
                                              claim of ID ``256p+i`` is known to be committed
``keyalloc`` ``next``               CAS       ``next``: the first ID not yet reserved by any process
=========== ======================= ========= ==========================================================

The largest record is a full page of 256-byte keys: about 66 KB, far below Aerospike's 1 MiB
limit whatever the keys; a ``keyid`` record is the key plus one integer.

Allocation. A process reserves IDs in blocks by a generation-checked update of ``keyalloc/next``
(256 IDs at first, doubling up to 4,096, or as many as a batch needs, always whole pages), so
allocation costs one round trip per block, not per key. A reserved block, and so each of its
pages, belongs to the one process that reserved it: only that process ever writes those pages,
each write conditional on the generation it last wrote (the first one create-only), so a late
duplicate of an older write cannot overwrite a newer one, and a page another process wrote is
reported as damage instead of overwritten. (The counter's check is on its generation, which wraps
at 65,535: two processes could share a block only if 65,535 other reservations, at least 16 million
IDs, happened between one process's read of the counter and its write.)

Creating a key, in this order:

1. **claim**: write the key into its ID's page (``keypage``) and wait for the store to accept it;
2. **commit**: create ``keyid/<key>`` with a create-only write. Exactly one writer can succeed,
   so a key never gets two IDs. The loser of a race reads the winner's ID; its own ID becomes a
   gap (and its claim is cleared with the page's next write);
3. **confirm**: mark the claim committed in the page's ``ok`` bits, in the page's next write
   (the next batch that claims in it, the batch that fills it, or ``close``).

Why this order: an ID is handed out only after step 2, and by then its claim is in the store,
so every ID in a bitmap has its key in its page. A reverse lookup trusts confirmed claims and
checks an unconfirmed one against ``keyid`` (does the key map back to this ID?), so a claim left
by a crash between 1 and 2, or by a lost race, reads as "no key" (a gap), never as a second key
of an ID. The opposite order would leave, after a crash between the two writes, an ID that is in
use but has no key to report. A crash or a store error anywhere leaves gaps, never two keys on
one ID, and never two IDs for one key.

Gaps. IDs are dense except for: the unused rest of each process's last block (``close`` hands
back its unused whole pages when no other process has reserved since, leaving fewer than 256),
one ID per race lost to another process, and the IDs of a batch that failed or crashed before
its keys were committed. So gaps are at most ``processes x 4,096`` plus lost races and failed
batches; :meth:`KeyTable.check` counts them, and ``KeyTable.stats`` says which process made them.

Forgetting a key does not exist: a key's record is never deleted or changed, so an ID is never
reused and a stored bitmap can never come to mean another user. (Erasing keys would need an
operator-run compaction that rewrites every segment; it is not implemented.)

The translation cache (:class:`KeyCache`) keeps the recently used key/ID pairs (an approximate
least-recently-used order), bounded by bytes (a quarter of the segment cache budget by default),
and what it holds is charged to that budget (:meth:`~segments.cache.SegmentCache.charge`), so
``cache_bytes`` bounds both. Only committed pairs are cached (they never change); unknown keys are
not, since another process may create them at any moment.
"""

from __future__ import annotations

import logging
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import cast

from .bitmap import MAX_USER_ID, check_user_id
from .cache import SegmentCache
from .catalog import Sets
from .errors import (
    Conflict,
    CorruptSegment,
    InvalidUserId,
    InvalidUserKey,
    SegmentsError,
    StorageFull,
    StorageUnavailable,
)
from .storage.base import Record, Store

log = logging.getLogger("segments.keys")

#: Longest key, in bytes of UTF-8.
MAX_KEY_BYTES = 256
#: IDs per ``keypage`` record.
PAGE_BITS = 8
PAGE_SIZE = 1 << PAGE_BITS
#: Block sizes a process reserves: the first, doubling up to the largest.
FIRST_BLOCK = PAGE_SIZE
MAX_BLOCK = 4096
#: IDs that exist: ``0 .. 2**32 - 1``.
ID_SPACE = MAX_USER_ID + 1

_SEPARATOR = "\n"  # a control character: never part of a key
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # exactly Unicode category Cc
_COUNTER = "next"
_RESERVE_ATTEMPTS = 64
#: what one cached pair costs beyond its key's ``sys.getsizeof``: its slots in two dicts and the
#: int, about 120 bytes measured with tracemalloc on CPython 3.11, plus room for the dicts' growth
PAIR_OVERHEAD = 190
#: the share of the segment cache budget the translation cache may use by default
DEFAULT_CACHE_SHARE = 4

# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _shown(key: str) -> str:
    return repr(key) if len(key) <= 60 else repr(key[:60]) + "..."


def check_user_key(key: object) -> str:
    """Return ``key`` if it is a valid user key, else raise ``InvalidUserKey`` saying why."""
    if not isinstance(key, str):
        hint = " (decode bytes as UTF-8 first)" if isinstance(key, (bytes, bytearray, memoryview)) else ""
        raise InvalidUserKey(f"a user key must be a string, got {type(key).__name__}{hint}")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidUserKey(
            f"user key {_shown(key)} is not valid UTF-8: {key[exc.start]!r} at position {exc.start} "
            "is a lone surrogate (undecodable bytes?)"
        ) from None
    if size == 0:
        raise InvalidUserKey("a user key must not be empty")
    if size > MAX_KEY_BYTES:
        raise InvalidUserKey(f"user key {_shown(key)} is {size} bytes of UTF-8 (at most {MAX_KEY_BYTES})")
    bad = _CONTROL.search(key)
    if bad is not None:
        raise InvalidUserKey(
            f"user key {_shown(key)} contains the control character U+{ord(bad.group()):04X} "
            f"at position {bad.start()}"
        )
    return key


def _key_list(keys: Iterable[object]) -> list[object]:
    """The batch as a list; one string where a batch belongs is refused, not split into characters."""
    if isinstance(keys, (str, bytes, bytearray, memoryview)):
        raise InvalidUserKey(f"expected a collection of user keys, got a single {type(keys).__name__}")
    try:
        return list(keys)
    except TypeError:
        raise InvalidUserKey(f"expected a collection of user keys, got {type(keys).__name__}") from None


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeySets:
    """The three set names of the table, with the deployment's prefix."""

    ids: str
    pages: str
    alloc: str

    @classmethod
    def of(cls, sets: Sets) -> KeySets:
        return cls(sets.named("keyid"), sets.named("keypage"), sets.named("keyalloc"))


def _page_key(page: int) -> str:
    return str(page)


def _encode_page(slots: Sequence[str], confirmed: int) -> dict[str, bytes | int | str]:
    return {"keys": _SEPARATOR.join(slots), "ok": confirmed.to_bytes(PAGE_SIZE // 8, "little")}


def _decode_page(page: int, record: Record) -> tuple[list[str], int]:
    keys, ok = record.bins.get("keys"), record.bins.get("ok")
    if isinstance(keys, str) and isinstance(ok, bytes) and len(ok) == PAGE_SIZE // 8:
        slots = keys.split(_SEPARATOR)
        if len(slots) == PAGE_SIZE:
            return slots, int.from_bytes(ok, "little")
    raise CorruptSegment(f"key table page {page} (IDs {page * PAGE_SIZE}-{(page + 1) * PAGE_SIZE - 1}) is damaged")


def _decode_id(key: str, record: Record) -> int:
    value = record.bins.get("id")
    if isinstance(value, int) and 0 <= value <= MAX_USER_ID:
        return value
    raise CorruptSegment(f"key table record of user key {_shown(key)} is damaged (id={value!r})")


# ---------------------------------------------------------------------------------------------
# The translation cache
# ---------------------------------------------------------------------------------------------


class _Generation:
    """Pairs in both directions, and what they cost."""

    __slots__ = ("ids", "keys", "nbytes")

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.keys: dict[int, str] = {}
        self.nbytes = 0


def _cost(key: str) -> int:
    return sys.getsizeof(key) + PAIR_OVERHEAD


class KeyCache:
    """Committed key/ID pairs, bounded by ``max_bytes``, in approximate least-recently-used order.

    Two generations of plain dicts, so that a hit costs one dict lookup (an exact LRU's reordering
    costs several times more once the cache outgrows the CPU caches): new pairs go into the young
    generation; when it holds half the bound it becomes the old one and the previous old one is
    dropped; a hit in the old generation moves the pair back into the young one. So every pair
    used since the young generation last turned over is kept (at least the most recently used
    ``max_bytes / 2`` worth), and the cache never holds more than ``max_bytes``. Thread-safe.

    ``charge(owner, nbytes)`` (the segment cache's) is told what it holds after every change, so
    the process keeps one budget.
    """

    def __init__(self, max_bytes: int, charge: Callable[[str, int], None] | None = None) -> None:
        self.max_bytes = max_bytes
        self._young = _Generation()
        self._old = _Generation()
        self._lock = threading.Lock()
        self._charge = charge
        self.hits = 0
        self.misses = 0

    def ids(self, keys: Sequence[str]) -> list[int | None]:
        """The cached ID of each key (``None``: not cached; so is anything that is not a valid key,
        which the cache never holds). ``TypeError`` for an unhashable one."""
        back: list[tuple[str, int]] = []
        with self._lock:
            out: list[int | None] = list(map(self._young.ids.get, keys))  # the whole cost of a warm batch
            if self._old.ids and None in out:
                old = self._old.ids.get
                for i, key in enumerate(keys):
                    if out[i] is None:
                        uid = old(key)
                        if uid is not None:
                            out[i] = uid
                            back.append((key, uid))
                for key, uid in back:
                    self._revive(key, uid)
            missed = out.count(None)
            self.hits += len(out) - missed
            self.misses += missed
        if back:
            self._report()
        return out

    def keys(self, ids: Sequence[int]) -> list[str | None]:
        """The cached key of each ID (``None``: not cached)."""
        back: list[tuple[str, int]] = []
        with self._lock:
            out = list(map(self._young.keys.get, ids))
            if self._old.keys and None in out:
                old = self._old.keys.get
                for i, uid in enumerate(ids):
                    if out[i] is None:
                        key = old(uid)
                        if key is not None:
                            out[i] = key
                            back.append((key, uid))
                for key, uid in back:
                    self._revive(key, uid)
        if back:
            self._report()
        return out

    def add(self, pairs: Iterable[tuple[str, int]]) -> None:
        """Remember committed pairs."""
        if self.max_bytes <= 0:
            return
        with self._lock:
            for key, uid in pairs:
                if key in self._young.ids:
                    continue
                if key in self._old.ids:
                    self._revive(key, uid)
                else:
                    self._insert(key, uid)
        self._report()

    # -- under the lock ------------------------------------------------------------------------

    def _revive(self, key: str, uid: int) -> None:
        """Move a pair from the old generation into the young one."""
        old = self._old
        if old.ids.pop(key, None) is not None:
            del old.keys[uid]
            old.nbytes -= _cost(key)
        if key not in self._young.ids:
            self._insert(key, uid)

    def _insert(self, key: str, uid: int) -> None:
        cost, half = _cost(key), self.max_bytes // 2
        if cost > half:
            return
        if self._young.nbytes + cost > half:
            self._old, self._young = self._young, _Generation()
        young = self._young
        young.ids[key] = uid
        young.keys[uid] = key
        young.nbytes += cost

    def _report(self) -> None:
        if self._charge is not None:
            self._charge("keys", self.nbytes)

    def clear(self) -> None:
        with self._lock:
            self._young, self._old = _Generation(), _Generation()
        self._report()

    @property
    def nbytes(self) -> int:
        return self._young.nbytes + self._old.nbytes

    def __len__(self) -> int:
        return len(self._young.ids) + len(self._old.ids)


# ---------------------------------------------------------------------------------------------
# Allocation
# ---------------------------------------------------------------------------------------------


@dataclass
class KeyStats:
    """What this process's table did (for tests, metrics and the gap accounting)."""

    #: IDs reserved from the counter (minus those handed back by ``close``)
    reserved: int = 0
    #: keys this process committed
    created: int = 0
    #: races lost to another writer (each leaves a gap)
    lost: int = 0
    #: IDs given up because a batch failed before (or while) committing them
    abandoned: int = 0


class _Page:
    """The in-memory state of one page of a block this process reserved."""

    __slots__ = ("confirmed", "dirty", "generation", "handed", "in_flight", "number", "slots")

    def __init__(self, number: int) -> None:
        self.number = number
        self.slots = [""] * PAGE_SIZE
        self.confirmed = 0
        self.handed = 0  # IDs of the page given to a batch so far
        self.in_flight = 0  # claims not yet resolved
        self.dirty = False
        #: the stored record's generation: 0 before the first write, None after a write whose
        #: outcome is unknown (the next write reads it first)
        self.generation: int | None = 0

    @property
    def finished(self) -> bool:
        return self.handed == PAGE_SIZE and self.in_flight == 0 and not self.dirty


class _Allocator:
    """Blocks of IDs reserved from the counter, and the pages of those blocks.

    Page writes are conditional on the generation this process last wrote (the first one is
    create-only), so a delayed duplicate of an older write can never overwrite a newer one, and a
    page some other process wrote (only possible if the counter was tampered with) is noticed
    instead of overwritten.
    """

    def __init__(self, store: Store, sets: KeySets, stats: KeyStats) -> None:
        self.store = store
        self.sets = sets
        self.stats = stats
        self.lock = threading.Lock()
        self._next = 0  # next ID of the current block
        self._end = 0  # end of the current block
        self._block = FIRST_BLOCK
        self._reservation: tuple[int, int] | None = None  # the last block: (start, end)
        self._pages: dict[int, _Page] = {}

    # -- everything below runs under self.lock ------------------------------------------

    def claim(self, keys: Sequence[str]) -> list[int]:
        """IDs for ``keys``, claimed in their pages and the pages written."""
        ids: list[int] = []
        try:
            while len(ids) < len(keys):
                if self._next == self._end:
                    self._reserve(len(keys) - len(ids))
                take = min(self._end - self._next, len(keys) - len(ids))
                ids.extend(range(self._next, self._next + take))
                self._next += take
        except BaseException:
            self.stats.abandoned += len(ids)
            raise
        for key, uid in zip(keys, ids, strict=True):
            page = self._page(uid >> PAGE_BITS)
            page.slots[uid & (PAGE_SIZE - 1)] = key
            page.handed += 1
            page.in_flight += 1
            page.dirty = True
        try:
            self._write([p for p in self._pages.values() if p.dirty])
        except BaseException:
            self.resolve(ids, won=(), doubtful=())  # nothing was committed: clear the claims
            raise
        return ids

    def resolve(self, ids: Iterable[int], won: Iterable[int], doubtful: Iterable[int]) -> None:
        """Settle claims: ``won`` were committed, ``doubtful`` may have been, the rest were not."""
        keep = set(doubtful)
        committed = set(won)
        for uid in ids:
            page = self._pages[uid >> PAGE_BITS]
            slot = uid & (PAGE_SIZE - 1)
            page.in_flight -= 1
            if uid in committed:
                page.confirmed |= 1 << slot
            elif uid not in keep:
                page.slots[slot] = ""
            page.dirty = True
        full = [p for p in self._pages.values() if p.handed == PAGE_SIZE and p.in_flight == 0 and p.dirty]
        try:
            self._write(full)
        except SegmentsError as exc:  # the confirmations wait for the next write; reads verify
            log.warning("key table: writing %d full pages failed: %s", len(full), exc)
        for page in [p for p in self._pages.values() if p.finished]:
            del self._pages[page.number]

    def _page(self, number: int) -> _Page:
        page = self._pages.get(number)
        if page is None:
            page = self._pages[number] = _Page(number)
        return page

    def _write(self, pages: list[_Page]) -> None:
        for page in pages:
            key = _page_key(page.number)
            if page.generation is None:
                current = self.store.get_many(self.sets.pages, [key])[0]
                page.generation = 0 if current is None else current.generation
            try:
                page.generation = self.store.put(
                    self.sets.pages, key, _encode_page(page.slots, page.confirmed), generation=page.generation
                )
            except Conflict as exc:
                raise CorruptSegment(
                    f"key table page {page.number} was written by another process although this "
                    "process reserved its IDs (was the ID counter reset?)"
                ) from exc
            except BaseException:
                page.generation = None
                raise
            page.dirty = False

    def _reserve(self, wanted: int) -> None:
        """Reserve the next block (at least ``wanted`` IDs, whole pages) with a checked update."""
        size = -(-max(wanted, self._block) // PAGE_SIZE) * PAGE_SIZE
        delay = 0.001
        for _ in range(_RESERVE_ATTEMPTS):
            current = self.store.get_many(self.sets.alloc, [_COUNTER])[0]
            start = 0 if current is None else current.bins.get("next")
            if not isinstance(start, int) or not 0 <= start <= ID_SPACE or start % PAGE_SIZE:
                raise CorruptSegment(f"the key table's ID counter is damaged (next={start!r})")
            if start == ID_SPACE:
                raise StorageFull("the key table has allocated every 32-bit user ID; no new key can get one")
            end = min(start + size, ID_SPACE)
            try:
                self.store.put(
                    self.sets.alloc, _COUNTER, {"next": end},
                    generation=0 if current is None else current.generation,
                )
            except Conflict:
                time.sleep(delay * random.random())
                delay = min(delay * 2, 0.05)
                continue
            self._next, self._end = start, end
            self._reservation = (start, end)
            self._block = min(MAX_BLOCK, self._block * 2)
            self.stats.reserved += end - start
            return
        raise Conflict(f"could not reserve a block of user IDs in {_RESERVE_ATTEMPTS} attempts")

    def close(self) -> None:
        """Write pending confirmations; hand back the unused whole pages of the last block if no
        process reserved after it."""
        self._write([p for p in self._pages.values() if p.dirty])
        if self._reservation is None or self._next == self._end:
            return
        start, end = self._reservation
        tail = -(-self._next // PAGE_SIZE) * PAGE_SIZE
        if tail >= end:
            return
        current = self.store.get_many(self.sets.alloc, [_COUNTER])[0]
        if current is None or current.bins.get("next") != end:
            return
        try:
            self.store.put(self.sets.alloc, _COUNTER, {"next": tail}, generation=current.generation)
        except Conflict:
            return
        self.stats.reserved -= end - tail
        self._end = self._next = tail
        self._reservation = (start, tail)


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyTableReport:
    """What :meth:`KeyTable.check` found. ``ok`` when nothing is inconsistent."""

    keys: int
    #: the counter: IDs below it were reserved by some process
    next_id: int
    #: reserved IDs with no key (unused block ends, lost races, failed or crashed batches)
    gaps: int
    #: IDs that more than one key maps to (never expected)
    shared_ids: dict[int, list[str]] = field(default_factory=dict)
    #: keys whose ID's page does not name them: a reverse lookup would miss them (never expected)
    unreversible: list[str] = field(default_factory=list)
    #: keys with an ID at or beyond the counter (never expected)
    beyond_counter: list[str] = field(default_factory=list)
    #: claims in pages that no key confirms (left by a crash or a lost race; harmless)
    stale_claims: int = 0
    #: committed claims not yet marked in their page (a crash before the confirmation; harmless)
    unconfirmed: int = 0
    #: claims marked committed whose key maps elsewhere or nowhere (never expected)
    false_confirmations: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.shared_ids or self.unreversible or self.beyond_counter or self.false_confirmations)


class KeyTable:
    """Translate string user keys to dense 32-bit IDs and back (see the module docstring).

    Thread-safe; any number of processes may share one store.
    """

    def __init__(
        self,
        store: Store,
        sets: Sets | None = None,
        budget: SegmentCache | None = None,
        *,
        cache_bytes: int | None = None,
    ) -> None:
        """``budget``: the segment cache whose byte budget the translation cache shares (it may hold
        ``cache_bytes``, by default a quarter of that budget, and what it holds is charged to it).
        Without one the translation cache has a bound of its own (``cache_bytes``, 256 MiB by default).
        """
        self.store = store
        self.sets = KeySets.of(sets or Sets())
        self.stats = KeyStats()
        if cache_bytes is None:
            cache_bytes = budget.max_bytes // DEFAULT_CACHE_SHARE if budget is not None else 256 << 20
        self.cache = KeyCache(cache_bytes, budget.charge if budget is not None else None)
        self._alloc = _Allocator(store, self.sets, self.stats)
        self._closed = False

    # -- translation -------------------------------------------------------------------------

    def translate(self, keys: Iterable[str], create: bool = False) -> list[int | None]:
        """The ID of each key, in order; ``None`` for a key never created (unless ``create``).

        One batch read for all keys the cache does not hold; with ``create``, unknown keys get
        new IDs (one create-only write each, plus a page write and now and then a block
        reservation per batch). Every key is validated before anything is read or written:
        ``InvalidUserKey`` names the first bad one. Reads never allocate.
        """
        # not yet validated: a non-key is simply not in the cache, and is refused below
        batch = cast("list[str]", _key_list(keys))
        if self._closed:
            raise StorageUnavailable("the key table is closed")
        try:
            out = self.cache.ids(batch)
        except TypeError:  # an unhashable "key": say which
            for key in batch:
                check_user_key(key)
            raise
        if None not in out:
            return out
        missing: dict[str, None] = {}
        for key, uid in zip(batch, out, strict=True):
            if uid is None:
                missing[check_user_key(key)] = None
        found = self._read(list(missing))
        if create:
            new = [k for k in missing if k not in found]
            if new:
                found.update(self._create(new))
        self.cache.add(found.items())
        return [v if v is not None else found.get(k) for k, v in zip(batch, out, strict=True)]

    def create(self, keys: Iterable[str]) -> list[int]:
        """The ID of each key, giving new keys new IDs (``translate(keys, create=True)``)."""
        return [uid for uid in self.translate(keys, create=True) if uid is not None]

    def reverse(self, ids: Iterable[int], *, cache: bool = True) -> list[str | None]:
        """The key of each ID, in order; ``None`` for an ID no key has (a gap, or never allocated).

        ``InvalidUserId`` for anything not in ``[0, 2**32)``. Reads the pages of the IDs the cache
        does not hold in one batch, and checks claims not yet confirmed against the key records
        in a second one. ``cache=False`` leaves the cache as it is (for an export of a whole
        segment, which would otherwise push the hot pairs out).
        """
        if isinstance(ids, (str, bytes, int)):
            raise InvalidUserId(f"expected a collection of user IDs, got a single {type(ids).__name__}")
        try:
            uids = list(ids)
        except TypeError:
            raise InvalidUserId(f"expected a collection of user IDs, got {type(ids).__name__}") from None
        if uids and not (set(map(type, uids)) == {int} and min(uids) >= 0 and max(uids) <= MAX_USER_ID):
            uids = [check_user_id(i) for i in uids]  # numpy integers, or an error naming the bad one
        if self._closed:
            raise StorageUnavailable("the key table is closed")
        out = self.cache.keys(uids)
        wanted = sorted({u for u, k in zip(uids, out, strict=True) if k is None})
        if not wanted:
            return out
        numbers = sorted({u >> PAGE_BITS for u in wanted})
        records = self.store.get_many(self.sets.pages, [_page_key(n) for n in numbers])
        pages = {n: _decode_page(n, r) for n, r in zip(numbers, records, strict=True) if r is not None}
        found: dict[int, str] = {}
        check: dict[str, int] = {}
        for uid in wanted:
            page = pages.get(uid >> PAGE_BITS)
            if page is None:
                continue
            slot = uid & (PAGE_SIZE - 1)
            key = page[0][slot]
            if not key:
                continue
            if page[1] >> slot & 1:
                found[uid] = key
            else:
                check[key] = uid
        if check:
            committed = self._read(list(check))
            found.update({uid: key for key, uid in check.items() if committed.get(key) == uid})
        if cache:
            self.cache.add((k, u) for u, k in found.items())
        return [k if k is not None else found.get(u) for u, k in zip(uids, out, strict=True)]

    # -- store I/O ---------------------------------------------------------------------------

    def _read(self, keys: list[str]) -> dict[str, int]:
        """The committed ID of each key that has one (one batch read)."""
        if not keys:
            return {}
        records = self.store.get_many(self.sets.ids, keys)
        return {k: _decode_id(k, r) for k, r in zip(keys, records, strict=True) if r is not None}

    def _create(self, keys: list[str]) -> dict[str, int]:
        """Give new keys IDs: claim, commit each with a create-only write, read the winners of lost races."""
        with self._alloc.lock:
            ids = self._alloc.claim(keys)
        out: dict[str, int] = {}
        won: list[int] = []
        lost: list[str] = []
        doubtful: list[int] = []
        try:
            for key, uid in zip(keys, ids, strict=True):
                try:
                    self.store.put(self.sets.ids, key, {"id": uid}, generation=0)
                except Conflict:  # someone else committed this key first: its ID is the key's
                    lost.append(key)
                    continue
                except BaseException:
                    doubtful.append(uid)  # the write may have been applied: the claim stays
                    raise
                won.append(uid)
                out[key] = uid
        finally:
            with self._alloc.lock:
                self._alloc.resolve(ids, won, doubtful)
                self.stats.created += len(won)
                self.stats.lost += len(lost)
                self.stats.abandoned += len(ids) - len(won) - len(lost)
            if won:
                self.cache.add(out.items())
        if lost:
            winners = self._read(lost)
            gone = [k for k in lost if k not in winners]
            if gone:
                raise CorruptSegment(
                    f"the key table record of {_shown(gone[0])} existed a moment ago and is gone "
                    "(key records are never deleted: was the set truncated?)"
                )
            out.update(winners)
        return out

    # -- operator tools ----------------------------------------------------------------------

    def check(self) -> KeyTableReport:
        """Read the whole table and report inconsistencies and gaps (memory grows with the keys)."""
        ids: dict[str, int] = {k: _decode_id(k, r) for k, r in self.store.scan(self.sets.ids)}
        counter = self.store.get_many(self.sets.alloc, [_COUNTER])[0]
        next_id = 0 if counter is None else counter.bins.get("next", 0)
        if not isinstance(next_id, int):
            raise CorruptSegment(f"the key table's ID counter is damaged (next={next_id!r})")
        claims: dict[int, tuple[str, bool]] = {}
        for name, record in self.store.scan(self.sets.pages):
            if not name.isdigit():
                raise CorruptSegment(f"the key table holds a page with a bad key {name!r}")
            number = int(name)
            slots, ok = _decode_page(number, record)
            for slot, key in enumerate(slots):
                if key:
                    claims[number * PAGE_SIZE + slot] = (key, bool(ok >> slot & 1))
        owners: dict[int, list[str]] = {}
        for key, uid in ids.items():
            owners.setdefault(uid, []).append(key)
        shared = {uid: sorted(keys) for uid, keys in owners.items() if len(keys) > 1}
        unreversible = sorted(k for k, uid in ids.items() if claims.get(uid, ("", False))[0] != k)
        beyond = sorted(k for k, uid in ids.items() if uid >= next_id)
        stale = unconfirmed = 0
        false: list[int] = []
        for uid, (key, confirmed) in claims.items():
            committed = ids.get(key) == uid
            if confirmed and not committed:
                false.append(uid)
            elif not committed:
                stale += 1
            elif not confirmed:
                unconfirmed += 1
        return KeyTableReport(
            keys=len(ids),
            next_id=next_id,
            gaps=next_id - len(owners),
            shared_ids=shared,
            unreversible=unreversible,
            beyond_counter=beyond,
            stale_claims=stale,
            unconfirmed=unconfirmed,
            false_confirmations=sorted(false),
        )

    def close(self) -> None:
        """Write pending confirmations and hand back unused IDs; store errors are logged, not raised."""
        if self._closed:
            return
        self._closed = True
        with self._alloc.lock:
            try:
                self._alloc.close()
            except SegmentsError as exc:
                log.warning("key table: closing left unconfirmed claims or unused IDs: %s", exc)


__all__ = [
    "MAX_BLOCK",
    "MAX_KEY_BYTES",
    "PAGE_SIZE",
    "KeyCache",
    "KeySets",
    "KeyStats",
    "KeyTable",
    "KeyTableReport",
    "check_user_key",
]
