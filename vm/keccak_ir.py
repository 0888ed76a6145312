"""LLVM IR of the native keccak256 kernels behind vm/merkle.py (built by vm/native_hash.py).

Everything the Merkle trees hash is a 64-byte block (left ‖ right), and keccak256 of 64 bytes
is one Keccak-f[1600] permutation: the message fills lanes 0..7 of the state (little-endian
64-bit words), Ethereum's padding puts 0x01 in the byte after it (lane 8) and 0x80 in the last
byte of the 136-byte rate (the top of lane 16), and the digest is lanes 0..3. The kernel runs
`width` independent blocks at once, lane j of block k in element k of a <width x i64> vector, so
one vector instruction advances every block (on AVX-512, width 8: rotates are vprolq and χ a
vpternlogq). Width 1 is plain scalar code for any host.

The permutation follows the Keccak reference (FIPS 202 §3.2): 24 rounds of θ, ρ, π, χ, ι on
lanes A[x + 5y]. The rotation offsets and round constants are derived below from their
definitions (the triangular numbers along the (x, y) → (y, 2x + 3y) walk; the degree-8 LFSR
x^8 + x^6 + x^5 + x^4 + 1), not tabulated by hand.

Functions of the module (all `void`, pointers are `i8*`, counts `i64`):

- `keccak_blocks(in, out, n)`: out[32i : 32i + 32] = keccak256(in[64i : 64i + 64]) for i < n.
  `out` may equal `in` (a group's blocks are all read before its digests are written, and
  digest i never lands past block i), which is how a tree level is reduced in place.
- `chunk_roots(data, nchunks, chunk, out, scratch, zero_root)`: the Merkle root of each of
  `nchunks` consecutive `chunk`-byte pieces of `data` (chunk a power of two ≥ 64) to
  out[32c : 32c + 32]; an all-zero piece gets `zero_root` (its zero hash) without hashing.
  `scratch` holds chunk / 2 bytes, one per concurrent caller.
"""

from __future__ import annotations

import sys
from functools import cache

from llvmlite import ir

ROUNDS = 24
RATE_LANES = 17  # 136-byte rate of keccak256 (capacity 512 bits)


