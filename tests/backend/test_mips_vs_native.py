"""The same hand-written `task` module gives the same bytes as a MIPS ELF under unicorn and
natively, and both equal an exact Python reference."""

from __future__ import annotations

import numpy as np
import pytest
from backend_harness import run_both

from opmlc.backend.target import compile_mips_object
from runtime.mips import PROVIDED_SYMBOLS

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1

# out[n] = sat32((sum_k x[k] * w[n*K + k] + 2^15) >> 16): a fixed-point dense layer, with the
# accumulator in i64 and the rounding shift and saturation of docs/DESIGN.md.
DENSE_IR = r"""
define void @task(ptr %regions, i32 %node) {
entry:
  %x = load ptr, ptr %regions
  %pw = getelementptr ptr, ptr %regions, i32 1
  %w = load ptr, ptr %pw
  %po = getelementptr ptr, ptr %regions, i32 2
  %out = load ptr, ptr %po
  br label %row

row:
  %n = phi i32 [ 0, %entry ], [ %n.next, %row.end ]
  %base = mul i32 %n, K
  br label %dot

dot:
  %k = phi i32 [ 0, %row ], [ %k.next, %dot ]
  %acc = phi i64 [ 0, %row ], [ %acc.next, %dot ]
  %px = getelementptr i32, ptr %x, i32 %k
  %xv = load i32, ptr %px
  %wi = add i32 %base, %k
  %pwv = getelementptr i32, ptr %w, i32 %wi
  %wv = load i32, ptr %pwv
  %x64 = sext i32 %xv to i64
  %w64 = sext i32 %wv to i64
  %prod = mul i64 %x64, %w64
  %acc.next = add i64 %acc, %prod
  %k.next = add i32 %k, 1
  %more = icmp ult i32 %k.next, K
  br i1 %more, label %dot, label %row.end

row.end:
  %rounded = add i64 %acc.next, 32768
  %shifted = ashr i64 %rounded, 16
  %hi = icmp sgt i64 %shifted, 2147483647
  %lo = icmp slt i64 %shifted, -2147483648
  %c1 = select i1 %hi, i64 2147483647, i64 %shifted
  %c2 = select i1 %lo, i64 -2147483648, i64 %c1
  %r = trunc i64 %c2 to i32
  %pout = getelementptr i32, ptr %out, i32 %n
  store i32 %r, ptr %pout
  %n.next = add i32 %n, 1
  %rows = icmp ult i32 %n.next, N
  br i1 %rows, label %row, label %done

done:
  ret void
}
"""


