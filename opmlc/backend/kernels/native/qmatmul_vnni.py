"""Host kernel of opmlc/ir/ops/qmatmul.py on AVX-512 VNNI (`vpdpbusd`: u8 × s8 → i32, four
products a lane): int32 activations split into byte planes against the 8-bit weights as they
are stored (4-bit weights unpacked to bytes), exact by the bounds below.

Only on a host whose CPU has avx512vnni (`has_vnni`; the native object is keyed by the CPU
description, so a build never runs this code elsewhere); qmatmul.py's double/i64 kernel
otherwise.

Byte planes. Every int32 x is x = b0 + 2^8·b1 + 2^16·b2 + 2^24·s3 with b0, b1, b2 its three
low bytes read unsigned (0..255) and s3 its top byte read signed (−128..127): exact for every
int32, INT32_MIN and INT32_MAX included. Before the products, a part copies its rows of x once
into a stack scratch: the four planes of each chunk of the reduction (64 elements for i8; 128
for i4, even elements first, then odd, the order the packed nibbles unpack in), zero past K.
Then, per chunk and weight row (loaded once for all the tile's rows of x):

- i8, w = q (s8): planes 0–2 `vpdpbusd(b_p, q)`; the top plane, signed, is the s8 operand
  against q + 128 = q ^ 0x80 as the u8 one: Σ (q + 128)·s3 = Σ q·s3 + 128·Σ s3.
- i4, w = q + 8 = nibble ^ 8 in 0..15 (a valid u8 and s8): planes 0–2 `vpdpbusd(b_p, w)`, the
  top plane `vpdpbusd(w, s3)`: Σ x·w = Σ x·q + 8·Σ x.

So per block b and row of x, the planes recombined, Σ_p 2^(8p)·acc_p = Σ_{k∈b} x_k·q_k + Y_b
with Y_b = 2^31·Σ_{k∈b} s3_k (i8) or 8·Σ_{k∈b} x_k (i4): Y_b depends on x only, so the
scratch holds it too (and Σ_{k∈b} x_k with a zero point), and each output subtracts
Σ_b scale_b·(Y_b + zp_b·Σ_{k∈b} x_k) once, after its products (a loop over the blocks).

Bounds (i32 lanes; every later step is wrap-around i64, the op's own ring). One `vpdpbusd`
adds four products to a lane: |b_p·q| ≤ 255·128 and |(q + 128)·s3| ≤ 255·128 (i8), |b_p·w| ≤
255·15 and |w·s3| ≤ 15·128 (i4), so |Δ| ≤ 4·255·128 = 130560 < 2^17. A lane takes at most
32 of them (FLUSH chunks, two per chunk for i4) before it is widened: |acc_p| ≤ 32·2^17 =
2^22, and lo = acc_0 + 2^8·acc_1, hi = acc_2 + 2^8·acc_3 stay below 2^22 + 2^30 < 2^31: exact
in i32. Each lane's four or eight elements lie in one block (the block size is a multiple of
4, of 8 for i4; a chunk holds whole blocks or a block whole chunks), so lane by lane, with s
its block's scale: a block of at most FLUSH chunks adds lo·s + 2^16·hi·s to the lane's i64
total directly (products of two exact i32s: `vpmuldq` on the even and the odd lanes); a longer
block first sums lo + 2^16·hi over its runs in i64 and multiplies once at its end. The lanes
are added up at the end. No vpdpbusd saturates (that is `vpdpbusds`, not used here).

Parts (threads): ranges of output columns (weight rows), each thread streaming its own weights;
every part splits the same x into planes itself (M·K work against its N_part·M·K).
"""

from __future__ import annotations

from functools import cache
from math import prod

from llvmlite import ir

from opmlc.backend.kernels._ir import (
    I8,
    I32,
    I64,
    c32,
    c64,
    entry_alloca,
    load,
    loop,
    sext64,
)
from opmlc.backend.kernels._qweight import finish_output, load_q, operands
from opmlc.backend.kernels.native._vec import V16, VI64, hsum, intrinsic, part_range
from opmlc.ir.ops._qweight import n_blocks, split_inputs
from opmlc.ir.types import DType, TensorType

