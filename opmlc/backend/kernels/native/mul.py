"""Host-only kernel of an fx32 multiply (binary `mul`, ir/ops/binary.py: to_fx(a·b, fa + fb, fo)
with a right shift k = fa + fb − fo in 1..62), sixteen elements a vector.

The portable kernel (kernels/binary.py, auto-vectorised) widens each operand to an i64 lane
(`vpmovzxdq`, a shuffle, per eight elements of each operand) and narrows each result by a
saturating store (`vpmovsqd`, four µops): about 16 µops per eight products. Here both operands
are loaded as <16 x i32>; the even elements' product is `vpmuldq` of the vectors as they are
(it reads each i64 lane's low, sign-extended half), the odd elements' of the vectors shifted
right by 32 (arithmetic: the high half sign-extended); each lane then takes the interpreter's
integer steps: |a·b| ≤ 2^62, so p + 2^(k−1) < 2^63 does not wrap and (p + 2^(k−1)) >> k is
shr_round(p, k); clamped to int32 (saturate32, each clamped lane counted), and the low halves
of the even and odd results interleaved back into one <16 x i32> store.

Layouts: binary.coalesce's loop nest of the output (size-1 dimensions dropped, contiguous ones
merged) whose innermost dimension (≥ 16 elements) is contiguous in the output and, in each
operand, contiguous or broadcast (stride 0: one element for the whole row, e.g. a scalar or a
bias along the rows). The outer dimensions are walked one row at a time; a row's last
(extent mod 16) elements take the portable kernel's scalar formula (binary.fx_scalar). Parts:
ranges of rows.
"""

from __future__ import annotations

from llvmlite import ir

from opmlc.backend.kernels._fx import ld, st
from opmlc.backend.kernels._ir import (
    I32,
    I64,
    broadcast_strides,
    c32,
    counter_slot,
    counting,
    loop,
    strides,
)
from opmlc.backend.kernels.native import host_kernel
from opmlc.backend.kernels.native._vec import part_range
from opmlc.ir import fixedpoint as fp
from opmlc.ir.types import DType, TensorType