@cache
def rotation_offsets() -> tuple[int, ...]:
    """ρ offsets r[x + 5y]: r[0] = 0; along (x, y) ← (1, 0), (y, 2x + 3y), step t gets (t+1)(t+2)/2."""
    r = [0] * 25
    x, y = 1, 0
    for t in range(24):
        r[x + 5 * y] = ((t + 1) * (t + 2) // 2) % 64
        x, y = y, (2 * x + 3 * y) % 5
    return tuple(r)


def _rc_bit(t: int) -> int:
    """Bit t of the LFSR sequence rc (FIPS 202 Algorithm 5)."""
    if t % 255 == 0:
        return 1
    r = 1  # R = 1000 0000, bit i of R as bit i of the int
    for _ in range(t % 255):
        r <<= 1
        r8 = (r >> 8) & 1
        r ^= r8 | (r8 << 4) | (r8 << 5) | (r8 << 6)
        r &= 0xFF
    return r & 1


@cache
def round_constants() -> tuple[int, ...]:
    """ι constants: bit 2^j − 1 of RC[i] is rc(j + 7i), j = 0..6."""
    return tuple(
        sum(_rc_bit(j + 7 * i) << ((1 << j) - 1) for j in range(7)) for i in range(ROUNDS)
    )


I1 = ir.IntType(1)
I8 = ir.IntType(8)
I64 = ir.IntType(64)
P8 = I8.as_pointer()
VOID = ir.VoidType()


class _Gen:
    def __init__(self, width: int, big_endian: bool) -> None:
        self.width = width
        self.m = ir.Module(name=f"opmlc_keccak_x{width}")
        self.lane = I64 if width == 1 else ir.VectorType(I64, width)
        self.big_endian = big_endian
        self.rotl = self._intrinsic("llvm.fshl", [self.lane, self.lane, self.lane], self.lane)
        if self.big_endian:
            self.bswap = self._intrinsic("llvm.bswap", [I64], I64)
        self.memcpy = self.m.declare_intrinsic("llvm.memcpy", [P8, P8, I64])

    def _intrinsic(self, name: str, args, ret):
        suffix = f"v{self.width}i64" if self.width > 1 else "i64"
        return ir.Function(self.m, ir.FunctionType(ret, args), name=f"{name}.{suffix}")

    def splat(self, v: int) -> ir.Constant:
        c = ir.Constant(I64, v & (2**64 - 1))
        return c if self.width == 1 else ir.Constant(self.lane, [c] * self.width)

    # ------------------------------------------------------------------ the permutation

    def permute(self, b: ir.IRBuilder, a: list) -> list:
        """24 rounds as a loop (one round's code, the state in phis): small code, quick to JIT.

        Measured on AVX-512: fully unrolled rounds are ~10 % faster but take ~3 s to compile
        (every process pays it), unrolling by 2-6 gains nothing; the loop costs ~0.2 s.
        """
        rc_t = ir.ArrayType(I64, ROUNDS)
        rc = ir.GlobalVariable(self.m, rc_t, name="keccak_rc")
        rc.global_constant = True
        rc.linkage = "private"
        rc.initializer = ir.Constant(rc_t, [ir.Constant(I64, c) for c in round_constants()])
        pre = b.block
        body = b.append_basic_block("round")
        done = b.append_basic_block("rounds_done")
        b.branch(body)
        b.position_at_end(body)
        i = b.phi(I64, "i")
        s = [b.phi(self.lane, f"a{k}") for k in range(25)]
        for k in range(25):
            s[k].add_incoming(a[k], pre)
        i.add_incoming(ir.Constant(I64, 0), pre)
        nxt = self.round(b, list(s), b.load(b.gep(rc, [ir.Constant(I64, 0), i])))
        i2 = b.add(i, ir.Constant(I64, 1))
        for k in range(25):
            s[k].add_incoming(nxt[k], body)
        i.add_incoming(i2, body)
        b.cbranch(b.icmp_unsigned("<", i2, ir.Constant(I64, ROUNDS)), body, done)
        b.position_at_end(done)
        return nxt

    def rot(self, b: ir.IRBuilder, v, n: int):
        if n == 0:
            return v
        return b.call(self.rotl, [v, v, self.splat(n)])

    def round(self, b: ir.IRBuilder, a: list, rc) -> list:
        r = rotation_offsets()
        c = [b.xor(b.xor(b.xor(b.xor(a[x], a[x + 5]), a[x + 10]), a[x + 15]), a[x + 20])
             for x in range(5)]
        d = [b.xor(c[(x - 1) % 5], self.rot(b, c[(x + 1) % 5], 1)) for x in range(5)]
        bb: list = [None] * 25
        for y in range(5):
            for x in range(5):
                k = x + 5 * y
                # π: A[x, y] goes to B[y, 2x + 3y], rotated by ρ's offset
                bb[y + 5 * ((2 * x + 3 * y) % 5)] = self.rot(b, b.xor(a[k], d[x]), r[k])
        ones = self.splat(-1)
        out = []
        for y in range(5):
            for x in range(5):
                row = 5 * y
                t = b.and_(b.xor(bb[row + (x + 1) % 5], ones), bb[row + (x + 2) % 5])
                out.append(b.xor(bb[row + x], t))
        rcv = rc if self.width == 1 else b.insert_element(
            ir.Constant(self.lane, [ir.Constant(I64, 0)] * self.width), rc, ir.Constant(I64, 0))
        if self.width > 1:
            rcv = b.shuffle_vector(rcv, ir.Constant(self.lane, ir.Undefined),
                                   ir.Constant(ir.VectorType(ir.IntType(32), self.width),
                                               [0] * self.width))
        out[0] = b.xor(out[0], rcv)
        return out

    # ------------------------------------------------------------------ one group of blocks

    def load_word(self, b: ir.IRBuilder, base, offset: int):
        p = b.bitcast(b.gep(base, [ir.Constant(I64, offset)]), I64.as_pointer())
        v = b.load(p, align=1)
        return b.call(self.bswap, [v]) if self.big_endian else v

    def store_word(self, b: ir.IRBuilder, base, offset: int, v) -> None:
        if self.big_endian:
            v = b.call(self.bswap, [v])
        p = b.bitcast(b.gep(base, [ir.Constant(I64, offset)]), I64.as_pointer())
        b.store(v, p, align=1)

    def group(self) -> ir.Function:
        """`group(in, out)`: `width` consecutive 64-byte blocks → `width` consecutive digests."""
        f = ir.Function(self.m, ir.FunctionType(VOID, [P8, P8]), name="keccak_group")
        f.linkage = "internal"
        f.attributes.add("alwaysinline")
        src, dst = f.args
        b = ir.IRBuilder(f.append_basic_block("entry"))
        w = self.width
        state = []
        for j in range(8):
            if w == 1:
                state.append(self.load_word(b, src, 8 * j))
                continue
            v = ir.Constant(self.lane, ir.Undefined)
            for k in range(w):
                v = b.insert_element(v, self.load_word(b, src, 64 * k + 8 * j), ir.Constant(I64, k))
            state.append(v)
        zero = self.splat(0)
        state += [self.splat(0x01)] + [zero] * 7 + [self.splat(0x80 << 56)] + [zero] * 8
        out = self.permute(b, state)
        for k in range(w):
            for j in range(4):
                v = out[j] if w == 1 else b.extract_element(out[j], ir.Constant(I64, k))
                self.store_word(b, dst, 32 * k + 8 * j, v)
        b.ret_void()
        return f

    # ------------------------------------------------------------------ exported functions

    def blocks(self, group: ir.Function) -> ir.Function:
        f = ir.Function(self.m, ir.FunctionType(VOID, [P8, P8, I64]), name="keccak_blocks")
        src, dst, n = f.args
        w = self.width
        entry = f.append_basic_block("entry")
        loop = f.append_basic_block("loop")
        tail = f.append_basic_block("tail")
        rest = f.append_basic_block("rest")
        end = f.append_basic_block("end")
        b = ir.IRBuilder(entry)
        tmp_in = b.alloca(ir.ArrayType(I8, 64 * w))
        tmp_out = b.alloca(ir.ArrayType(I8, 32 * w))
        groups = b.udiv(n, ir.Constant(I64, w))
        b.cbranch(b.icmp_unsigned("!=", groups, ir.Constant(I64, 0)), loop, tail)
        b.position_at_end(loop)
        g = b.phi(I64)
        g.add_incoming(ir.Constant(I64, 0), entry)
        b.call(group, [b.gep(src, [b.mul(g, ir.Constant(I64, 64 * w))]),
                       b.gep(dst, [b.mul(g, ir.Constant(I64, 32 * w))])])
        g2 = b.add(g, ir.Constant(I64, 1))
        g.add_incoming(g2, loop)
        b.cbranch(b.icmp_unsigned("<", g2, groups), loop, tail)
        b.position_at_end(tail)
        r = b.urem(n, ir.Constant(I64, w))
        b.cbranch(b.icmp_unsigned("!=", r, ir.Constant(I64, 0)), rest, end)
        b.position_at_end(rest)  # the last n mod w blocks, through a whole group on the stack
        done = b.sub(n, r)
        pin = b.bitcast(tmp_in, P8)
        pout = b.bitcast(tmp_out, P8)
        b.call(self.memcpy, [pin, b.gep(src, [b.mul(done, ir.Constant(I64, 64))]),
                             b.mul(r, ir.Constant(I64, 64)), ir.Constant(I1, 0)])
        b.call(group, [pin, pout])
        b.call(self.memcpy, [b.gep(dst, [b.mul(done, ir.Constant(I64, 32))]), pout,
                             b.mul(r, ir.Constant(I64, 32)), ir.Constant(I1, 0)])
        b.branch(end)
        b.position_at_end(end)
        b.ret_void()
        return f

    def is_zero(self) -> ir.Function:
        """Whether n bytes (n a multiple of 64) are all zero; stops at the first nonzero block."""
        f = ir.Function(self.m, ir.FunctionType(I1, [P8, I64]), name="is_zero")
        f.linkage = "internal"
        p, n = f.args
        entry = f.append_basic_block("entry")
        loop = f.append_basic_block("loop")
        nxt = f.append_basic_block("next")
        yes = f.append_basic_block("yes")
        no = f.append_basic_block("no")
        b = ir.IRBuilder(entry)
        b.cbranch(b.icmp_unsigned("!=", n, ir.Constant(I64, 0)), loop, yes)
        b.position_at_end(loop)
        i = b.phi(I64)
        i.add_incoming(ir.Constant(I64, 0), entry)
        acc = None
        for j in range(8):
            w = b.load(b.bitcast(b.gep(p, [b.add(i, ir.Constant(I64, 8 * j))]), I64.as_pointer()),
                       align=1)
            acc = w if acc is None else b.or_(acc, w)
        b.cbranch(b.icmp_unsigned("!=", acc, ir.Constant(I64, 0)), no, nxt)
        b.position_at_end(nxt)
        i2 = b.add(i, ir.Constant(I64, 64))
        i.add_incoming(i2, nxt)
        b.cbranch(b.icmp_unsigned("<", i2, n), loop, yes)
        b.position_at_end(yes)
        b.ret(ir.Constant(I1, 1))
        b.position_at_end(no)
        b.ret(ir.Constant(I1, 0))
        return f

    def chunk_roots(self, blocks: ir.Function, is_zero: ir.Function) -> ir.Function:
        f = ir.Function(self.m, ir.FunctionType(VOID, [P8, I64, I64, P8, P8, P8]),
                        name="chunk_roots")
        data, nchunks, chunk, out, scratch, zero_root = f.args
        entry = f.append_basic_block("entry")
        loop = f.append_basic_block("chunk")
        zero = f.append_basic_block("zero")
        dense = f.append_basic_block("dense")
        reduce = f.append_basic_block("reduce")
        store = f.append_basic_block("store")
        nxt = f.append_basic_block("next")
        end = f.append_basic_block("end")
        b = ir.IRBuilder(entry)
        c0 = ir.Constant(I64, 0)
        b.cbranch(b.icmp_unsigned("!=", nchunks, c0), loop, end)
        b.position_at_end(loop)
        c = b.phi(I64)
        c.add_incoming(c0, entry)
        src = b.gep(data, [b.mul(c, chunk)])
        dst = b.gep(out, [b.mul(c, ir.Constant(I64, 32))])
        b.cbranch(b.call(is_zero, [src, chunk]), zero, dense)
        b.position_at_end(zero)
        b.call(self.memcpy, [dst, zero_root, ir.Constant(I64, 32), ir.Constant(I1, 0)])
        b.branch(nxt)
        b.position_at_end(dense)
        leaves_pairs = b.udiv(chunk, ir.Constant(I64, 64))
        b.call(blocks, [src, scratch, leaves_pairs])
        b.branch(reduce)
        b.position_at_end(reduce)  # halve the level in place until one node is left
        k = b.phi(I64)
        k.add_incoming(leaves_pairs, dense)
        hashing = f.append_basic_block("hash_level")
        b.cbranch(b.icmp_unsigned(">", k, ir.Constant(I64, 1)), hashing, store)
        b.position_at_end(hashing)
        half = b.lshr(k, ir.Constant(I64, 1))
        b.call(blocks, [scratch, scratch, half])
        k.add_incoming(half, hashing)
        b.branch(reduce)
        b.position_at_end(store)
        b.call(self.memcpy, [dst, scratch, ir.Constant(I64, 32), ir.Constant(I1, 0)])
        b.branch(nxt)
        b.position_at_end(nxt)
        c2 = b.add(c, ir.Constant(I64, 1))
        c.add_incoming(c2, nxt)
        b.cbranch(b.icmp_unsigned("<", c2, nchunks), loop, end)
        b.position_at_end(end)
        b.ret_void()
        return f


@cache
def module_ir(width: int, big_endian: bool | None = None) -> str:
    """The kernels' module for `width` blocks per vector (1, 2, 4, 8 ...), as IR text.

    Keccak's lanes are little-endian words; on a big-endian host (`big_endian`, default: this
    host's byte order) every word is byte-swapped after loading and before storing."""
    if width < 1 or width & (width - 1):
        raise ValueError(f"vector width must be a power of two, not {width}")
    g = _Gen(width, sys.byteorder == "big" if big_endian is None else big_endian)
    blocks = g.blocks(g.group())
    g.chunk_roots(blocks, g.is_zero())
    return str(g.m)
