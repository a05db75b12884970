"""The fixed shard ranges a Spark push cuts bitmaps into: each fits one message, however dense.

No Spark needed: these check :func:`ingest.codec.shards_per_message`,
:func:`ingest.codec.roaring_message` and the cutting of ``ingest.spark``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroaring import BitMap

from ingest.codec import Update, decode, roaring_message, shards_per_message
from segments import bitmap as bm
from tests.spark.support import require_pyspark


def densest(shards: int, kind: str) -> BitMap:
    """``shards`` consecutive shards, each in its largest run-optimized form of this kind."""
    out = BitMap()
    for shard in range(shards):
        start = shard << bm.SHARD_BITS
        if kind == "bitset":  # every other ID: 32768 values, an 8 KiB bitset that no run form beats
            out |= BitMap(np.arange(start, start + bm.SHARD_WIDTH, 2, dtype=np.uint32))
        elif kind == "array":  # 4096 values spaced apart: the largest array container (8 KiB)
            out |= BitMap(np.arange(start, start + 4096 * 16, 16, dtype=np.uint32))
        else:  # 2047 runs of 3: a run container just under the size of a bitset
            ids = (start + np.arange(2047, dtype=np.uint32)[:, None] * 32 + np.arange(3, dtype=np.uint32)).ravel()
            out |= BitMap(ids)
    out.run_optimize()
    return out


@pytest.mark.parametrize("max_bytes", [16_384, 100_000, 900_000, 1_000_000])
@pytest.mark.parametrize("kind", ["bitset", "array", "runs"])
def test_the_densest_range_fits_the_budget(max_bytes: int, kind: str) -> None:
    span = shards_per_message(max_bytes)
    value = bm.serialize(densest(span, kind))
    assert len(value) <= max_bytes
    print(f"{span} shards of {kind} containers: {len(value)} of {max_bytes} bytes")


def test_the_default_budget_is_109_shards() -> None:
    assert shards_per_message() == 109
    with pytest.raises(ValueError, match="at least 16384"):
        shards_per_message(16_383)


@given(st.lists(st.integers(0, bm.MAX_USER_ID), max_size=300), st.sampled_from([1, 3, 109]))
def test_cutting_keeps_every_id_once_in_its_range(ids: list[int], span: int) -> None:
    require_pyspark()  # ingest.spark imports pyspark
    from ingest.spark import _cut

    members = BitMap(ids)
    pieces = list(_cut(members, span))
    width = span << bm.SHARD_BITS
    assert [number for number, _ in pieces] == sorted({i // width for i in members})
    assert all(piece and all(i // width == number for i in piece) for number, piece in pieces)
    assert BitMap.union(BitMap(), *(piece for _, piece in pieces)) == members


def test_a_part_message_decodes_to_what_was_cut() -> None:
    members = BitMap([5, 70_000, 2**32 - 1])
    message = roaring_message("replace", "premium", members, batch="b-1", part=3, parts=602)
    update = decode(message.key, message.value, message.headers)
    assert update == Update("replace", "premium", members, "b-1", 3, 602)
    add = roaring_message("add", "premium", members)
    assert decode(add.key, add.value, add.headers) == Update("add", "premium", members)
    with pytest.raises(ValueError, match="needs batch, part and parts"):
        roaring_message("replace", "premium", members, batch="b-1")