WIDTH = 16  # i32 elements of one zmm register
V16 = ir.VectorType(I32, WIDTH)
V8 = ir.VectorType(I64, WIDTH // 2)


def _nest(types: list[TensorType], out_type: TensorType) -> tuple[tuple[int, ...], list[list[int]]]:
    from opmlc.backend.kernels.binary import coalesce  # binary imports native/ (divide)

    shape = out_type.shape
    sa, sb = (broadcast_strides(t.shape, shape) for t in types)
    return coalesce(shape, [sa, sb, strides(shape)])


def accepts(types: list[TensorType], attrs: dict, out_type: TensorType) -> bool:
    if attrs.get("kind") != "mul" or any(t.dtype is not DType.FX32 for t in (*types, out_type)):
        return False
    if not 1 <= types[0].frac + types[1].frac - out_type.frac <= 62:
        return False
    shape, (sa, sb, so) = _nest(types, out_type)
    return bool(shape) and shape[-1] >= WIDTH and so[-1] == 1 and sa[-1] in (0, 1) and sb[-1] in (0, 1)


def work(types: list[TensorType], attrs: dict, out_type: TensorType) -> int:
    return out_type.numel  # a few µops an element: one thread unless it is very large


def _row_operand(b: ir.IRBuilder, base: ir.Value, at: ir.Value, inner: int) -> ir.Value:
    """<16 x i32> of an operand at element `at` (inner stride 1) or its element `at` in every
    lane (inner stride 0)."""
    ptr = b.gep(base, [at], source_etype=I32)
    if inner:
        return b.load(ptr, typ=V16, align=4)
    one = b.insert_element(ir.Constant(V16, ir.Undefined), b.load(ptr, typ=I32), c32(0))
    return b.shuffle_vector(one, ir.Constant(V16, ir.Undefined), ir.Constant(V16, [0] * WIDTH))


@host_kernel("binary", accepts, work)
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType, part: ir.Value, parts: ir.Value) -> None:
    from opmlc.backend.kernels.binary import fx_scalar  # binary imports native/ (divide)

    fa, fb, fo = types[0].frac, types[1].frac, out_type.frac
    k = fa + fb - fo
    shape, (sa, sb, so) = _nest(types, out_type)
    outer, n = shape[:-1], shape[-1]
    rows = 1
    for d in outer:
        rows *= d
    lo, hi = part_range(b, rows, 1, part, parts)
    slot = counter_slot(b) if counting(b) else None
    vecs = n // WIDTH

    def c8(v: int) -> ir.Constant:
        return ir.Constant(V8, [v] * (WIDTH // 2))

    def lanes_product(x: ir.Value, y: ir.Value) -> ir.Value:
        # operands sign-extended from their low halves (x is in [−2^31, 2^31)): `vpmuldq`
        return b.mul(b.ashr(b.shl(x, c8(32)), c8(32)), b.ashr(b.shl(y, c8(32)), c8(32)))

    with loop(b, hi, "row", start=lo) as r:
        # the row's first element in each operand and the output: row r's multi-index
        base = [c32(0), c32(0), c32(0)]
        rest = r
        for d, strides_d in zip(reversed(outer), reversed(list(zip(sa[:-1], sb[:-1], so[:-1], strict=True))),
                                strict=True):
            idx = b.urem(rest, c32(d))
            rest = b.udiv(rest, c32(d))
            base = [b.add(acc, b.mul(idx, c32(s))) if s else acc for acc, s in zip(base, strides_d, strict=True)]
        with loop(b, vecs, "v") as j:
            e = b.mul(j, c32(WIDTH))
            at = [b.add(base[0], e) if sa[-1] else base[0], b.add(base[1], e) if sb[-1] else base[1],
                  b.add(base[2], e)]
            xa = b.bitcast(_row_operand(b, args[0], at[0], sa[-1]), V8)
            xb = b.bitcast(_row_operand(b, args[1], at[1], sb[-1]), V8)
            wides, clamped = [], []
            # even elements: the lanes' low halves; odd: the high halves shifted down (sign kept)
            for pa, pb in ((xa, xb), (b.ashr(xa, c8(32)), b.ashr(xb, c8(32)))):
                p = lanes_product(pa, pb)  # |p| ≤ 2^62
                w = b.ashr(b.add(p, c8(1 << (k - 1))), c8(k))  # shr_round(p, k): no wrap below 2^63
                c = b.select(b.icmp_signed(">", w, c8(fp.INT32_MAX)), c8(fp.INT32_MAX), w)
                c = b.select(b.icmp_signed("<", c, c8(fp.INT32_MIN)), c8(fp.INT32_MIN), c)
                wides.append(w)
                clamped.append(c)
            even, odd = (b.bitcast(c, V16) for c in clamped)  # little-endian: lane i's low half is i32 2i
            res = b.shuffle_vector(even, odd, ir.Constant(V16, [i if i % 2 == 0 else WIDTH + i - 1
                                                                for i in range(WIDTH)]))
            b.store(res, b.gep(out, [at[2]], source_etype=I32), align=4)
            if slot is not None:  # saturate32's count: lanes the clamp changed
                pop = b.module.globals.get("llvm.ctpop.i8") or ir.Function(
                    b.module, ir.FunctionType(ir.IntType(8), [ir.IntType(8)]), "llvm.ctpop.i8")
                for c, w in zip(clamped, wides, strict=True):
                    changed = b.bitcast(b.icmp_signed("!=", c, w), ir.IntType(WIDTH // 2))
                    b.store(b.add(b.load(slot, typ=I32), b.zext(b.call(pop, [changed]), I32)), slot)
        with loop(b, c32(n), "t", start=c32(vecs * WIDTH)) as i:  # the row's last n mod 16
            a = ld(b, args[0], b.add(base[0], i) if sa[-1] else base[0], DType.FX32)
            y = ld(b, args[1], b.add(base[1], i) if sb[-1] else base[1], DType.FX32)
            st(b, fx_scalar(b, "mul", a, y, fa, fb, fo), out, b.add(base[2], i), DType.FX32)


__all__ = ["accepts", "emit"]
