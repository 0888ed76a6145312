"""Host kernels of opmlc/ir/ops/conv.py and ops/qconv.py (8-bit weights): the convolution as
matmul_vnni16.py's product of a constant weight, over patches gathered chunk by chunk (im2col).

Conv's semantics are matmul's (ops/conv.py): out[n, m, o] = finish(Σ over channels c and taps t
of x[n, c, in(o, t)]·w[m, c, t]), with the same bias, rounding shift and counted saturation, and
a tap in the padding contributing nothing. So with the patch matrix P[o, (t, c)] = x[n, c,
in(o, t)] (0 in the padding) and the weight as W[m, (t, c)], each output is a row of P times a
row of W: the product matmul_vnni16 computes exactly (its planes, schemes, bounds and fallback,
proved there) from a weight split into s16 planes once per region table (`derive`). Summing in
the order (tap, channel) rather than the weight's (channel, tap) changes no bit: the sums are
exact in wrap-around i64 whatever their order. The portable kernel (kernels/conv.py) keeps one
scalar i64 sum per output, ~20× onnxruntime's time on a 64-channel 3×3 layer.

Chunks. A part (thread) takes whole chunks: `rows0` output rows along the first spatial
dimension of one image, i.e. rows0 · prod(O[1:]) patch rows (`_plan`: as many as fit the stack
scratches below). For a chunk:
1. Band: the input rows along the first spatial dimension that its windows reach (clipped to
   the input, from `first`), copied channels-last, xb[i0 − first, i_rest, c], so that one tap
   of one position is C consecutive elements: a [C, E] → [E, C] transpose (`_transpose`: 16 × 16
   blocks in registers; element by element it was 9 % of a 64-channel layer's time).
Then per group (g groups of C/g input and M/g output channels; one for an ungrouped conv):
2. Patches: per position and tap, the group's C/g channels copied from the band (16 at a time),
   or zeros when the tap lies in the padding (any spatial dimension outside the input).
3. The product (matmul_vnni16's shared function for the weight's plane count and K = taps · C/g:
   rows = the chunk's positions, the group's M/g columns, its planes at g·`_group_bytes` in the
   derived buffer, its bias and scales) into a [positions, M/g] scratch, finished there.
4. The scratch transposed into the group's channels of the output's channel-first layout
   (`_transpose`): LLVM's own vectorisation of the element loop scattered each store across
   rows one output plane apart (4 KiB for 32 × 32 outputs: one cache set), half of a
   3 → 32-channel layer's time.

The scratches live on the stack, `noinline` keeps them in this function's frame only (an
inlined copy would add them to its caller's, once per conv node): at most COL_BYTES + BAND_BYTES
+ OUT_BYTES (448 KiB) besides matmul_vnni16's own frame, well within a pool thread's stack (the
process's limit, 8 MiB here). A node whose one row of the first spatial dimension does not fit
them, or with fewer than MIN_CHANNELS output channels a group of several input channels, stays
on the portable kernel (`accepts`); so does, through `_portable`, a weight without s16 planes, groups
whose weights need different numbers of planes (one kernel serves every group), or a host
without VNNI (no facts: this function holds the portable body, over its part's flat output
elements).

qconv (Conv under `--weights int8`) takes the same path with one plane: its semantics are conv's
with the integer weight w = (q − zp)·scale, one scale per output channel (ops/qconv.py), and in
the ring of wrap-around i64 Σ x·(q − zp)·s = s·Σ x·(q − zp). So `q_derive` makes the one s16
plane of q − zp (|·| ≤ 255) and appends the channels' scales, and matmul_vnni16 multiplies each
column's exact sum by its scale before the bias (`scales`): x split in two planes against one
weight plane is two products, where the dequantized weight's three planes took three. 4-bit q
(held packed) stays on the portable kernel.

The weight's columns (output channels) are padded to whole blocks of 16 (matmul_vnni16), and a
layer of fewer than MIN_CHANNELS = 16 channels a group stays on the portable kernel: the digits
CNN's 8 channels over 8×8 pixels run in ~15 µs there, as fast as onnxruntime. A grouped layer
(4 groups of 16 channels, 3×3 on 32×32) went from 11.9× to 3.9× onnxruntime. A depthwise one
(one input channel a group: no reduction over channels to put on `vpdpwssd`) takes its own
path, `_emit_depthwise` (i64 lanes along the last output dimension): 64 channels, 3×3 on 32×32,
0.50 → 0.18 ms (6.7× → 3.1× onnxruntime).
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod

import numpy as np
from llvmlite import ir

from opmlc.backend.kernels import KERNELS
from opmlc.backend.kernels._ir import (
    I32,
    I64,
    PTR,
    RANGE_ATTR,
    c32,
    c64,
    counter_slot,
    counting,
    entry_alloca,
    flat_index,
    loop,
    nest,
)
from opmlc.backend.kernels.native import host_kernel, matmul_vnni16
from opmlc.backend.kernels.native._vec import V16, intrinsic, part_range
from opmlc.ir import fixedpoint as fp
from opmlc.ir.graph import Graph
from opmlc.ir.initializers import held
from opmlc.ir.ops._qweight import split_inputs
from opmlc.ir.types import DType, TensorType

# The chunk's scratches (stack). Halving all three changed nothing measurable on the CIFAR-shaped
# CNN (0.773 → 0.766 ms): smaller chunks, more calls of the product. These still take one output
# row of a 512-channel 3×3 layer 7 wide, or of a 64-channel one 56 wide.
COL_BYTES = 256 << 10  # the chunk's patches, i32 [positions, taps · C]
BAND_BYTES = 128 << 10  # the chunk's input rows, channels-last
OUT_BYTES = 64 << 10  # the chunk's outputs, [positions, M]
MIN_CHANNELS = 16  # output channels; fewer: the portable kernel (the padded columns' work)
LANES16 = V16.count


def _geometry(types: list[TensorType], out_type: TensorType):
    xt, wt = types[0], types[1]
    c, m = xt.shape[1], wt.shape[0]
    return c, m, xt.shape[2:], wt.shape[2:], out_type.shape[2:]


def _group_bytes(mg: int, kc: int, planes: int) -> int:
    """The bytes of one group's planes in the derived buffer (matmul_vnni16's, 64-byte aligned):
    group g's start at g times this, the qconv scales after the last."""
    return -(-matmul_vnni16.derived_bytes(mg, kc, planes) // 64) * 64


def _band_rows(rows0: int, attrs: dict, k0: int, s0: int) -> int:
    """Input rows along the first spatial dimension that rows0 output rows reach (≤ the input's)."""
    return min((rows0 - 1) * attrs["strides"][0] + (k0 - 1) * attrs["dilations"][0] + 1, s0)


def _plan(types: list[TensorType], attrs: dict, out_type: TensorType) -> int:
    """rows0: output rows of the first spatial dimension per chunk (0: not even one fits the
    scratches). The fewest chunks the scratches allow, rounded up to an even count when there
    are rows enough, and balanced: two threads then split an image's chunks evenly (two
    chunks of 14 and 2 rows left one thread idle most of a 16-row layer)."""
    c, m, sp, ks, osp = _geometry(types, out_type)
    inner, taps, rest = prod(osp[1:]), prod(ks), prod(sp[1:])
    cg = c // attrs["group"]  # a group's input channels: its patches' width is taps · cg
    most = 0
    for rows0 in range(1, osp[0] + 1):
        pos = rows0 * inner
        if (pos * taps * cg * 4 > COL_BYTES or pos * m * 4 > OUT_BYTES
                or _band_rows(rows0, attrs, ks[0], sp[0]) * rest * c * 4 > BAND_BYTES):
            break
        most = rows0
    if most == 0:
        return 0
    chunks = -(-osp[0] // most)
    if chunks % 2 and chunks < osp[0]:
        chunks += 1
    return -(-osp[0] // chunks)  # ≤ most


def _depthwise(types: list[TensorType], attrs: dict) -> bool:
    """One input channel a group (`_emit_depthwise`), with fewer than MIN_CHANNELS outputs a group."""
    return types[1].shape[1] == 1 and types[1].shape[0] // attrs["group"] < MIN_CHANNELS


def _patched(types: list[TensorType], attrs: dict, out_type: TensorType) -> bool:
    """At least MIN_CHANNELS output channels a group and one output row in the scratches."""
    return types[1].shape[0] // attrs["group"] >= MIN_CHANNELS and _plan(types, attrs, out_type) > 0


def accepts(types: list[TensorType], attrs: dict, out_type: TensorType) -> bool:
    return out_type.dtype is DType.FX32 and (_depthwise(types, attrs) or _patched(types, attrs, out_type))


def q_accepts(types: list[TensorType], attrs: dict, out_type: TensorType) -> bool:
    """qconv: the patches' path, 8-bit weights (a 4-bit q is held packed: the portable kernel)."""
    return types[1].dtype is DType.I8 and out_type.dtype is DType.FX32 and _patched(types, attrs, out_type)


def work(types: list[TensorType], attrs: dict, out_type: TensorType) -> int:
    return out_type.numel * prod(types[1].shape[1:])


def _weight(w: np.ndarray) -> np.ndarray:
    """w [M, C, *K] as the patches' order: [M, taps · C] (tap-major, channel-minor)."""
    m, c = w.shape[:2]
    return np.ascontiguousarray(np.asarray(w).reshape(m, c, -1).transpose(0, 2, 1)).reshape(m, -1)


def _offsets(q: np.ndarray, zp: np.ndarray | None) -> np.ndarray:
    """qconv's q − zp (|·| ≤ 255) as int32 [M, C, *K], from q as held or in a region table."""
    d = np.asarray(q).view(np.int8).astype(np.int32)
    if zp is not None:
        d -= np.asarray(zp).view(np.int8).astype(np.int32).reshape((-1,) + (1,) * (d.ndim - 1))
    return d


def _group_facts(w: np.ndarray, groups: int) -> dict:
    """matmul_vnni16's facts of every group's weight [M/g, taps · C/g] in the patches' order, when
    all have s16 planes and the same number of them (one kernel for every group); {} otherwise."""
    mg = w.shape[0] // groups
    facts = [matmul_vnni16.weight_facts(_weight(w[gi * mg:(gi + 1) * mg]), min_cols=MIN_CHANNELS)
             for gi in range(groups)]
    return {**facts[0], "groups": groups} if facts[0] and all(f == facts[0] for f in facts) else {}


def _group_planes(facts: dict, w: np.ndarray, groups: int, scales: np.ndarray | None = None) -> np.ndarray:
    """The derived buffer: each group's matmul_vnni16 buffer at a multiple of `_group_bytes`,
    then (qconv) the channels' scales as i64, zero-padded by a block of 16 (a group's padding
    columns read past its own)."""
    m, mg = w.shape[0], w.shape[0] // groups
    kc = int(np.prod(w.shape[1:]))
    step = _group_bytes(mg, kc, facts["planes"])
    size = groups * step + (8 * (m + LANES16) if scales is not None else 0)
    raw = np.zeros(size + 64, np.uint8)
    buf = raw[-raw.ctypes.data % 64:][:size]
    for gi in range(groups):
        planes = matmul_vnni16.derive(facts, _weight(w[gi * mg:(gi + 1) * mg]), min_cols=MIN_CHANNELS)
        buf[gi * step:gi * step + planes.nbytes] = planes.view(np.uint8)
    if scales is not None:
        buf[groups * step:groups * step + 8 * m] = np.asarray(scales).reshape(m).astype(np.int64).view(np.uint8)
    return buf


def facts(graph: Graph, index: int) -> dict:
    """The groups' facts (`_group_facts`) when the weight is an initializer ({} otherwise: the
    portable body)."""
    node = graph.nodes[index]
    if node.inputs[1] not in graph.initializers:
        return {}
    return _group_facts(np.asarray(held(graph.initializers, node.inputs[1])), node.attrs["group"])


def derive(facts: dict, operands: list[np.ndarray | None]) -> np.ndarray:
    return _group_planes(facts, np.asarray(operands[1]), facts["groups"])


def q_facts(graph: Graph, index: int) -> dict:
    """qconv: the groups' facts of q − zp (one s16 plane) with the channels' scales applied in
    the finish ("scaled"), when q, scale and the zero point are initializers; {} otherwise."""
    node = graph.nodes[index]
    zp_t, _ = split_inputs(graph.input_types(node), 1)
    weight = node.inputs[1:3] + node.inputs[3:4] * (zp_t is not None)
    if any(v not in graph.initializers for v in weight):
        return {}
    q = held(graph.initializers, weight[0])
    d = _offsets(q, held(graph.initializers, weight[2]) if zp_t is not None else None)
    f = _group_facts(d, node.attrs["group"])
    return {**f, "scaled": True, "zp": zp_t is not None} if f else {}


def q_derive(facts: dict, operands: list[np.ndarray | None]) -> np.ndarray:
    d = _offsets(operands[1], operands[3] if facts["zp"] else None)
    return _group_planes(facts, d, facts["groups"], scales=operands[2])


def _portable(b: ir.IRBuilder, op: str, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
              out_type: TensorType, part: ir.Value, parts: ir.Value) -> None:
    """The portable kernel of `op`: whole (parts ≤ 1), else over the part's flat output
    elements (its ranged form, kernels/_ir.py part_range)."""
    whole, ranged, done = (b.append_basic_block(f"conv.{n}") for n in ("whole", "ranged", "done"))
    b.cbranch(b.icmp_unsigned("<=", parts, c32(1)), whole, ranged)
    b.position_at_end(whole)
    KERNELS[op](b, out, args, types, attrs, out_type)
    b.branch(done)
    b.position_at_end(ranged)
    setattr(b.function, RANGE_ATTR, part_range(b, out_type.numel, 1, part, parts))
    try:
        KERNELS[op](b, out, args, types, attrs, out_type)
    finally:
        delattr(b.function, RANGE_ATTR)
    b.branch(done)
    b.position_at_end(done)


@host_kernel("conv", accepts, work, facts, derive)
def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType, part: ir.Value, parts: ir.Value, facts: dict | None = None) -> None:
    n_ops = len(types)
    if _depthwise(types, attrs):
        return _emit_depthwise(b, out, args[:n_ops], types, attrs, out_type, part, parts)
    if not (facts or {}).get("derived") or not matmul_vnni16.available():
        return _portable(b, "conv", out, args[:n_ops], types, attrs, out_type, part, parts)
    prod_frac = types[0].frac + types[1].frac
    bias_shift = prod_frac - types[2].frac if n_ops == 3 else 0
    _patches_product(b, out, args[0], args[n_ops], args[2] if n_ops == 3 else None, bias_shift,
                     prod_frac - out_type.frac, types, attrs, out_type, part, parts, facts)


@host_kernel("qconv", q_accepts, work, q_facts, q_derive)
def emit_q(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
           out_type: TensorType, part: ir.Value, parts: ir.Value, facts: dict | None = None) -> None:
    """qconv: conv's path over the one plane of q − zp, each channel's sum times its scale
    (module docstring; ops/qconv.py: exactly conv's semantics with the weight (q − zp)·scale)."""
    n_ops = len(types)
    if not (facts or {}).get("derived") or not matmul_vnni16.available():
        return _portable(b, "qconv", out, args[:n_ops], types, attrs, out_type, part, parts)
    _, bias_t = split_inputs(types, 1)
    prod_frac = types[0].frac + types[2].frac  # w's fractional bits are the scale's
    bias_shift = prod_frac - bias_t.frac if bias_t is not None else 0
    g = attrs["group"]
    step = _group_bytes(types[1].shape[0] // g, prod(types[1].shape[1:]), facts["planes"])
    scales = b.gep(args[n_ops], [c32(g * step // 8)], source_etype=I64)  # after the groups' planes
    _patches_product(b, out, args[0], args[n_ops], args[n_ops - 1] if bias_t is not None else None, bias_shift,
                     prod_frac - out_type.frac, types, attrs, out_type, part, parts, facts, scales)


def _patches_product(b: ir.IRBuilder, out: ir.Value, x_arg: ir.Value, d_arg: ir.Value, bias: ir.Value | None,
                     bias_shift: int, shift: int, types: list[TensorType], attrs: dict, out_type: TensorType,
                     part: ir.Value, parts: ir.Value, facts: dict, scales: ir.Value | None = None) -> None:
    """The chunks of the module docstring, for the part `part` of `parts`."""
    b.function.attributes.add("noinline")  # its scratches stay in its own frame (module docstring)
    c, m, sp, ks, osp = _geometry(types, out_type)
    r = len(sp)
    st, dl, pads = attrs["strides"], attrs["dilations"], attrs["pads"]
    inner, taps, rest = prod(osp[1:]), prod(ks), prod(sp[1:])
    groups = attrs["group"]
    cg, mg = c // groups, m // groups
    kc = taps * cg  # a group's reduction
    step = _group_bytes(mg, kc, facts["planes"])  # a group's planes in the derived buffer
    rows0 = _plan(types, attrs, out_type)
    band_max = _band_rows(rows0, attrs, ks[0], sp[0])
    chunks = -(-osp[0] // rows0)
    images = types[0].shape[0]
    col = matmul_vnni16._scratch(b, "conv.col", I32, rows0 * inner * kc)
    band = matmul_vnni16._scratch(b, "conv.band", I32, band_max * rest * c)
    outs = matmul_vnni16._scratch(b, "conv.out", I32, rows0 * inner * m)

    vp = V16.as_pointer()

    def at(base: ir.Value, index: ir.Value) -> ir.Value:
        """&scratch[index] as an i32 pointer."""
        return b.bitcast(b.gep(base, [c32(0), index], source_etype=base.allocated_type), I32.as_pointer())

    def copy_channels(dst: ir.Value, src: ir.Value | None) -> None:
        """A group's cg elements from src (a pointer into the band) to dst, or zeros when src is None."""
        for v in range(cg // LANES16):
            val = ir.Constant(V16, None) if src is None else b.load(
                b.bitcast(b.gep(src, [c32(v * LANES16)], source_etype=I32), vp), typ=V16, align=4)
            b.store(val, b.bitcast(b.gep(dst, [c32(v * LANES16)], source_etype=I32), vp), align=4)
        for e in range(cg - cg % LANES16, cg):
            val = c32(0) if src is None else b.load(b.gep(src, [c32(e)], source_etype=I32), typ=I32)
            b.store(val, b.gep(dst, [c32(e)], source_etype=I32))

    lo, hi = part_range(b, images * chunks, 1, part, parts)
    with loop(b, b.sub(hi, lo), "conv.chunk", start=None) as u:
        unit = b.add(lo, u)
        ni, ci = b.udiv(unit, c32(chunks)), b.urem(unit, c32(chunks))
        o0a = b.mul(ci, c32(rows0))
        left = b.sub(c32(osp[0]), o0a)
        rows = b.select(b.icmp_signed("<", left, c32(rows0)), left, c32(rows0))
        lo0 = b.sub(b.mul(o0a, c32(st[0])), c32(pads[0]))  # the band's first row (may be < 0)
        first = b.select(b.icmp_signed("<", lo0, c32(0)), c32(0), lo0)
        end = b.add(lo0, b.add(b.mul(b.sub(rows, c32(1)), c32(st[0])), c32((ks[0] - 1) * dl[0] + 1)))
        end = b.select(b.icmp_signed(">", end, c32(sp[0])), c32(sp[0]), end)
        count = b.select(b.icmp_signed(">", end, first), b.sub(end, first), c32(0))
        # 1. the band, channels-last: xb[e, c] = x[ni, c, first·rest + e] for the band's
        # elements e = (i0 − first)·rest + j: a [C, E] → [E, C] transpose
        src0 = b.add(b.mul(ni, c32(c * sp[0] * rest)), b.mul(first, c32(rest)))
        _transpose(b, c, b.mul(count, c32(rest)),
                   lambda ch, e: b.gep(x_arg, [b.add(src0, b.add(b.mul(ch, c32(sp[0] * rest)), e))], source_etype=I32),
                   lambda e, ch: at(band, b.add(b.mul(e, c32(c)), ch)), "conv.b")
        positions = b.mul(rows, c32(inner))
        obase = b.add(b.mul(ni, c32(m * osp[0] * inner)), b.mul(o0a, c32(inner)))
        with loop(b, groups, "conv.g") as gi:
            # 2. the group's patches: row q = (o0 − o0a)·inner + lin(o_rest), column t·cg + c
            with loop(b, rows, "conv.pr") as orow:
                o0 = b.add(o0a, orow)
                with nest(b, osp[1:], "conv.po") as orest:
                    oidx = [o0, *orest]
                    q = b.add(b.mul(orow, c32(inner)), _linear(b, orest, osp[1:]))
                    starts = [b.sub(b.mul(oidx[d], c32(st[d])), c32(pads[d])) for d in range(r)]
                    with nest(b, ks, "conv.pt") as kidx:
                        coords = [b.add(starts[d], b.mul(kidx[d], c32(dl[d]))) for d in range(r)]
                        inside = b.icmp_unsigned("<", coords[0], c32(sp[0]))  # unsigned: both ends
                        for d in range(1, r):
                            inside = b.and_(inside, b.icmp_unsigned("<", coords[d], c32(sp[d])))
                        t = _linear(b, kidx, ks)
                        dst = at(col, b.add(b.mul(q, c32(kc)), b.mul(t, c32(cg))))
                        with b.if_else(inside) as (then, otherwise):
                            with then:
                                # inside: first ≤ coords[0] < end (the band's rows)
                                row = b.add(b.mul(b.sub(coords[0], first), c32(rest)),
                                            _linear(b, coords[1:], sp[1:]))
                                copy_channels(dst, at(band, b.add(b.mul(row, c32(c)), b.mul(gi, c32(cg)))))
                            with otherwise:
                                copy_channels(dst, None)
            # 3. the product with the group's planes, finished in [positions, mg]
            m0 = b.mul(gi, c32(mg))  # the group's first output channel
            planes = b.gep(d_arg, [b.mul(gi, c32(step))], source_etype=ir.IntType(8))
            matmul_vnni16.emit(b, at(col, c32(0)), planes, at(outs, c32(0)),
                               b.gep(bias, [m0], source_etype=I32) if bias is not None else None, positions, kc, mg,
                               facts, c32(0), c32(mg), shift, bias_shift,
                               b.gep(scales, [m0], source_etype=I64) if scales is not None else None)
            # 4. into the output's [n, m, positions] layout: a [positions, mg] → [mg, positions] transpose
            _transpose(b, positions, mg, lambda q, mm: at(outs, b.add(b.mul(q, c32(mg)), mm)),
                       lambda mm, q: b.gep(out, [b.add(obase, b.add(b.mul(b.add(m0, mm), c32(osp[0] * inner)), q))],
                                           source_etype=I32), "conv.o")


def _emit_depthwise(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
                    out_type: TensorType, part: ir.Value, parts: ir.Value) -> None:
    """A depthwise conv (one input channel a group): per output row (image, channel, all spatial
    indices but the last) eight outputs along the last dimension at a time in <8 x i64> lanes,
    per tap one masked load (stride 1) or gather of their inputs times the tap's weight (sext i32 · sext
    i32: `vpmuldq`, exact), summed in wrap-around i64 as the op; lanes whose tap lies in the
    padding, or past the row, load 0. Then the bias, the rounding shift and the counted
    saturation of kernels/conv.py's finish, and a masked store. Parts: ranges of output rows."""
    xt, wt = types[0], types[1]
    n, c = xt.shape[:2]
    m = wt.shape[0]
    mult = m // attrs["group"]  # output channels a group (of one input channel)
    sp, ks, osp = xt.shape[2:], wt.shape[2:], out_type.shape[2:]
    r = len(sp)
    st, dl, pads = attrs["strides"], attrs["dilations"], attrs["pads"]
    prod_frac = xt.frac + wt.frac
    shift = prod_frac - out_type.frac
    bias = args[2] if len(types) == 3 else None
    lanes = 8
    vi64, vi32, v1 = ir.VectorType(I64, lanes), ir.VectorType(I32, lanes), ir.VectorType(ir.IntType(1), lanes)
    vptr = ir.VectorType(PTR, lanes)
    gather = intrinsic(b, "llvm.masked.gather.v8i32.v8p0", vi32, [vptr, I32, v1, vi32])
    mload = intrinsic(b, "llvm.masked.load.v8i32.p0", vi32, [PTR, I32, v1, vi32])
    mstore = intrinsic(b, "llvm.masked.store.v8i32.p0", ir.VoidType(), [vi32, PTR, I32, v1])
    popcount = intrinsic(b, f"llvm.ctpop.i{lanes}", ir.IntType(lanes), [ir.IntType(lanes)])
    lane_ids = ir.Constant(vi32, list(range(lanes)))

    def splat(v: ir.Value, ty: ir.VectorType) -> ir.Value:
        return matmul_vnni16._splat(b, v, ty)

    x_ptrs = b.shuffle_vector(b.insert_element(ir.Constant(vptr, ir.Undefined), args[0], c32(0)),
                              ir.Constant(vptr, ir.Undefined), ir.Constant(vi32, [0] * lanes))  # x, in every lane
    outer = osp[:-1]
    rows = n * m * prod(outer)
    lo, hi = part_range(b, rows, 1, part, parts)
    acc = entry_alloca(b, vi64, name="dw.acc")
    with loop(b, b.sub(hi, lo), "dw.row") as u:
        ni, mi, *oo = flat_index(b, b.add(lo, u), (n, m, *outer))
        ci = b.udiv(mi, c32(mult))
        xbase = b.mul(b.add(b.mul(ni, c32(c)), ci), c32(prod(sp)))
        obase = b.mul(b.add(b.mul(ni, c32(m)), mi), c32(prod(osp)))
        obase = b.add(obase, b.mul(_linear(b, oo, outer), c32(osp[-1])))
        bias_v = (b.shl(b.sext(b.load(b.gep(bias, [mi], source_etype=I32), typ=I32), I64),
                      c64(prod_frac - types[2].frac)) if bias is not None else c64(0))
        with loop(b, -(-osp[-1] // lanes), "dw.v") as vb:
            o_last = b.add(splat(b.mul(vb, c32(lanes)), vi32), lane_ids)  # the eight outputs' last index
            live = b.icmp_signed("<", o_last, splat(c32(osp[-1]), vi32))
            b.store(splat(bias_v, vi64), acc)
            with nest(b, ks, "dw.t") as kidx:
                coords = [b.add(b.sub(b.mul(oo[d], c32(st[d])), c32(pads[d])), b.mul(kidx[d], c32(dl[d])))
                          for d in range(r - 1)]
                inside = ir.Constant(ir.IntType(1), 1)
                for d in range(r - 1):
                    inside = b.and_(inside, b.icmp_unsigned("<", coords[d], c32(sp[d])))
                with b.if_then(inside):  # a tap row in the padding adds nothing
                    tap = b.sub(b.mul(kidx[-1], c32(dl[-1])), c32(pads[r - 1]))  # the tap's offset along the row
                    last = b.add(b.mul(o_last, splat(c32(st[-1]), vi32)), splat(tap, vi32))
                    ok = b.and_(live, b.icmp_unsigned("<", last, splat(c32(sp[-1]), vi32)))
                    row = b.add(xbase, b.mul(_linear(b, coords, sp[:-1]), c32(sp[-1]))) if r > 1 else xbase
                    if st[-1] == 1:  # consecutive inputs: a masked load (its masked lanes are not read)
                        first_in = b.add(b.add(row, b.mul(vb, c32(lanes))), tap)
                        xv = b.call(mload, [b.gep(args[0], [first_in], source_etype=I32), c32(4), ok,
                                            ir.Constant(vi32, None)])
                    else:
                        at = b.add(splat(row, vi32), b.select(ok, last, ir.Constant(vi32, None)))  # in bounds
                        xv = b.call(gather, [b.gep(x_ptrs, [at], source_etype=I32), c32(4), ok,
                                             ir.Constant(vi32, None)])
                    w = b.load(b.gep(args[1], [b.add(b.mul(mi, c32(prod(ks))), _linear(b, kidx, ks))],
                                     source_etype=I32), typ=I32)
                    prod_v = b.mul(b.sext(xv, vi64), splat(b.sext(w, I64), vi64))
                    b.store(b.add(b.load(acc, typ=vi64), prod_v), acc)
            total = b.load(acc, typ=vi64)
            if shift:
                total = b.ashr(b.add(total, splat(c64(1 << (shift - 1)), vi64)), splat(c64(shift), vi64))
            lo32, hi32 = splat(c64(fp.INT32_MIN), vi64), splat(c64(fp.INT32_MAX), vi64)
            clamped = b.select(b.icmp_signed("<", total, lo32), lo32, total)
            clamped = b.select(b.icmp_signed(">", clamped, hi32), hi32, clamped)
            if counting(b):  # as saturate32: the live outputs the clamp changed
                flags = b.bitcast(b.and_(b.icmp_signed("!=", clamped, total), live), ir.IntType(lanes))
                slot = counter_slot(b)
                b.store(b.add(b.load(slot, typ=I32), b.zext(b.call(popcount, [flags]), I32)), slot)
            dst = b.gep(out, [b.add(obase, b.mul(vb, c32(lanes)))], source_etype=I32)
            b.call(mstore, [b.trunc(clamped, vi32), dst, c32(4), live])


def _transpose(b: ir.IRBuilder, rows: int | ir.Value, cols: int | ir.Value,
               src: Callable[[ir.Value, ir.Value], ir.Value], dst: Callable[[ir.Value, ir.Value], ir.Value],
               name: str) -> None:
    """*dst(j, i) = *src(i, j) for i < rows, j < cols (i32 pointers; src(i, j)..src(i, j + 15) and
    dst(j, i)..dst(j, i + 15) consecutive): 16 × 16 blocks transposed in registers
    (`_transpose16`), the rows and columns past the last whole block element by element. Element
    by element, LLVM's vectorisation of the loop scattered its stores."""
    vp = V16.as_pointer()
    rows, cols = (c32(v) if isinstance(v, int) else v for v in (rows, cols))
    rb, cb = b.udiv(rows, c32(LANES16)), b.udiv(cols, c32(LANES16))

    def scalar(i: ir.Value, j: ir.Value) -> None:
        b.store(b.load(src(i, j), typ=I32), dst(j, i))

    with loop(b, rb, f"{name}.ib") as ib:
        i0 = b.mul(ib, c32(LANES16))
        with loop(b, cb, f"{name}.jb") as jb:
            j0 = b.mul(jb, c32(LANES16))
            block = [b.load(b.bitcast(src(b.add(i0, c32(t)), j0), vp), typ=V16, align=4) for t in range(LANES16)]
            for u, vec in enumerate(_transpose16(b, block)):
                b.store(vec, b.bitcast(dst(b.add(j0, c32(u)), i0), vp), align=4)
        j_rest = b.mul(cb, c32(LANES16))
        with loop(b, b.sub(cols, j_rest), f"{name}.jt") as jt, loop(b, LANES16, f"{name}.jti") as ii:
            scalar(b.add(i0, ii), b.add(j_rest, jt))
    i_rest = b.mul(rb, c32(LANES16))
    with loop(b, b.sub(rows, i_rest), f"{name}.it") as it, loop(b, cols, f"{name}.itj") as jj:
        scalar(b.add(i_rest, it), jj)


def _transpose16(b: ir.IRBuilder, rows: list[ir.Value]) -> list[ir.Value]:
    """The columns of a 16 × 16 i32 block given as 16 row vectors: four stages of two-input
    shuffles, stage h exchanging the h-lane blocks of rows i and i + h (a block transpose,
    then the same inside each half)."""
    rows = list(rows)
    h = LANES16 // 2
    while h:
        lo_mask = ir.Constant(V16, [j if not j & h else LANES16 + j - h for j in range(LANES16)])
        hi_mask = ir.Constant(V16, [j + h if not j & h else LANES16 + j for j in range(LANES16)])
        for i in range(LANES16):
            if not i & h:
                a, c = rows[i], rows[i + h]
                rows[i], rows[i + h] = b.shuffle_vector(a, c, lo_mask), b.shuffle_vector(a, c, hi_mask)
        h //= 2
    return rows


def _linear(b: ir.IRBuilder, idx: list[ir.Value], shape) -> ir.Value:
    """The row-major flat index of idx in `shape` (i32)."""
    acc = c32(0)
    for i, d in zip(idx, shape, strict=True):
        acc = b.add(b.mul(acc, c32(d)), i)
    return acc
