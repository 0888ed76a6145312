"""LLVM building blocks of the host kernels: <8 x i64> lanes, a part's range of a node's
output (kernels/native/__init__.py: a node split over threads), and a matrix's grid of
register tiles."""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from opmlc.backend.kernels._ir import I32, I64, c32, loop

LANES = 8  # i64 lanes of one zmm register
VI32 = ir.VectorType(I32, LANES)
VI64 = ir.VectorType(I64, LANES)
V16 = ir.VectorType(I32, 2 * LANES)  # i32 lanes of one zmm register (the VNNI kernels' accumulators)


def intrinsic(b: ir.IRBuilder, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    """The module's declaration of an LLVM intrinsic (or other external function), made once."""
    return b.module.globals.get(name) or ir.Function(b.module, ir.FunctionType(ret, args), name)


def vload(b: ir.IRBuilder, base: ir.Value, index: ir.Value) -> ir.Value:
    """Eight consecutive i32 elements from base[index], sign-extended to <8 x i64>."""
    return b.sext(b.load(b.gep(base, [index], source_etype=I32), typ=VI32, align=4), VI64)


def splat(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """An i64 in every lane."""
    v = b.insert_element(ir.Constant(VI64, ir.Undefined), x, c32(0))
    return b.shuffle_vector(v, ir.Constant(VI64, ir.Undefined), ir.Constant(VI32, [0] * LANES))


def hsum(b: ir.IRBuilder, v: ir.Value) -> ir.Value:
    """The wrap-around sum of the eight lanes."""
    name = "llvm.vector.reduce.add.v8i64"
    fn = b.module.globals.get(name) or ir.Function(b.module, ir.FunctionType(I64, [VI64]), name)
    return b.call(fn, [v])


def part_range(b: ir.IRBuilder, n: int, grain: int, part: ir.Value, parts: ir.Value) -> tuple[ir.Value, ir.Value]:
    """[lo, hi) of 0..n for `part` of `parts` (i32 values, parts ≥ 1 is not trusted: 0 reads as
    1): bounds on multiples of `grain` (a kernel's tile), the last part ending at n. The parts
    partition 0..n, so every element is computed exactly once."""
    parts = b.select(b.icmp_unsigned("==", parts, c32(0)), c32(1), parts)
    wide = ir.IntType(64)

    def bound(p: ir.Value) -> ir.Value:
        x = b.udiv(b.mul(b.zext(p, wide), ir.Constant(wide, n)), b.zext(parts, wide))
        return b.trunc(b.mul(b.udiv(x, ir.Constant(wide, grain)), ir.Constant(wide, grain)), I32)

    last = b.icmp_unsigned(">=", b.add(part, c32(1)), parts)
    lo = b.select(b.icmp_unsigned(">=", part, parts), c32(n), bound(part))
    hi = b.select(last, c32(n), bound(b.add(part, c32(1))))
    return lo, hi


def tile_grid(b: ir.IRBuilder, rows: int, vecs: int, rmax: int, vmax: int,
              tile: Callable[[int, int, ir.Value, ir.Value], None]) -> None:
    """A matrix of `rows` rows × `vecs` column vectors in register tiles: tiles of rmax rows
    then 1 (the rows left over), each row band in tiles of vmax vectors then 1;
    tile(tile_rows, tile_vecs, first row, first vector) emits one (i32 values)."""
    first_row = 0
    for r, row_tiles in ((rmax, rows // rmax), (1, rows % rmax)):
        if row_tiles == 0:
            continue
        with loop(b, row_tiles, f"rt{r}") as rt:
            i0 = b.add(c32(first_row), b.mul(rt, c32(r)))
            first_vec = 0
            for v, col_tiles in ((vmax, vecs // vmax), (1, vecs % vmax)):
                if col_tiles == 0:
                    continue
                with loop(b, col_tiles, f"ct{r}.{v}") as ct:
                    tile(r, v, i0, b.add(c32(first_vec), b.mul(ct, c32(v))))
                first_vec += v * col_tiles
        first_row += r * row_tiles


__all__ = ["I64", "LANES", "V16", "VI32", "VI64", "hsum", "part_range", "splat", "tile_grid", "vload"]