V8I32 = ir.VectorType(I32, 8)
VB = ir.VectorType(I8, 64)
LANE_K = {DType.I8: 4, DType.I4: 8}  # reduction elements of one i32 lane of a chunk
CHUNK = {DType.I8: 64, DType.I4: 128}  # reduction elements of one 64-byte weight load
FLUSH = 16  # chunks summed in i32 before widening: ≤ 32 vpdpbusd per lane (module docstring)
SCRATCH = 160 << 10  # bytes of stack a part's planes may take (a thread's stack is ≥ 2 MiB)
TILES = {2: (3, 1), 1: (4, 1)}  # rows of x → weight rows per tile, then one at a time
GRAIN = 12  # part boundaries: a multiple of every tile's width


ENABLED: bool | None = None  # None: when the host has VNNI; tests set False to run qmatmul.py's kernel


@cache
def has_vnni() -> bool:
    """Whether this host's CPU has AVX-512 VNNI (and the AVX-512 BW the byte shuffles need)."""
    import llvmlite.binding as llvm

    from opmlc.backend.target import host_target_machine

    host_target_machine()  # initialises the native target
    f = llvm.get_host_cpu_features()
    return bool(f.get("avx512vnni") and f.get("avx512bw") and f.get("avx512f"))


def _block(k: int, bs: int, dtype: DType) -> int:
    """The block size the kernel works with: one block of whole chunks when bs ≥ K (one scale
    per output channel, any K), else bs itself."""
    return -(-k // CHUNK[dtype]) * CHUNK[dtype] if bs >= k else bs


def _layout(k: int, bs: int, dtype: DType, zp: bool) -> tuple[int, int, int, int]:
    """(chunks, groups, row stride in bytes, group width) of one row's scratch."""
    ch = CHUNK[dtype]
    nch = -(-k // ch)
    bs = _block(k, bs, dtype)
    gw = max(bs, ch)
    ng = -(-k // gw)
    stride = nch * 4 * ch + 8 * n_blocks(k, bs) * (2 if zp else 1)
    return nch, ng, -(-stride // 64) * 64, gw


def accepts(types: list[TensorType], attrs: dict, out_type: TensorType) -> bool:
    xt, qt = types[0], types[1]
    k = xt.shape[-1]
    if qt.dtype not in LANE_K or k == 0 or not (has_vnni() if ENABLED is None else ENABLED):
        return False
    bs, ch = _block(k, attrs["block_size"], qt.dtype), CHUNK[qt.dtype]
    zp, _ = split_inputs(types, 1)
    return (bs % LANE_K[qt.dtype] == 0 and (bs % ch == 0 or ch % bs == 0) and (qt.dtype is DType.I8 or k % 2 == 0)
            and _layout(k, bs, qt.dtype, zp is not None)[2] <= SCRATCH)


def emit(b: ir.IRBuilder, out: ir.Value, args: list[ir.Value], types: list[TensorType], attrs: dict,
         out_type: TensorType, part: ir.Value, parts: ir.Value) -> None:
    xt, qt, st = types[:3]
    x, q, scale, zp, bias, bias_t = operands(args, types)
    dt = qt.dtype
    i4 = dt is DType.I4
    k = xt.shape[-1]
    m = prod(xt.shape[:-1])
    n = qt.shape[0]
    bs = _block(k, attrs["block_size"], dt)
    nb = n_blocks(k, bs)  # the op's block count (bs ≥ K: one)
    ch = CHUNK[dt]
    nch, ng, stride, gw = _layout(k, bs, dt, zp is not None)
    cpg = gw // ch  # chunks per group
    bpg = gw // bs  # blocks per group
    halves = 2 if i4 else 1  # 64-byte plane vectors per chunk and plane
    prod_frac = xt.frac + st.frac
    shift = prod_frac - out_type.frac
    row_group = max(1, min(m, SCRATCH // stride))
    scratch = entry_alloca(b, ir.ArrayType(I8, row_group * stride), name="planes")
    scratch.align = 64
    dp = intrinsic(b, "llvm.x86.avx512.vpdpbusd.512", V16, [V16, V16, V16])
    lo, hi = part_range(b, n, GRAIN, part, parts)

    def at(offset: ir.Value) -> ir.Value:
        return b.gep(scratch, [c32(0), offset], source_etype=scratch.allocated_type)

    def put(v: ir.Value, offset: ir.Value, align: int) -> None:
        b.store(v, b.bitcast(at(offset), v.type.as_pointer()), align=align)

    # ---- x → planes and Y (and Σx per block with a zero point), rows r0.. of the row group
    def prep(r0: ir.Value, rows: ir.Value) -> None:
        zero = ir.Constant(ir.VectorType(I8, ch), None)
        order = list(range(ch)) if not i4 else [2 * t for t in range(64)] + [2 * t + 1 for t in range(64)]
        with loop(b, rows, "pr") as r:
            row_x = b.mul(b.add(r0, r), c32(k))
            base = b.mul(r, c32(stride))
            vt = ir.VectorType(I32, ch)

            def planes_of(v: ir.Value, c: ir.Value) -> None:
                v = b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, ch), order)) if i4 else v
                for p in range(4):
                    byte = b.trunc(b.lshr(v, ir.Constant(vt, [8 * p] * ch)), ir.VectorType(I8, ch))
                    put(byte, b.add(base, b.mul(b.add(b.mul(c, c32(4)), c32(p)), c32(ch))), 64)

            full = k // ch
            if full:
                with loop(b, full, "pc") as c:
                    planes_of(b.load(b.gep(x, [b.add(row_x, b.mul(c, c32(ch)))], source_etype=I32), typ=vt, align=4), c)
            if k % ch:  # the last chunk: zeros, then its elements one by one
                for p in range(4):
                    put(zero, b.add(base, c32((full * 4 + p) * ch)), 64)
                with loop(b, k % ch, "pt") as e:
                    xv = load(b, x, b.add(row_x, b.add(c32(full * ch), e)))
                    pos = b.add(b.mul(b.and_(e, c32(1)), c32(64)), b.lshr(e, c32(1))) if i4 else e
                    for p in range(4):
                        byte = b.trunc(b.lshr(xv, c32(8 * p)), I8)
                        put(byte, b.add(base, b.add(c32((full * 4 + p) * ch), pos)), 1)
            ybase = b.add(base, c32(nch * 4 * ch))
            with loop(b, nb, "pb") as blk:
                k0 = b.mul(blk, c32(bs))
                count = b.select(b.icmp_unsigned(">", b.add(k0, c32(bs)), c32(k)), b.sub(c32(k), k0), c32(bs))
                sx, s3 = entry_alloca(b, I64, name="sx"), entry_alloca(b, I64, name="s3")
                b.store(c64(0), sx)
                b.store(c64(0), s3)
                with loop(b, count, "pk") as e:
                    xv = load(b, x, b.add(row_x, b.add(k0, e)))
                    b.store(b.add(b.load(sx, typ=I64), sext64(b, xv)), sx)
                    if not i4:
                        b.store(b.add(b.load(s3, typ=I64), sext64(b, b.ashr(xv, c32(24)))), s3)
                sxv = b.load(sx, typ=I64)
                y = b.shl(sxv, c64(3)) if i4 else b.shl(b.load(s3, typ=I64), c64(31))
                put(y, b.add(ybase, b.mul(blk, c32(8))), 8)
                if zp is not None:
                    put(sxv, b.add(ybase, b.add(c32(nb * 8), b.mul(blk, c32(8)))), 8)

    # ---- the products
    accs = [entry_alloca(b, V16, name=f"acc{t}") for t in range(4 * 2 * 3)]
    inner = [entry_alloca(b, VI64, name=f"inner{t}") for t in range(2 * 2 * 3)]
    total = [entry_alloca(b, VI64, name=f"total{t}") for t in range(2 * 2 * 3)]

    def as16(v: ir.Value) -> ir.Value:
        return b.bitcast(v, V16)

    def weight_vectors(j: ir.Value, c: ir.Value, masked: int, ahead: int) -> list[tuple[ir.Value, ir.Value]]:
        """Weight row j's chunk c as (u8 operand, s8 operand) pairs against planes 0–2 and the top
        plane: [(q, q ^ 0x80)] for i8, [(w_even, w_even), (w_odd, w_odd)] for i4. The same bytes
        of row j + `ahead` (the next tile's) are prefetched: a hint, which never faults, even
        past the last row."""
        rb = k // 2 if i4 else k
        ptr = b.gep(q, [b.add(b.mul(j, c32(rb)), b.mul(c, c32(64)))], source_etype=I8)
        if ahead:
            pf = intrinsic(b, "llvm.prefetch.p0", ir.VoidType(), [ir.PointerType(), I32, I32, I32])
            b.call(pf, [b.gep(ptr, [c32(ahead * rb)], source_etype=I8), c32(0), c32(3), c32(1)])
        if masked:  # the last chunk: bytes past the row's end are not read (they may lie past the buffer)
            fn = intrinsic(b, "llvm.masked.load.v64i8.p0", VB,
                            [ir.PointerType(), I32, ir.VectorType(ir.IntType(1), 64), VB])
            mask = ir.Constant(ir.VectorType(ir.IntType(1), 64), [int(t < masked) for t in range(64)])
            raw = b.call(fn, [ptr, c32(1), mask, ir.Constant(VB, None)])
        else:
            raw = b.load(ptr, typ=VB, align=1)
        if not i4:
            return [(as16(raw), as16(b.xor(raw, ir.Constant(VB, [0x80] * 64))))]
        flip = b.xor(raw, ir.Constant(VB, [0x88] * 64))
        even = as16(b.lshr(flip, ir.Constant(VB, [4] * 64)))
        odd = as16(b.and_(flip, ir.Constant(VB, [0x0F] * 64)))
        return [(even, even), (odd, odd)]

    def chunk_step(rows: int, cols: int, rbase: list[ir.Value], js: list[ir.Value], c: ir.Value, masked: int) -> None:
        ws = [weight_vectors(j, c, masked, cols if rows == 1 else 0) for j in js]
        for r in range(rows):
            for hv in range(halves):
                pl = [as16(b.load(at(b.add(rbase[r], b.add(b.mul(c, c32(4 * ch)), c32(p * ch + 64 * hv)))),
                                  typ=VB, align=64)) for p in range(4)]
                for cc in range(cols):
                    w, w_top = ws[cc][hv]
                    for p in range(4):
                        slot = accs[(r * cols + cc) * 4 + p]
                        a, s = (pl[p], w) if p < 3 else (w_top, pl[3])
                        b.store(b.call(dp, [b.load(slot, typ=V16), a, s]), slot)

    def half(v: ir.Value, h: int) -> ir.Value:
        return b.sext(b.shuffle_vector(v, v, ir.Constant(V8I32, list(range(8 * h, 8 * h + 8)))), VI64)

    def widen(rows: int, cols: int) -> None:
        """inner += lo + 2^16·hi, the planes' i32 sums recombined (module docstring)."""
        eight = ir.Constant(V16, [8] * 16)
        for t in range(rows * cols):
            a = [b.load(accs[4 * t + p], typ=V16) for p in range(4)]
            lo32 = b.add(a[0], b.shl(a[1], eight))
            hi32 = b.add(a[2], b.shl(a[3], eight))
            for h in range(2):
                v = b.add(half(lo32, h), b.shl(half(hi32, h), ir.Constant(VI64, [16] * 8)))
                b.store(b.add(b.load(inner[2 * t + h], typ=VI64), v), inner[2 * t + h])

    def scales(j: ir.Value, g: ir.Value, tail: bool) -> ir.Value:
        """The scale of each i32 lane's block in group g of weight row j (<16 x i32>)."""
        row = b.mul(j, c32(nb))
        if bpg == 1:
            s = b.insert_element(ir.Constant(V16, ir.Undefined), load(b, scale, b.add(row, g)), c32(0))
            v = b.shuffle_vector(s, s, ir.Constant(V16, [0] * 16))
        else:
            first = b.mul(g, c32(bpg))
            vb = ir.Constant(ir.VectorType(I32, bpg), ir.Undefined)
            for t in range(bpg):  # the tail group's blocks past nb (lanes of zeros) read the last one
                idx = c32(min(t, nb - 1 - (ng - 1) * bpg)) if tail else c32(t)
                vb = b.insert_element(vb, load(b, scale, b.add(row, b.add(first, idx))), c32(t))
            lane_block = [(t * LANE_K[dt]) // bs for t in range(16)]
            v = b.shuffle_vector(vb, vb, ir.Constant(V16, lane_block))
        return v

    def lanes64(v: ir.Value) -> tuple[ir.Value, ir.Value]:
        """A <16 x i32>'s even and odd lanes, each sign-extended in an i64 lane (what `vpmuldq` reads)."""
        w = b.bitcast(v, VI64)
        thirty_two = ir.Constant(VI64, [32] * 8)
        return b.ashr(b.shl(w, thirty_two), thirty_two), b.ashr(w, thirty_two)

    def scale_direct(rows: int, cols: int, svs: list[ir.Value]) -> None:
        """One i32 run made the whole group: total += lo·s + 2^16·hi·s, lane by lane, products of
        two exact i32s in i64 (`vpmuldq` on the even and the odd lanes)."""
        eight = ir.Constant(V16, [8] * 16)
        sixteen = ir.Constant(VI64, [16] * 8)
        for cc in range(cols):
            s_eo = lanes64(svs[cc])
            for r in range(rows):
                t = r * cols + cc
                a = [b.load(accs[4 * t + p], typ=V16) for p in range(4)]
                lo_eo = lanes64(b.add(a[0], b.shl(a[1], eight)))
                hi_eo = lanes64(b.add(a[2], b.shl(a[3], eight)))
                for h in range(2):
                    v = b.add(b.mul(lo_eo[h], s_eo[h]), b.shl(b.mul(hi_eo[h], s_eo[h]), sixteen))
                    b.store(b.add(b.load(total[2 * t + h], typ=VI64), v), total[2 * t + h])

    def tile(rows: int, cols: int, i0: ir.Value, rg0: ir.Value, j0: ir.Value) -> None:
        js = [b.add(j0, c32(cc)) for cc in range(cols)]
        rbase = [b.mul(b.add(b.sub(i0, rg0), c32(r)), c32(stride)) for r in range(rows)]
        for t in range(2 * rows * cols):
            b.store(ir.Constant(VI64, None), total[t])

        def group(g: ir.Value, chunks: int, masked: int, tail: bool) -> None:
            c0 = b.mul(g, c32(cpg))
            if chunks <= FLUSH:  # one i32 run: scaled straight from i32
                for t in range(4 * rows * cols):
                    b.store(ir.Constant(V16, None), accs[t])
                plain = chunks - (1 if masked else 0)
                if plain:
                    with loop(b, plain, "kc") as c:
                        chunk_step(rows, cols, rbase, js, b.add(c0, c), 0)
                if masked:
                    chunk_step(rows, cols, rbase, js, b.add(c0, c32(plain)), masked)
                scale_direct(rows, cols, [scales(j, g, tail) for j in js])
                return
            for t in range(2 * rows * cols):
                b.store(ir.Constant(VI64, None), inner[t])

            def run(count: int, start: ir.Value, last_masked: int) -> None:
                for t in range(4 * rows * cols):
                    b.store(ir.Constant(V16, None), accs[t])
                plain = count - (1 if last_masked else 0)
                if plain:
                    with loop(b, plain, "kc") as c:
                        chunk_step(rows, cols, rbase, js, b.add(start, c), 0)
                if last_masked:
                    chunk_step(rows, cols, rbase, js, b.add(start, c32(plain)), last_masked)
                widen(rows, cols)

            sizes = [FLUSH] * (chunks // FLUSH) + ([chunks % FLUSH] if chunks % FLUSH else [])
            looped = len(sizes) - 1 if masked or sizes[-1] < FLUSH else len(sizes)  # the last run on its own
            if looped:
                with loop(b, looped, "kf") as f:
                    run(FLUSH, b.add(c0, b.mul(f, c32(FLUSH))), 0)
            if looped < len(sizes):
                run(sizes[-1], b.add(c0, c32(looped * FLUSH)), masked)
            for cc in range(cols):
                v = scales(js[cc], g, tail)
                sv = [half(v, 0), half(v, 1)]
                for r in range(rows):
                    for h in range(2):
                        t = 2 * (r * cols + cc) + h
                        b.store(b.add(b.load(total[t], typ=VI64), b.mul(b.load(inner[t], typ=VI64), sv[h])), total[t])

        tail_chunks = nch - (ng - 1) * cpg
        tail_mask = (k % ch) // (2 if i4 else 1)  # bytes of the last chunk's weights (0: a whole chunk)
        if tail_mask == 0 and tail_chunks == cpg:
            with loop(b, ng, "kg") as g:
                group(g, cpg, 0, False)
        else:
            if ng > 1:
                with loop(b, ng - 1, "kg") as g:
                    group(g, cpg, 0, False)
            group(c32(ng - 1), tail_chunks, tail_mask, True)
        for r in range(rows):
            i = b.add(i0, c32(r))
            for cc in range(cols):
                t = 2 * (r * cols + cc)
                acc = hsum(b, b.add(b.load(total[t], typ=VI64), b.load(total[t + 1], typ=VI64)))
                # − Σ_b scale_b · (Y_b + zp_b · Σ_{k∈b} x_k): the operands' offsets (module docstring)
                corr = entry_alloca(b, I64, name="corr")
                b.store(acc, corr)
                ys = b.add(rbase[r], c32(nch * 4 * ch))
                with loop(b, nb, "zb") as blk:
                    cell = b.add(b.mul(js[cc], c32(nb)), blk)
                    off = b.load(at(b.add(ys, b.mul(blk, c32(8)))), typ=I64, align=8)
                    if zp is not None:
                        sx = b.load(at(b.add(ys, b.add(c32(nb * 8), b.mul(blk, c32(8))))), typ=I64, align=8)
                        off = b.add(off, b.mul(sext64(b, load_q(b, zp, cell, dt)), sx))
                    b.store(b.sub(b.load(corr, typ=I64), b.mul(sext64(b, load(b, scale, cell)), off)), corr)
                finish_output(b, b.load(corr, typ=I64), bias, bias_t, js[cc], prod_frac, shift, out,
                              b.add(b.mul(i, c32(n)), js[cc]))

    # ---- row groups of x: planes, then every tile of the part's columns
    with loop(b, -(-m // row_group), "rg") as rgi:
        rg0 = b.mul(rgi, c32(row_group))
        rows_here = b.select(b.icmp_unsigned("<", c32(m - row_group), rg0), b.sub(c32(m), rg0), c32(row_group))
        prep(rg0, rows_here)
        first_row = rg0
        left_rows = rows_here
        for rows, col_kinds in TILES.items():
            count_r = b.udiv(left_rows, c32(rows)) if rows > 1 else left_rows
            with loop(b, count_r, f"vr{rows}") as tr:
                i0 = b.add(first_row, b.mul(tr, c32(rows)))
                first_col, left = lo, b.sub(hi, lo)
                for cols in col_kinds:
                    count = b.udiv(left, c32(cols)) if cols > 1 else left
                    with loop(b, count, f"vn{rows}{cols}") as u:
                        tile(rows, cols, i0, rg0, b.add(first_col, b.mul(u, c32(cols))))
                    first_col = b.add(first_col, b.mul(count, c32(cols)))
                    left = b.sub(left, b.mul(count, c32(cols)))
            first_row = b.add(first_row, b.mul(count_r, c32(rows)))
            left_rows = b.sub(left_rows, b.mul(count_r, c32(rows)))
