"""A prototype of the compiled kernel the engine would need to reach the floor: one fused pass.

The engine evaluates an expression with pyroaring's operators, one whole
bitmap per step: every step reads its operands and writes a new bitmap, and an
intermediate of medium density is written member by member into array
containers. A kernel that evaluates the whole expression shard by shard,
container by container, in registers, reads each operand once and writes
nothing but the count.

This prototype measures what such a pass costs on this machine. It keeps each
segment as a plain dense bitset (``users`` bits, whatever its density: the
sparse segments cost more memory and bandwidth here than their roaring
containers would, so it reads *more* than the floor counts) and runs the
expression as a small postfix program over blocks of ``BLOCK`` 64-bit words
(the block's operands stay in the first-level cache), counting with
``popcount``. It is C compiled at run time with the system compiler (``cc``);
without one the method is skipped with the reason. Its answers are checked
like every method's.

What the real kernel needs beyond this: CRoaring's containers themselves
(array, bitmap and run; pyroaring exposes none of them, so it would link
CRoaring and walk ``roaring_bitmap_t``'s containers, or decode the portable
serialization directly), per-container dispatch (an array container is
expanded into the block or probed, a run filled), and the plan's shard regions
as the loop's bounds.
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
from collections.abc import Mapping

import numpy as np
from pyroaring import BitMap

from segments.expressions import And, Diff, Expr, Not, Or, Ref, Xor

from .datasets import CACHE_ROOT, UNIVERSE, array_from_bitmap

BLOCK = 256
MAX_DEPTH = 12

SOURCE = r"""
#include <stdint.h>
#include <string.h>
#define BLOCK %(block)d
#define DEPTH %(depth)d
/* prog: pairs (op, arg). op 0: push input arg; 1-4: x op= y of the two top entries (and, or, andnot,
   xor); 11-14: top op= input arg. Returns the popcount of the final top entry over every word. */
uint64_t fused_count(const uint64_t *const *in, const int32_t *prog, int32_t n, uint64_t nwords) {
    static uint64_t stack[DEPTH][BLOCK];
    uint64_t total = 0;
    for (uint64_t base = 0; base < nwords; base += BLOCK) {
        uint64_t len = nwords - base < BLOCK ? nwords - base : BLOCK;
        int sp = 0;
        for (int32_t i = 0; i < n; i += 2) {
            int32_t op = prog[i], arg = prog[i + 1];
            if (op == 0) { memcpy(stack[sp], in[arg] + base, len * 8); sp++; continue; }
            uint64_t *x0;
            const uint64_t *y0;
            if (op > 10) { x0 = stack[sp - 1]; y0 = in[arg] + base; op -= 10; }
            else { x0 = stack[sp - 2]; y0 = stack[sp - 1]; sp--; }
            uint64_t *__restrict x = x0;
            const uint64_t *__restrict y = y0;
            switch (op) {
            case 1: for (uint64_t j = 0; j < len; j++) x[j] &= y[j]; break;
            case 2: for (uint64_t j = 0; j < len; j++) x[j] |= y[j]; break;
            case 3: for (uint64_t j = 0; j < len; j++) x[j] &= ~y[j]; break;
            case 4: for (uint64_t j = 0; j < len; j++) x[j] ^= y[j]; break;
            }
        }
        for (uint64_t j = 0; j < len; j++) total += (uint64_t)__builtin_popcountll(stack[0][j]);
    }
    return total;
}
"""

_OPS = {And: 1, Or: 2, Diff: 3, Xor: 4}


def _library() -> tuple[ctypes.CDLL | None, str]:
    """The compiled kernel (built once into ``bench/.cache/kernel``), or ``None`` and why not."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None, "no C compiler (cc) on PATH"
    source = SOURCE % {"block": BLOCK, "depth": MAX_DEPTH}
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    directory = CACHE_ROOT / "kernel"
    directory.mkdir(parents=True, exist_ok=True)
    lib = directory / f"fused-{digest}.so"
    if not lib.exists():
        src = directory / f"fused-{digest}.c"
        src.write_text(source)
        tmp = lib.with_suffix(".tmp")
        run = subprocess.run(
            [compiler, "-O3", "-march=native", "-shared", "-fPIC", "-o", str(tmp), str(src)],
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            return None, f"cc failed: {run.stderr.strip()[-300:]}"
        tmp.replace(lib)
    dll = ctypes.CDLL(str(lib))
    dll.fused_count.restype = ctypes.c_uint64
    dll.fused_count.argtypes = [
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.POINTER(ctypes.c_int32),
        ctypes.c_int32,
        ctypes.c_uint64,
    ]
    return dll, ""


def dense(bitmap: BitMap, users: int) -> np.ndarray:
    """The bitmap as ``ceil(users / 64)`` little-endian 64-bit words."""
    words = (users + 63) // 64
    bits = np.zeros(words * 64, dtype=bool)
    bits[array_from_bitmap(bitmap)] = True
    return np.packbits(bits, bitorder="little").view(np.uint64)


class FusedKernel:
    """Every segment as a dense bitset, and the C pass over them."""

    def __init__(self, bitmaps: Mapping[str, BitMap], users: int) -> None:
        self.dll, self.skipped = _library()
        self.names = list(bitmaps)
        self.arrays = [dense(bitmaps[n], users) for n in self.names] if self.dll is not None else []
        self.words = (users + 63) // 64
        pointers = [a.ctypes.data for a in self.arrays]
        self._inputs = (ctypes.c_void_p * max(1, len(pointers)))(*pointers)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays)

    def program(self, tree: Expr) -> ctypes.Array[ctypes.c_int32]:
        out: list[int] = []
        depth = 0

        def push(arg: int) -> None:
            nonlocal depth
            out.extend((0, arg))
            depth += 1
            if depth > MAX_DEPTH:
                raise ValueError("expression too deep for the prototype")

        def emit(node: Expr) -> None:
            nonlocal depth
            if isinstance(node, Ref):
                push(self.names.index(node.name))
                return
            if isinstance(node, Not):
                push(self.names.index(UNIVERSE))
                operands: tuple[Expr, ...] = (node.operand,)
                code = _OPS[Diff]
            else:
                emit(node.operands[0])
                operands = node.operands[1:]
                code = _OPS[type(node)]
            for op in operands:
                if isinstance(op, Ref):
                    out.extend((10 + code, self.names.index(op.name)))
                else:
                    emit(op)
                    out.extend((code, 0))
                    depth -= 1

        emit(tree)
        return (ctypes.c_int32 * len(out))(*out)

    def count(self, program: ctypes.Array[ctypes.c_int32]) -> int:
        assert self.dll is not None
        return int(self.dll.fused_count(self._inputs, program, len(program), self.words))


__all__ = ["BLOCK", "FusedKernel"]
