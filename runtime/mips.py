"""The runtime every MIPS program links with, as LLVM IR text generated here.

Place in the pipeline: opmlc/backend/mips_program.py compiles this module with the same MIPS
target machine as the model's module (opmlc/backend/target.py), and our linker
(opmlc/backend/link.py) puts it first, so `_start` sits at 0x00400000. It provides:

- `_start`: loads the node index from the task descriptor, calls `task(regions, node)` with
  `regions` the descriptor's region table (0x30000004: one address per value, the task's map),
  exits with code 0 (docs/DESIGN.md "Implementation choices", the task ABI). The image holds no
  addresses of values, so one image serves every task map;
- the exit stub, as encoded MIPS words (llvmlite cannot assemble MIPS: inline or module-level
  asm aborts the process);
- `memcpy`, `memmove`, `memset`: LLVM turns copy/fill loops and large aggregate moves into calls
  to them, and nothing else defines them in a freestanding program;
- `__divdi3`, `__udivdi3`, `__moddi3`, `__umoddi3`: LLVM lowers i64 division on MIPS32 to these
  libcalls. They are the only libcalls LLVM 22 emits for our integer IR on this target: i64
  shifts and multiplication are expanded inline (checked by tests/backend/test_libcalls.py).

Determinism rules this code relies on (docs/DESIGN.md "Determinism rules"):

- Everything here is integer code with defined behaviour for every input: no shift by >= the
  width (the divider shifts by constants or by a count < 64), no division that can trap (the only
  hardware division is 32-bit, guarded against a zero divisor), no reads of uninitialised memory.
- Division by zero is undefined in the model IR (the codegen must guard it), but the helpers
  still give a fixed answer for it (quotient from the shift-subtract loop, remainder = the
  dividend), so even a bug produces the same bits on every MIPS VM.
- `"no-builtins"` on every function here, and the names memcpy/memset themselves, stop
  LoopIdiomRecognize from turning our copy and fill loops back into calls to memcpy/memset
  (which would recurse forever). tests/backend check that the runtime object references no
  symbol but `task`.
- The memory functions move bytes in address order over the exact range asked for; words are
  used only when every address involved is 4-aligned, since the VM panics on a misaligned lw/sw.
"""

from __future__ import annotations

TASK_DESCRIPTOR = 0x30000000
TASK_TABLE = TASK_DESCRIPTOR + 4  # the descriptor's region table follows the node index
WHOLE_GRAPH = 0xFFFFFFFF
SYS_EXIT = 4001
SYS_EXIT_GROUP = 4246
STACK_TOP = 0x7FFFF000


def _i_type(opcode: int, rs: int, rt: int, imm: int) -> int:
    return (opcode << 26) | (rs << 21) | (rt << 16) | (imm & 0xFFFF)


_ZERO, _V0 = 0, 2

# The exit stub, called as `void (i32 code)`: the o32 ABI passes `code` in $a0, which is where
# the exit syscall takes it. The stub never returns; `b .` keeps a VM that ignored the syscall
# from running into whatever follows.
EXIT_STUB_WORDS: tuple[int, ...] = (
    _i_type(0x09, _ZERO, _V0, SYS_EXIT_GROUP),  # addiu $v0, $zero, 4246
    0x0000000C,  # syscall
    _i_type(0x04, _ZERO, _ZERO, -1),  # beq $zero, $zero, . (b .)
    0x00000000,  # nop (delay slot)
)

