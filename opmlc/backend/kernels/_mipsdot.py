"""Hand-written MIPS leaf routines for the q-kernels' inner loops (kernels/qmatmul.py), emitted
as encoded words into the MIPS module only: the dot product of a block of x (i32) with a block of
8- or 4-bit weights, summed exactly in HI/LO.

Why (docs/DESIGN.md "MIPS cost"): LLVM's MIPS backend selects each `madd` on its own, moving the
i64 accumulator from two GPRs into HI/LO and back around every one (`mtlo mthi madd mflo mfhi`),
so a multiply-add costs at least six instructions with its weight load, and a 4-bit weight's
nibble extraction puts it past issue 13's seven. Here one `madd` chain keeps the sum in HI/LO
for the whole block: `lw x; lb q; madd` per 8-bit weight, `lb; sra` / `sll; sra` per two 4-bit
weights, unrolled, about 3.4–4.4 instructions per multiply-add.

Semantics: `i64 routine(ptr x, ptr q, i32 n, i32 zp)` returns Σ_{k<n} x[k] · (w_k − zp) in
wrap-around int64 (HI:LO wraps exactly so, and every product of two sign-extended i32 is exact),
with w_k = q[k] (signed byte) for `QDOT8`, and for `QDOT4` the signed nibbles of n packed bytes
(w_2i the high nibble of byte i, w_2i+1 the low one; x holds 2n elements). The `_ZP` variants
subtract zp (one `subu` per weight); the others ignore it. They follow the o32 ABI of the
target (arguments in $a0–$a3, the i64 in $v0 (high) / $v1 (low) big-endian, only $t registers,
$v0/$v1 and HI/LO clobbered, no stack), so the kernels call them as ordinary functions. The
native build never sees them: it compiles the kernels' LLVM loops (kernels/_host.py `host`).

The words are a pure function of this file (branches are relative: no relocation), so the
program image stays reproducible; only modules whose kernels call a routine contain it.
"""

from __future__ import annotations

from llvmlite import ir

from opmlc.backend.kernels._ir import I32, I64, PTR
from vm.asm import Asm

# registers (o32 names)
_ZERO, _V0, _V1, _A0, _A1, _A2, _A3, _RA = 0, 2, 3, 4, 5, 6, 7, 31
_T = (8, 9, 10, 11, 12, 13, 14, 15)

QDOT8, QDOT8_ZP, QDOT4, QDOT4_ZP = "opmlc.qdot8", "opmlc.qdot8.zp", "opmlc.qdot4", "opmlc.qdot4.zp"
# bytes of q per iteration of the unrolled loop (8-bit: 8 weights; 4-bit: 4 bytes = 8 weights)
_UNROLL = {8: 8, 4: 4}


def _weights(a: Asm, bits: int, off: int, zp: bool) -> list[int]:
    """Load the weights of byte q[off] (relative to $a1) into $t registers; returns them."""
    if bits == 8:
        a("lb", _T[1], off, _A1)
        regs = [_T[1]]
    else:
        a("lb", _T[1], off, _A1)
        a("sra", _T[2], _T[1], 4)  # the high nibble, sign-extended by lb
        a("sll", _T[1], _T[1], 28)
        a("sra", _T[1], _T[1], 28)  # the low nibble, sign-extended
        regs = [_T[2], _T[1]]
    if zp:
        for r in regs:
            a("subu", r, r, _A3)
    return regs


def _body(a: Asm, bits: int, byte: int, zp: bool) -> None:
    """The multiply-adds of q byte `byte` of the iteration (x relative to $a0)."""
    per = 8 // bits  # weights per byte
    for j, w in enumerate(_weights(a, bits, byte, zp)):
        a("lw", _T[0], 4 * (per * byte + j), _A0)
        a("madd", _T[0], w)


def routine_words(bits: int, zp: bool) -> list[int]:
    """The encoded routine (module docstring) for `bits` 8 or 4, with or without zp."""
    a = Asm(0)
    u = _UNROLL[bits]
    per = 8 // bits
    a("mtlo", _ZERO)
    a("mthi", _ZERO)
    a("addu", _T[6], _A1, _A2)  # end of q
    a("srl", _T[7], _A2, u.bit_length() - 1)
    a("sll", _T[7], _T[7], u.bit_length() - 1)
    a("addu", _T[7], _A1, _T[7])  # end of the unrolled part
    a.branch("beq", "rest", _A1, _T[7])
    a("sll", _ZERO, _ZERO, 0)  # nop
    a.label("loop")
    for byte in range(u):
        _body(a, bits, byte, zp)
    a("addiu", _A1, _A1, u)
    a.branch("bne", "loop", _A1, _T[7])
    a("addiu", _A0, _A0, 4 * per * u)  # delay slot
    a.label("rest")
    a.branch("beq", "done", _A1, _T[6])
    a("sll", _ZERO, _ZERO, 0)
    a.label("one")
    _body(a, bits, 0, zp)
    a("addiu", _A1, _A1, 1)
    a.branch("bne", "one", _A1, _T[6])
    a("addiu", _A0, _A0, 4 * per)  # delay slot
    a.label("done")
    a("mfhi", _V0)
    a("jr", _RA)
    a("mflo", _V1)  # delay slot
    return a.words()


class _Routine(ir.GlobalVariable):
    """An encoded routine: a constant in .text that IR calls with the routine's function type
    (llvmlite prints a call from its callee's `function_type`)."""

    function_type = ir.FunctionType(I64, [PTR, PTR, I32, I32])


def routine(module: ir.Module, bits: int, zp: bool) -> ir.GlobalVariable:
    """The routine as a callable internal constant in `module`'s .text (made once per module)."""
    name = {(8, False): QDOT8, (8, True): QDOT8_ZP, (4, False): QDOT4, (4, True): QDOT4_ZP}[(bits, zp)]
    if name in module.globals:
        return module.globals[name]
    words = routine_words(bits, zp)
    gv = _Routine(module, ir.ArrayType(I32, len(words)), name)
    gv.global_constant = True
    gv.linkage = "internal"
    gv.section = ".text"
    gv.align = 4
    gv.initializer = ir.Constant(ir.ArrayType(I32, len(words)), [ir.Constant(I32, w) for w in words])
    return gv


def qdot(b: ir.IRBuilder, bits: int, x: ir.Value, q: ir.Value, n: ir.Value, zp: ir.Value | None) -> ir.Value:
    """Σ x·(w − zp) over n weights (8-bit) or n bytes (4-bit) as an i64: one routine call."""
    fn = routine(b.module, bits, zp is not None)
    return b.call(fn, [x, q, n, zp if zp is not None else ir.Constant(I32, 0)])