def _dense_ref(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    out = []
    for row in w:
        acc = sum(int(a) * int(b) for a, b in zip(x, row, strict=True))
        # i64 wrap-around is part of the semantics (the sums here stay in range anyway).
        acc = (acc + 2**63) % 2**64 - 2**63
        out.append(min(max((acc + 32768) >> 16, I32_MIN), I32_MAX))
    return np.array(out, dtype=np.int32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dense_kernel_is_bit_identical_on_mips_and_native(seed: int) -> None:
    k, n = 37, 5
    rng = np.random.default_rng(seed)
    x = rng.integers(I32_MIN, I32_MAX, size=k, endpoint=True, dtype=np.int64).astype(np.int32)
    w = rng.integers(-(2**20), 2**20, size=(n, k)).astype(np.int32)
    x[:3] = [I32_MIN, I32_MAX, 0]  # the int32 edges
    w[0, :2] = [I32_MIN, I32_MAX]
    ir = DENSE_IR.replace("K", str(k)).replace("N", str(n))
    both = run_both(ir, [x, w, np.zeros(n, np.int32)], outputs=[2])
    assert both.mips == both.native
    mips, _ = both.as_arrays([np.int32])
    np.testing.assert_array_equal(mips[0], _dense_ref(x, w))
    assert both.instructions > k * n  # it really ran the loops


# Byte loops LLVM turns into memset/memcpy calls: out[0..n) = 0, then out[0..n/2) = src[1..].
# `node` carries n, so the lengths are unknown at compile time. The copy loop sits in a function
# with `noalias` arguments: otherwise LLVM cannot prove the loop is a memcpy.
IDIOM_IR = r"""
define internal void @copy(ptr noalias %dst, ptr noalias %src, i32 %n) {
entry:
  %anyc = icmp ne i32 %n, 0
  br i1 %anyc, label %copy, label %done

copy:
  %j = phi i32 [ 0, %entry ], [ %j.next, %copy ]
  %j1 = add i32 %j, 1
  %ps = getelementptr i8, ptr %src, i32 %j1
  %v = load i8, ptr %ps
  %pd = getelementptr i8, ptr %dst, i32 %j
  store i8 %v, ptr %pd
  %j.next = add i32 %j, 1
  %cmore = icmp ult i32 %j.next, %n
  br i1 %cmore, label %copy, label %done

done:
  ret void
}

define void @task(ptr %regions, i32 %node) {
entry:
  %src = load ptr, ptr %regions
  %po = getelementptr ptr, ptr %regions, i32 1
  %out = load ptr, ptr %po
  %any = icmp ne i32 %node, 0
  br i1 %any, label %zero, label %done

zero:
  %i = phi i32 [ 0, %entry ], [ %i.next, %zero ]
  %p = getelementptr i8, ptr %out, i32 %i
  store i8 0, ptr %p
  %i.next = add i32 %i, 1
  %zmore = icmp ult i32 %i.next, %node
  br i1 %zmore, label %zero, label %copy

copy:
  %half = lshr i32 %node, 1
  call void @copy(ptr %out, ptr %src, i32 %half)
  br label %done

done:
  ret void
}
"""


def _undefined_symbols(obj: bytes) -> set[str]:
    import lief

    elf = lief.ELF.parse(list(obj))
    return {s.name for s in elf.symtab_symbols if s.shndx == 0 and s.name}


def test_llvm_turns_the_byte_loops_into_memset_and_memcpy_calls() -> None:
    # Otherwise the next test would not exercise runtime/'s memset and memcpy.
    assert {"memset", "memcpy"} <= _undefined_symbols(compile_mips_object(IDIOM_IR))


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 8, 17, 64, 101, 200])
def test_runtime_memset_and_memcpy_match_native_for_any_length(n: int) -> None:
    size = 256
    src = np.arange(size, dtype=np.uint8) * 7 + 3
    out = np.full(size, 0xAB, dtype=np.uint8)
    both = run_both(IDIOM_IR, [src, out], outputs=[1], node=n)
    assert both.mips == both.native
    expected = out.copy()
    expected[:n] = 0
    expected[: n // 2] = src[1 : 1 + n // 2]
    assert both.mips[0] == expected.tobytes()


# Explicit calls of the runtime's memory functions at chosen offsets:
# params = [op, dst_offset, src_offset, n, fill]; op 0 memcpy, 1 memmove, 2 memset.
MEMFN_IR = r"""
declare ptr @memcpy(ptr, ptr, i32)
declare ptr @memmove(ptr, ptr, i32)
declare ptr @memset(ptr, i32, i32)

define void @task(ptr %regions, i32 %node) {
entry:
  %buf = load ptr, ptr %regions
  %pp = getelementptr ptr, ptr %regions, i32 1
  %params = load ptr, ptr %pp
  %op = load i32, ptr %params
  %p1 = getelementptr i32, ptr %params, i32 1
  %doff = load i32, ptr %p1
  %p2 = getelementptr i32, ptr %params, i32 2
  %soff = load i32, ptr %p2
  %p3 = getelementptr i32, ptr %params, i32 3
  %n = load i32, ptr %p3
  %p4 = getelementptr i32, ptr %params, i32 4
  %fill = load i32, ptr %p4
  %dst = getelementptr i8, ptr %buf, i32 %doff
  %src = getelementptr i8, ptr %buf, i32 %soff
  switch i32 %op, label %set [ i32 0, label %cpy
                               i32 1, label %mov ]
cpy:
  %r0 = call ptr @memcpy(ptr %dst, ptr %src, i32 %n)
  ret void
mov:
  %r1 = call ptr @memmove(ptr %dst, ptr %src, i32 %n)
  ret void
set:
  %r2 = call ptr @memset(ptr %dst, i32 %fill, i32 %n)
  ret void
}
"""

MEM_CASES = [
    # (op, dst, src, n)
    (0, 0, 128, 64),  # aligned words
    (0, 1, 128, 64),  # misaligned destination
    (0, 4, 131, 13),  # misaligned source, odd tail
    (0, 8, 136, 3),  # shorter than a word
    (0, 8, 136, 0),
    (1, 0, 4, 100),  # overlapping, destination below: forward copy
    (1, 4, 0, 100),  # overlapping, destination above: backward copy
    (1, 3, 1, 57),  # overlapping, misaligned
    (1, 40, 200, 30),  # disjoint
    (1, 16, 16, 20),  # onto itself
    (2, 0, 0, 64),
    (2, 3, 0, 61),
    (2, 5, 0, 2),
    (2, 0, 0, 0),
]


@pytest.mark.parametrize(("op", "dst", "src", "n"), MEM_CASES)
def test_runtime_memory_functions_match_libc(op: int, dst: int, src: int, n: int) -> None:
    buf = (np.arange(256, dtype=np.uint32) * 2654435761 >> 24).astype(np.uint8)
    params = np.array([op, dst, src, n, 0x1C5], dtype=np.int32)  # fill: only the low byte counts
    both = run_both(MEMFN_IR, [buf, params], outputs=[0])
    assert both.mips == both.native
    expected = bytearray(buf.tobytes())
    if op == 2:
        expected[dst : dst + n] = bytes([0xC5]) * n
    else:
        expected[dst : dst + n] = bytes(buf.tobytes()[src : src + n])
    assert both.mips[0] == bytes(expected)


# Per element i: out[9i..9i+8] = a<<s, a>>>s (logical), a>>s (arithmetic), a*b, a/b, a%b,
# a/b and a%b unsigned, and a widening i32*i32 product, with s = shifts[i] in 0..63 and the
# divisions guarded as docs/DESIGN.md requires (divisor 0 -> 1, INT64_MIN / -1 -> / 1).
I64_IR = r"""
define void @task(ptr %regions, i32 %node) {
entry:
  %a.p = load ptr, ptr %regions
  %pb = getelementptr ptr, ptr %regions, i32 1
  %b.p = load ptr, ptr %pb
  %ps = getelementptr ptr, ptr %regions, i32 2
  %s.p = load ptr, ptr %ps
  %po = getelementptr ptr, ptr %regions, i32 3
  %out = load ptr, ptr %po
  br label %loop

loop:
  %i = phi i32 [ 0, %entry ], [ %i.next, %loop ]
  %pa = getelementptr i64, ptr %a.p, i32 %i
  %a = load i64, ptr %pa
  %pbv = getelementptr i64, ptr %b.p, i32 %i
  %b = load i64, ptr %pbv
  %psv = getelementptr i32, ptr %s.p, i32 %i
  %s32 = load i32, ptr %psv
  %s = zext i32 %s32 to i64
  %shl = shl i64 %a, %s
  %lshr = lshr i64 %a, %s
  %ashr = ashr i64 %a, %s
  %mul = mul i64 %a, %b
  %bz = icmp eq i64 %b, 0
  %amin = icmp eq i64 %a, -9223372036854775808
  %bm1 = icmp eq i64 %b, -1
  %ovf = and i1 %amin, %bm1
  %bad = or i1 %bz, %ovf
  %sdivisor = select i1 %bad, i64 1, i64 %b
  %udivisor = select i1 %bz, i64 1, i64 %b
  %sdiv = sdiv i64 %a, %sdivisor
  %srem = srem i64 %a, %sdivisor
  %udiv = udiv i64 %a, %udivisor
  %urem = urem i64 %a, %udivisor
  %a32 = trunc i64 %a to i32
  %b32 = trunc i64 %b to i32
  %a32x = sext i32 %a32 to i64
  %b32x = sext i32 %b32 to i64
  %wide = mul i64 %a32x, %b32x
  %base = mul i32 %i, 9
  %zero = add i64 0, 0
  STORES
  %i.next = add i32 %i, 1
  %more = icmp ult i32 %i.next, M
  br i1 %more, label %loop, label %done

done:
  ret void
}
"""
_I64_RESULTS = ["shl", "lshr", "ashr", "mul", "sdiv", "srem", "udiv", "urem", "wide"]


def _i64_ir(m: int, results: tuple[str, ...] = tuple(_I64_RESULTS)) -> str:
    # Unrequested results are stored as 0: LLVM forms a remainder from the quotient when both
    # are used (a - q*b), so the remainder helpers are reached only by a module without divisions.
    stores = []
    for j, name in enumerate(_I64_RESULTS):
        if name not in results:
            name = "zero"
        stores.append(f"%idx{j} = add i32 %base, {j}")
        stores.append(f"%p{j} = getelementptr i64, ptr %out, i32 %idx{j}")
        stores.append(f"store i64 %{name}, ptr %p{j}")
    return I64_IR.replace("STORES", "\n  ".join(stores)).replace("M", str(m))


def _wrap64(v: int) -> int:
    return (v + 2**63) % 2**64 - 2**63


def _i64_ref(a: int, b: int, s: int) -> list[int]:
    ua, ub = a % 2**64, b % 2**64
    sd = 1 if b == 0 or (a == I64_MIN and b == -1) else b
    ud = 1 if ub == 0 else ub
    q = abs(a) // abs(sd) * (1 if (a < 0) == (sd < 0) else -1)
    r = a - q * sd
    a32 = (a % 2**32 + 2**31) % 2**32 - 2**31
    b32 = (b % 2**32 + 2**31) % 2**32 - 2**31
    return [
        _wrap64(ua << s),
        _wrap64(ua >> s),
        a >> s,
        _wrap64(a * b),
        _wrap64(q),
        r,
        _wrap64(ua // ud),
        _wrap64(ua % ud),
        a32 * b32,
    ]


@pytest.mark.parametrize(
    "results", [tuple(_I64_RESULTS), ("srem", "urem")], ids=["all", "remainders-only"]
)
def test_i64_shifts_multiplication_and_division_by_variables_are_exact(
    results: tuple[str, ...],
) -> None:
    rng = np.random.default_rng(7)
    edges = [0, 1, -1, 2, -2, I64_MIN, I64_MAX, I32_MIN, I32_MAX, 2**32, -(2**32), 2**32 + 1]
    a_list, b_list = [], []
    for x in edges:
        for y in edges:
            a_list.append(x)
            b_list.append(y)
    for bits_a, bits_b in [(64, 64), (64, 33), (64, 31), (40, 20), (32, 32), (63, 62)]:
        for _ in range(12):
            a_list.append(int(rng.integers(-(2 ** (bits_a - 1)), 2 ** (bits_a - 1) - 1)))
            b_list.append(int(rng.integers(-(2 ** (bits_b - 1)), 2 ** (bits_b - 1) - 1)))
    m = len(a_list)
    a = np.array(a_list, dtype=np.int64)
    b = np.array(b_list, dtype=np.int64)
    s = (np.arange(m, dtype=np.int64) * 13 % 64).astype(np.int32)
    s[:4] = [0, 1, 63, 32]
    out = np.zeros(9 * m, dtype=np.int64)
    both = run_both(_i64_ir(m, results), [a, b, s, out], outputs=[3])
    assert both.mips == both.native
    mips, _ = both.as_arrays([np.int64])
    expected = [
        v if name in results else 0
        for i in range(m)
        for name, v in zip(_I64_RESULTS, _i64_ref(a_list[i], b_list[i], int(s[i])), strict=True)
    ]
    got = [int(v) for v in mips[0]]
    for i in range(m):
        assert got[9 * i : 9 * i + 9] == expected[9 * i : 9 * i + 9], (a_list[i], b_list[i], s[i])


def test_i64_division_reaches_the_runtime_helpers_on_mips() -> None:
    # The test above would prove little if LLVM had expanded the divisions inline.
    with_division = _undefined_symbols(compile_mips_object(_i64_ir(4)))
    remainders_only = _undefined_symbols(compile_mips_object(_i64_ir(4, ("srem", "urem"))))
    assert {"__divdi3", "__udivdi3"} <= with_division <= PROVIDED_SYMBOLS
    assert {"__moddi3", "__umoddi3"} <= remainders_only <= PROVIDED_SYMBOLS
