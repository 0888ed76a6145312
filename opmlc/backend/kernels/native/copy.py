"""Host kernels of the ops that only move elements: a view whose box is the whole output (no
fill; transposes, slices, the heads' splits and merges) and a concat whose inputs need no
conversion (every input of the output's dtype, and for fx32 of its fraction: to_fx(x, f, f) of
an int32 is x itself, never saturated).

The portable kernels (kernels/view.py, concat.py) compute every element's source index in a
loop nest and leave the copy to LLVM's vectoriser, which guards each inner loop with run-time
overlap checks. Here the output is a sequence of rows, each a contiguous run of the input
(a view's innermost stride is 1; a concat input's slab of one outer index), copied by whole
vectors (64 bytes) and a scalar tail: the same elements, bit for bit. Parts (threads) are
ranges of rows.
"""

from __future__ import annotations

from math import prod

from llvmlite import ir

from opmlc.backend.kernels._ir import ELEM, c32, flat_index, linear_index, loop
from opmlc.backend.kernels.native import host_kernel
from opmlc.backend.kernels.native._vec import part_range
from opmlc.ir.ops.view import box
from opmlc.ir.types import DType, TensorType

VECTOR_BYTES = 64


def _copy_run(b: ir.IRBuilder, dst: ir.Value, dst_at: ir.Value, src: ir.Value, src_at: ir.Value, count: int,
              dt: DType) -> None:
    """dst[dst_at .. + count) = src[src_at .. + count) (element indices of dtype dt): 64-byte
    vectors, then one 32- and one 16-byte vector where they fit, then scalars."""
    ty = ELEM[dt]
    size = ty.width // 8

    def move(at: ir.Value, width: int) -> None:
        vty = ir.VectorType(ty, width) if width > 1 else ty
        x = b.load(b.gep(src, [b.add(src_at, at)], source_etype=ty), typ=vty, align=size)
        b.store(x, b.gep(dst, [b.add(dst_at, at)], source_etype=ty), align=size)

    width = VECTOR_BYTES // size
    if count // width > 8:  # a long run: a loop of vectors
        with loop(b, count // width, "cv") as v:
            move(b.mul(v, c32(width)), width)
    else:
        for v in range(count // width):
            move(c32(v * width), width)
    done = count - count % width
    for w in (width // 2, width // 4):  # what is left (< 64 bytes): at most one of each
        if w >= 2 and w * size >= 16 and count - done >= w:
            move(c32(done), w)
            done += w
    for e in range(done, count):
        move(c32(e), 1)


def _plain(dt: DType) -> bool:
    return dt in ELEM and dt is not DType.I4


def view_accepts(types: list[TensorType], attrs: dict, out_type: TensorType) -> bool:
    shape = out_type.shape
    if not shape or not _plain(out_type.dtype) or types[0].numel == 0 or attrs["strides"][-1] != 1:
        return False
    lo, hi = box(attrs, shape)
    return all(a <= 0 for a in lo) and all(h >= d for h, d in zip(hi, shape, strict=True)) and shape[-1] >= 4


def work(types: list[TensorType], attrs: dict, out_type: TensorType) -> int:
    return out_type.numel


@host_kernel("view", view_accepts, work)
def emit_view(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
              out_type: TensorType, part: ir.Value, parts: ir.Value) -> None:
    shape = out_type.shape
    inner, outer = shape[-1], shape[:-1]
    lo, hi = part_range(b, prod(outer), 1, part, parts)
    with loop(b, b.sub(hi, lo), "row") as t:
        row = b.add(lo, t)
        src = b.add(c32(attrs["offset"]), linear_index(b, flat_index(b, row, outer), list(attrs["strides"][:-1])))
        _copy_run(b, out, b.mul(row, c32(inner)), args[0], src, inner, out_type.dtype)


def concat_accepts(types: list[TensorType], attrs: dict, out_type: TensorType) -> bool:
    if not _plain(out_type.dtype) or any(t.dtype is not out_type.dtype for t in types):
        return False
    return out_type.dtype is not DType.FX32 or all(t.frac == out_type.frac for t in types)


@host_kernel("concat", concat_accepts, work)
def emit_concat(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
                out_type: TensorType, part: ir.Value, parts: ir.Value) -> None:
    axis = attrs["axis"]
    outer = prod(out_type.shape[:axis])
    after = prod(out_type.shape[axis + 1:])
    row = out_type.shape[axis] * after
    lo, hi = part_range(b, outer, 1, part, parts)
    with loop(b, b.sub(hi, lo), "outer") as t:
        o = b.add(lo, t)
        start = 0
        for ptr, ty in zip(args, types, strict=True):
            block = ty.shape[axis] * after
            if block:
                _copy_run(b, out, b.add(b.mul(o, c32(row)), c32(start)), ptr, b.mul(o, c32(block)), block,
                          out_type.dtype)
            start += block


__all__ = ["concat_accepts", "emit_concat", "emit_view", "view_accepts", "work"]
