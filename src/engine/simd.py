"""Explicit float32 vectors for numba kernels: a ``f32x16`` value is 16 float32 lanes in one SIMD register
(an AVX-512 zmm; two ymm with AVX2; four NEON q registers on arm64: LLVM splits it where it must).

Why: numba lowers array elements to memory, so a kernel that accumulates ``out[j, 0:128]`` over many weights
loads and stores those 128 floats at every weight. Values of this type are SSA values that LLVM keeps in
registers across a loop, so the batched sparse kernel holds an output row in 8 registers while it reads
the rows its weights point to (src/engine). numba has no public vector type; these few intrinsics
(numba.extending.intrinsic, the documented way to emit LLVM IR) are the whole of it.

All functions are for use inside ``@njit`` code. Loads and stores take a 1-D C-contiguous float32 array and an
element offset; they are unaligned and not bounds-checked (the caller keeps ``offset + 16 <= size``). Scratch rows
that a kernel reads with vector loads come from :func:`scratch`: numba aligns a new array to 32 bytes only,
and on a CPU with 64-byte vectors (AVX-512) a row that starts 32 bytes into a cache line makes every load split two
lines (the batched MLP kernel then ran 1.6x slower, in whichever processes the allocator placed it so:
benchmarks/RESULTS.md, "One speed in every process").
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import llvmlite.ir as llir
import numpy as np
from numba import types
from numba.core import cgutils
from numba.core.datamodel import models
from numba.extending import intrinsic, register_model

LANES = 16
VECTOR_BYTES = 4 * LANES
ALL_COLUMNS = (1 << LANES) - 1  # transpose_tile: store every column
_VEC = llir.VectorType(llir.FloatType(), LANES)
_LANE = llir.IntType(32)


class F32x16(types.Type):
    """numba type of 16 float32 lanes held as one LLVM ``<16 x float>`` value."""

    def __init__(self) -> None:
        super().__init__(name="f32x16")


f32x16 = F32x16()


@register_model(F32x16)
class _F32x16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type) -> None:
        super().__init__(dmm, fe_type, _VEC)


def _vector_pointer(context, builder, array_type, array, offset):
    ary = context.make_array(array_type)(context, builder, array)
    return builder.bitcast(cgutils.get_item_pointer(context, builder, array_type, ary, [offset]), _VEC.as_pointer())


def _splat(builder, scalar):
    undef = llir.Constant(_VEC, llir.Undefined)
    one = builder.insert_element(undef, scalar, _LANE(0))
    return builder.shuffle_vector(one, undef, llir.Constant(llir.VectorType(_LANE, LANES), [0] * LANES))


@intrinsic
def load(typingctx, array, offset):  # pragma: no cover - compiled
    """``array[offset:offset + 16]`` as a vector."""
    def codegen(context, builder, sig, args):
        return builder.load(_vector_pointer(context, builder, sig.args[0], *args), align=4)
    return f32x16(array, types.intp), codegen


@intrinsic
def store(typingctx, array, offset, vector):  # pragma: no cover - compiled
    """``array[offset:offset + 16] = vector``."""
    def codegen(context, builder, sig, args):
        builder.store(args[2], _vector_pointer(context, builder, sig.args[0], args[0], args[1]), align=4)
        return context.get_dummy_value()
    return types.void(array, types.intp, f32x16), codegen


@intrinsic
def splat(typingctx, scalar):  # pragma: no cover - compiled
    """16 copies of a float32."""
    def codegen(context, builder, sig, args):
        return _splat(builder, args[0])
    return f32x16(types.float32), codegen


@intrinsic
def fma(typingctx, acc, scalar, vector):  # pragma: no cover - compiled
    """``acc + scalar * vector`` (fast-math: LLVM fuses it into one FMA where the CPU has one)."""
    def codegen(context, builder, sig, args):
        product = builder.fmul(_splat(builder, args[1]), args[2], flags=("fast",))
        return builder.fadd(args[0], product, flags=("fast",))
    return f32x16(f32x16, types.float32, f32x16), codegen


@intrinsic
def relu(typingctx, vector):  # pragma: no cover - compiled
    """``max(vector, 0)`` lane by lane."""
    def codegen(context, builder, sig, args):
        zero = llir.Constant(_VEC, [0.0] * LANES)
        return builder.select(builder.fcmp_ordered(">", args[0], zero), args[0], zero)
    return f32x16(f32x16), codegen


@intrinsic
def add(typingctx, a, b):  # pragma: no cover - compiled
    """``a + b`` lane by lane."""
    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1], flags=("fast",))
    return f32x16(f32x16, f32x16), codegen


@intrinsic
def maximum(typingctx, a, b):  # pragma: no cover - compiled
    """``max(a, b)`` lane by lane (``b`` where ``a`` is NaN)."""
    def codegen(context, builder, sig, args):
        return builder.select(builder.fcmp_ordered(">", args[0], args[1]), args[0], args[1])
    return f32x16(f32x16, f32x16), codegen


def _transpose(builder, rows):
    """The 16x16 transpose of 16 vectors (row r, lane c -> row c, lane r): 4 stages of 16 two-input shuffles;
    the stage for bit ``d`` swaps bit d of the row with bit d of the lane."""
    for d in (1, 2, 4, 8):
        new = list(rows)
        for i in range(LANES):
            if i & d:
                continue
            j = i | d
            low = [c if not c & d else LANES + c - d for c in range(LANES)]  # i keeps lanes without bit d
            high = [c + d if not c & d else LANES + c for c in range(LANES)]  # j keeps lanes with bit d
            new[i] = builder.shuffle_vector(rows[i], rows[j], llir.Constant(llir.VectorType(_LANE, LANES), low))
            new[j] = builder.shuffle_vector(rows[i], rows[j], llir.Constant(llir.VectorType(_LANE, LANES), high))
        rows = new
    return rows


@intrinsic
def transpose_tile(typingctx, src, src_offset, src_stride, dst, dst_offset, dst_stride, scale,
                   columns):  # pragma: no cover - compiled
    """``dst[dst_offset + c * dst_stride + r] = src[src_offset + r * src_stride + c] * scale`` for r < 16 and each
    c < 16 whose bit is set in ``columns`` (0xFFFF: all; the others are not written).

    ``src``: 1-D C-contiguous uint8 or float32 array (uint8 is converted exactly), ``dst``: 1-D float32; offsets
    and strides in elements. 16 vector loads, 64 shuffles and a vector store per column written, per tile."""
    def codegen(context, builder, sig, args):
        src_type, dst_type = sig.args[0], sig.args[3]
        src_ary = context.make_array(src_type)(context, builder, args[0])
        dst_ary = context.make_array(dst_type)(context, builder, args[3])
        src_vec = llir.VectorType(context.get_value_type(src_type.dtype), LANES)
        factor = _splat(builder, args[6])
        rows = []
        for r in range(LANES):
            at = builder.add(args[1], builder.mul(args[2], llir.Constant(args[2].type, r)))
            ptr = cgutils.get_item_pointer(context, builder, src_type, src_ary, [at])
            raw = builder.load(builder.bitcast(ptr, src_vec.as_pointer()), align=1)
            values = raw if src_type.dtype == types.float32 else builder.uitofp(raw, _VEC)
            rows.append(builder.fmul(values, factor, flags=("fast",)))
        mask_type = args[7].type
        for c, column in enumerate(_transpose(builder, rows)):
            bit = builder.and_(args[7], llir.Constant(mask_type, 1 << c))
            with builder.if_then(builder.icmp_unsigned("!=", bit, llir.Constant(mask_type, 0)), likely=True):
                at = builder.add(args[4], builder.mul(args[5], llir.Constant(args[5].type, c)))
                ptr = cgutils.get_item_pointer(context, builder, dst_type, dst_ary, [at])
                builder.store(column, builder.bitcast(ptr, _VEC.as_pointer()), align=4)
        return context.get_dummy_value()
    if src.dtype not in (types.uint8, types.float32):
        raise TypeError(f"transpose_tile reads uint8 or float32, not {src.dtype}")
    return types.void(src, types.intp, types.intp, dst, types.intp, types.intp, types.float32, types.int64), codegen


def scratch(n_chunks: int, size: int) -> np.ndarray:
    """A batched kernel's scratch: ``(n_chunks, 2, size)`` float32 zeros, two rows per chunk of blocks, each row
    starting on a :data:`VECTOR_BYTES` boundary (``size`` a multiple of LANES)."""
    n = n_chunks * 2 * size
    raw = np.zeros(n + LANES, np.float32)
    skip = (-raw.ctypes.data % VECTOR_BYTES) // 4
    return raw[skip:skip + n].reshape(n_chunks, 2, size)


class ScratchPool:
    """An engine's scratch, made once and lent to each call (allocating and zeroing 1 MB per thread per call cost
    2-5% of a k=99 call). numba's parallel kernels release the GIL, so threads may call one engine at once: a call
    that finds the scratch lent out gets a fresh one of its own."""

    def __init__(self, n_chunks: int, size: int) -> None:
        self._shared, self._lock = scratch(n_chunks, size), threading.Lock()

    @contextlib.contextmanager
    def borrow(self) -> Iterator[np.ndarray]:
        if not self._lock.acquire(blocking=False):
            yield scratch(self._shared.shape[0], self._shared.shape[2])
            return
        try:
            yield self._shared
        finally:
            self._lock.release()