_STATIC_IR = r"""
; ---- exit ----------------------------------------------------------------------------------
; Encoded words, placed in .text by name: our linker gathers every .text* section into the
; executable segment. The data layout is big-endian, so each i32 is stored as the instruction.
@opmlc_exit_stub = constant [4 x i32] [EXIT_WORDS], section ".text", align 4

declare void @task(ptr, i32)

define void @_start() #1 {
entry:
  ; volatile: the descriptor is written by whoever starts the VM, not by this program.
  %node = load volatile i32, ptr inttoptr (i32 TASK_DESCRIPTOR to ptr), align 4
  call void @task(ptr inttoptr (i32 TASK_TABLE to ptr), i32 %node)
  call void @opmlc_exit_stub(i32 0) #2
  unreachable
}

; ---- memory --------------------------------------------------------------------------------
define ptr @memcpy(ptr %dst, ptr %src, i32 %n) #0 {
entry:
  %d = ptrtoint ptr %dst to i32
  %s = ptrtoint ptr %src to i32
  %ds = or i32 %d, %s
  %mis = and i32 %ds, 3
  %aligned = icmp eq i32 %mis, 0
  %nw = lshr i32 %n, 2
  %nwb = shl i32 %nw, 2
  %wbytes = select i1 %aligned, i32 %nwb, i32 0
  %anyw = icmp ne i32 %wbytes, 0
  br i1 %anyw, label %words, label %tail

words:
  %wi = phi i32 [ 0, %entry ], [ %wi.next, %words ]
  %ws = getelementptr i8, ptr %src, i32 %wi
  %wv = load i32, ptr %ws, align 4
  %wd = getelementptr i8, ptr %dst, i32 %wi
  store i32 %wv, ptr %wd, align 4
  %wi.next = add i32 %wi, 4
  %wmore = icmp ult i32 %wi.next, %wbytes
  br i1 %wmore, label %words, label %tail

tail:
  %start = phi i32 [ 0, %entry ], [ %wbytes, %words ]
  %anyb = icmp ult i32 %start, %n
  br i1 %anyb, label %bytes, label %done

bytes:
  %bi = phi i32 [ %start, %tail ], [ %bi.next, %bytes ]
  %bs = getelementptr i8, ptr %src, i32 %bi
  %bv = load i8, ptr %bs, align 1
  %bd = getelementptr i8, ptr %dst, i32 %bi
  store i8 %bv, ptr %bd, align 1
  %bi.next = add i32 %bi, 1
  %bmore = icmp ult i32 %bi.next, %n
  br i1 %bmore, label %bytes, label %done

done:
  ret ptr %dst
}

; Forward copy (memcpy) is safe unless dst lies inside [src, src + n); then copy backwards.
define ptr @memmove(ptr %dst, ptr %src, i32 %n) #0 {
entry:
  %d = ptrtoint ptr %dst to i32
  %s = ptrtoint ptr %src to i32
  %delta = sub i32 %d, %s
  %forward = icmp uge i32 %delta, %n
  br i1 %forward, label %fwd, label %back.check

fwd:
  %r = call ptr @memcpy(ptr %dst, ptr %src, i32 %n)
  ret ptr %dst

back.check:
  %any = icmp ne i32 %n, 0
  br i1 %any, label %back, label %done

back:
  %i = phi i32 [ %n, %back.check ], [ %i.next, %back ]
  %i.next = sub i32 %i, 1
  %ps = getelementptr i8, ptr %src, i32 %i.next
  %v = load i8, ptr %ps, align 1
  %pd = getelementptr i8, ptr %dst, i32 %i.next
  store i8 %v, ptr %pd, align 1
  %more = icmp ne i32 %i.next, 0
  br i1 %more, label %back, label %done

done:
  ret ptr %dst
}

define ptr @memset(ptr %dst, i32 %c, i32 %n) #0 {
entry:
  %d = ptrtoint ptr %dst to i32
  %mis = and i32 %d, 3
  %aligned = icmp eq i32 %mis, 0
  %byte = and i32 %c, 255
  %b8 = trunc i32 %byte to i8
  %pattern = mul i32 %byte, 16843009
  %nw = lshr i32 %n, 2
  %nwb = shl i32 %nw, 2
  %wbytes = select i1 %aligned, i32 %nwb, i32 0
  %anyw = icmp ne i32 %wbytes, 0
  br i1 %anyw, label %words, label %tail

words:
  %wi = phi i32 [ 0, %entry ], [ %wi.next, %words ]
  %wd = getelementptr i8, ptr %dst, i32 %wi
  store i32 %pattern, ptr %wd, align 4
  %wi.next = add i32 %wi, 4
  %wmore = icmp ult i32 %wi.next, %wbytes
  br i1 %wmore, label %words, label %tail

tail:
  %start = phi i32 [ 0, %entry ], [ %wbytes, %words ]
  %anyb = icmp ult i32 %start, %n
  br i1 %anyb, label %bytes, label %done

bytes:
  %bi = phi i32 [ %start, %tail ], [ %bi.next, %bytes ]
  %bd = getelementptr i8, ptr %dst, i32 %bi
  store i8 %b8, ptr %bd, align 1
  %bi.next = add i32 %bi, 1
  %bmore = icmp ult i32 %bi.next, %n
  br i1 %bmore, label %bytes, label %done

done:
  ret ptr %dst
}

; ---- 64-bit division -----------------------------------------------------------------------
; Unsigned n / d, remainder stored at %rem. When both fit in 32 bits, the hardware divu does it
; (d != 0 is checked first: divu by zero panics the VM). Otherwise a restoring shift-subtract
; loop over the significant bits of n. The remainder register can need 65 bits when d >= 2^63;
; %carry is that 65th bit, and then r >= d holds and the 64-bit subtraction wraps to the right
; value. d = 0 gives quotient 2^k - 1 (k = significant bits of n) and remainder n.
define internal i64 @opmlc_udivmod64(i64 %n, i64 %d, ptr %rem) #0 {
entry:
  %nd = or i64 %n, %d
  %hi = lshr i64 %nd, 32
  %small = icmp eq i64 %hi, 0
  %dnz = icmp ne i64 %d, 0
  %fast = and i1 %small, %dnz
  br i1 %fast, label %fast32, label %check.zero

fast32:
  %n32 = trunc i64 %n to i32
  %d32 = trunc i64 %d to i32
  %q32 = udiv i32 %n32, %d32
  %r32 = urem i32 %n32, %d32
  %q64 = zext i32 %q32 to i64
  %r64 = zext i32 %r32 to i64
  store i64 %r64, ptr %rem, align 8
  ret i64 %q64

check.zero:
  %nz = icmp eq i64 %n, 0
  br i1 %nz, label %zero, label %setup

zero:
  store i64 0, ptr %rem, align 8
  ret i64 0

setup:
  ; n != 0, so 0 <= lz <= 63: the shift below is in range.
  %lz = call i64 @llvm.ctlz.i64(i64 %n, i1 true)
  %nn0 = shl i64 %n, %lz
  %lz32 = trunc i64 %lz to i32
  %bits = sub i32 64, %lz32
  br label %loop

loop:
  %k = phi i32 [ %bits, %setup ], [ %k.next, %loop ]
  %nn = phi i64 [ %nn0, %setup ], [ %nn.next, %loop ]
  %q = phi i64 [ 0, %setup ], [ %q.next, %loop ]
  %r = phi i64 [ 0, %setup ], [ %r.next, %loop ]
  %bit = lshr i64 %nn, 63
  %nn.next = shl i64 %nn, 1
  %carry = icmp slt i64 %r, 0
  %r2 = shl i64 %r, 1
  %r3 = or i64 %r2, %bit
  %ge = icmp uge i64 %r3, %d
  %take = or i1 %carry, %ge
  %rsub = sub i64 %r3, %d
  %r.next = select i1 %take, i64 %rsub, i64 %r3
  %qbit = zext i1 %take to i64
  %q2 = shl i64 %q, 1
  %q.next = or i64 %q2, %qbit
  %k.next = sub i32 %k, 1
  %more = icmp ne i32 %k.next, 0
  br i1 %more, label %loop, label %exit

exit:
  store i64 %r.next, ptr %rem, align 8
  ret i64 %q.next
}

define i64 @__udivdi3(i64 %n, i64 %d) #0 {
  %rem = alloca i64, align 8
  %q = call i64 @opmlc_udivmod64(i64 %n, i64 %d, ptr %rem)
  ret i64 %q
}

define i64 @__umoddi3(i64 %n, i64 %d) #0 {
  %rem = alloca i64, align 8
  %q = call i64 @opmlc_udivmod64(i64 %n, i64 %d, ptr %rem)
  %r = load i64, ptr %rem, align 8
  ret i64 %r
}

; Signed: divide the magnitudes (|INT64_MIN| = 2^63 as unsigned, so the wrapping negation is
; right), then fix the signs: the quotient truncates toward zero, the remainder takes the
; dividend's sign (C semantics, as LLVM's sdiv/srem). INT64_MIN / -1 gives INT64_MIN, rem 0.
define i64 @__divdi3(i64 %a, i64 %b) #0 {
  %rem = alloca i64, align 8
  %an = icmp slt i64 %a, 0
  %bn = icmp slt i64 %b, 0
  %na = sub i64 0, %a
  %nb = sub i64 0, %b
  %ua = select i1 %an, i64 %na, i64 %a
  %ub = select i1 %bn, i64 %nb, i64 %b
  %q = call i64 @opmlc_udivmod64(i64 %ua, i64 %ub, ptr %rem)
  %neg = xor i1 %an, %bn
  %nq = sub i64 0, %q
  %res = select i1 %neg, i64 %nq, i64 %q
  ret i64 %res
}

define i64 @__moddi3(i64 %a, i64 %b) #0 {
  %rem = alloca i64, align 8
  %an = icmp slt i64 %a, 0
  %bn = icmp slt i64 %b, 0
  %na = sub i64 0, %a
  %nb = sub i64 0, %b
  %ua = select i1 %an, i64 %na, i64 %a
  %ub = select i1 %bn, i64 %nb, i64 %b
  %q = call i64 @opmlc_udivmod64(i64 %ua, i64 %ub, ptr %rem)
  %r = load i64, ptr %rem, align 8
  %nr = sub i64 0, %r
  %res = select i1 %an, i64 %nr, i64 %r
  ret i64 %res
}

declare i64 @llvm.ctlz.i64(i64, i1)

attributes #0 = { nounwind "no-builtins" }
attributes #1 = { noreturn nounwind "no-builtins" }
attributes #2 = { noreturn nounwind }
"""

# Symbols the runtime defines for the model's object (besides `_start`).
PROVIDED_SYMBOLS = frozenset(
    {"memcpy", "memmove", "memset", "__divdi3", "__udivdi3", "__moddi3", "__umoddi3"}
)


def build_runtime_ir() -> str:
    """The runtime module (the same for every program).

    The text names no target: opmlc/backend/target.py sets the MIPS triple and data layout.
    """
    words = ", ".join(f"i32 {w}" for w in EXIT_STUB_WORDS)
    static = (_STATIC_IR.replace("EXIT_WORDS", words).replace("TASK_DESCRIPTOR", str(TASK_DESCRIPTOR))
              .replace("TASK_TABLE", str(TASK_TABLE)))
    return "; opmlc MIPS runtime (runtime/mips.py)\n" + static
