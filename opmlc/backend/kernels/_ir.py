"""LLVM IR building blocks shared by the kernels: types, counted loops, and the integer
primitives of opmlc/ir/fixedpoint.py (round-half-up shifts, saturation, the Q30 exp).

Each primitive here is the IR twin of the numpy function of the same name, and obeys
docs/DESIGN.md "Determinism rules": no nsw/nuw/exact flags, no `inbounds`, every shift amount
provably below the bit width (variable shifts are clamped first), no division by zero.

Saturation counting (the twin of fixedpoint.count_saturation): while a module is generated
inside `counting_module(module)` — the native build only — `saturate32` and `count` add the
elements they flag to a per-function i32 counter (a kernel saturates at most its output's
< 2^30 elements; i32 keeps vectorised counts as wide as the data): a stack slot in a kernel (promoted to a
register by mem2reg, so a count is a compare and an add, and loops still vectorise), or the
counter pointer passed as the last argument of an internal helper declared with
`counts=True`. Outside such a context nothing is emitted: the MIPS module's text, hence the
program image, is exactly what it would be without counting.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from llvmlite import ir

from opmlc.ir import fixedpoint as fp
from opmlc.ir.types import DType

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
PTR = ir.PointerType()
VOID = ir.VoidType()

ELEM = {DType.FX32: I32, DType.I32: I32, DType.I64: I64, DType.BOOL: I8, DType.F32: I32, DType.I8: I8}


def c32(v: int) -> ir.Constant:
    return ir.Constant(I32, v)


def c64(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


@contextmanager
def loop(b: ir.IRBuilder, count: int | ir.Value, name: str = "i", start: ir.Value | None = None) -> Iterator[ir.Value]:
    """for (i = start; i < count; i++) { body } with an i32 counter (start 0 unless given);
    yields i inside the body."""
    count = c32(count) if isinstance(count, int) else count
    pre = b.block
    head = b.append_basic_block(f"{name}.head")
    body = b.append_basic_block(f"{name}.body")
    done = b.append_basic_block(f"{name}.done")
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I32, name)
    i.add_incoming(c32(0) if start is None else start, pre)
    b.cbranch(b.icmp_unsigned("<", i, count), body, done)
    b.position_at_end(body)
    yield i
    i.add_incoming(b.add(i, c32(1)), b.block)
    b.branch(head)
    b.position_at_end(done)


# A node part (docs/DESIGN.md "Tasks: the step budget and node parts"): a ranged kernel computes
# only the flat output elements [lo, hi), two i32 arguments codegen appends and names here.
RANGE_ATTR = "opmlc_part_range"


def part_range(b: ir.IRBuilder) -> tuple[ir.Value, ir.Value] | None:
    """(lo, hi) of the ranged kernel `b` writes, or None for a kernel over its whole output."""
    return getattr(b.function, RANGE_ATTR, None)


@contextmanager
def out_loop(b: ir.IRBuilder, numel: int, name: str = "i") -> Iterator[ir.Value]:
    """Loop over the flat output elements the kernel computes: all `numel`, or its part's."""
    rng = part_range(b)
    with (loop(b, numel, name) if rng is None else loop(b, rng[1], name, start=rng[0])) as i:
        yield i


def flat_index(b: ir.IRBuilder, e: ir.Value, shape: tuple[int, ...]) -> list[ir.Value]:
    """The multi-index (row-major) of flat element e of `shape`: unsigned divisions by
    constants, which LLVM turns into multiplications."""
    idx = []
    for d in reversed(shape):
        idx.append(b.urem(e, c32(d)))
        e = b.udiv(e, c32(d))
    return idx[::-1]


@contextmanager
def out_nest(b: ir.IRBuilder, shape: tuple[int, ...], name: str = "d") -> Iterator[list[ir.Value]]:
    """`nest` over the output's indices, or, in a ranged kernel, one loop over its part's flat
    elements [lo, hi), each yielded as its multi-index (the same body serves both)."""
    rng = part_range(b)
    if rng is None:
        with nest(b, shape, name) as idx:
            yield idx
        return
    with loop(b, rng[1], f"{name}.e", start=rng[0]) as e:
        yield flat_index(b, e, shape)


@contextmanager
def touched_rows(b: ir.IRBuilder, rows: int, n: int) -> Iterator[tuple[ir.Value, ir.Value, ir.Value]]:
    """Rows of n elements (softmax, norm): every row, or in a ranged kernel the rows its part
    [lo, hi) touches, each computed in full. Yields (row, first, end): the row's elements to
    write are first ≤ j < end (0, n for a whole row; a part may cut its first and last row)."""
    rng = part_range(b)
    if rng is None:
        with loop(b, rows, "row") as r:
            yield r, c32(0), c32(n)
        return
    lo, hi = rng
    first_row = b.udiv(lo, c32(n))
    end_row = b.select(b.icmp_unsigned("<", lo, hi), b.add(b.udiv(b.sub(hi, c32(1)), c32(n)), c32(1)), first_row)
    with loop(b, end_row, "row", start=first_row) as r:
        base = b.mul(r, c32(n))
        first = b.select(b.icmp_unsigned(">", lo, base), b.sub(lo, base), c32(0))
        room = b.sub(hi, base)  # > 0: the row starts before hi
        end = b.select(b.icmp_unsigned("<", room, c32(n)), room, c32(n))
        yield r, first, end


def entry_alloca(b: ir.IRBuilder, ty: ir.Type, count: int = 1, name: str = "") -> ir.Value:
    """A stack slot in the entry block, where mem2reg/SROA can promote it."""
    fn = b.function
    with b.goto_block(fn.entry_basic_block):
        if fn.entry_basic_block.instructions:
            b.position_before(fn.entry_basic_block.instructions[0])
        return b.alloca(ty, size=None if count == 1 else c32(count), name=name)


def elem_ptr(b: ir.IRBuilder, base: ir.Value, index: ir.Value, ty: ir.Type) -> ir.Value:
    return b.gep(base, [index], source_etype=ty)


def load(b: ir.IRBuilder, base: ir.Value, index: ir.Value, ty: ir.Type = I32) -> ir.Value:
    return b.load(elem_ptr(b, base, index, ty), typ=ty)


def store(b: ir.IRBuilder, value: ir.Value, base: ir.Value, index: ir.Value) -> None:
    b.store(value, elem_ptr(b, base, index, value.type))


def sext64(b: ir.IRBuilder, v: ir.Value) -> ir.Value:
    return b.sext(v, I64)


def mul32(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    """x · y for i64 values the caller proves to lie in the int32 range: the same bits as an
    i64 multiply, but written as a product of sign-extended i32s, which MIPS32 does in one
    `mult` (a general i64 product takes three multiplies and the carries).

    In the host module the two i32 halves are frozen first: without that barrier InstCombine
    folds a rounding shift before the truncation into the other operand (a Horner step's
    (p·t + 2^29) >> 30 becomes (p·4t + 2^31) >> 32), which then has 34 significant bits and
    needs a full 64-bit multiply (`vpmullq`, 3 µops) instead of `vpmuldq` (1 µop). `freeze`
    of a value that is never poison (no flags here) is that value: the bits are the same."""
    from opmlc.backend.kernels._host import host  # _host imports this module

    if host(b):
        x32, y32 = (freeze(b, b.trunc(v, I32)) for v in (x, y))
        return b.mul(b.sext(x32, I64), b.sext(y32, I64))
    return b.mul(b.sext(b.trunc(x, I32), I64), b.sext(b.trunc(y, I32), I64))


def freeze(b: ir.IRBuilder, v: ir.Value) -> ir.Value:
    """LLVM's `freeze v` (llvmlite's builder has no method for it)."""
    instr = ir.instructions.Instruction(b.block, v.type, "freeze", [v])
    b._insert(instr)
    return instr


def shr_round(b: ir.IRBuilder, x: ir.Value, s: int) -> ir.Value:
    """fixedpoint.shr_round with a constant shift 0..62."""
    assert 0 <= s <= 62
    if s == 0:
        return x
    return b.ashr(b.add(x, c64(1 << (s - 1))), c64(s))


def shr_round_var(b: ir.IRBuilder, x: ir.Value, s: ir.Value, max_shift: int) -> ir.Value:
    """fixedpoint.shr_round with an i64 shift, clamped to 0..max_shift (≤ 62) first."""
    s = b.select(b.icmp_signed("<", s, c64(0)), c64(0), s)
    s = b.select(b.icmp_signed(">", s, c64(max_shift)), c64(max_shift), s)
    is_zero = b.icmp_signed("==", s, c64(0))
    half = b.shl(c64(1), b.select(is_zero, c64(0), b.sub(s, c64(1))))
    half = b.select(is_zero, c64(0), half)
    return b.ashr(b.add(x, half), s)


def shl(b: ir.IRBuilder, x: ir.Value, s: int) -> ir.Value:
    assert 0 <= s <= 63
    return x if s == 0 else b.shl(x, c64(s))


def rescale(b: ir.IRBuilder, x: ir.Value, from_frac: int, to_frac: int) -> ir.Value:
    """fixedpoint.rescale: exact left shift or rounded right shift of an i64."""
    if to_frac >= from_frac:
        return shl(b, x, to_frac - from_frac)
    return shr_round(b, x, from_frac - to_frac)


@dataclass
class _Counting:
    module: ir.Module
    slots: dict[str, ir.Value] = field(default_factory=dict)  # function name → its i32 counter
    counted_helpers: set[str] = field(default_factory=set)  # internal functions taking a counter
    suspended: dict[str, int] = field(default_factory=dict)  # function name → uncounted() depth


_counting: ContextVar[_Counting | None] = ContextVar("opmlc_counting", default=None)


@contextmanager
def counting_module(module: ir.Module) -> Iterator[None]:
    """Generate `module` with saturation counters (see the module docstring)."""
    token = _counting.set(_Counting(module))
    try:
        yield
    finally:
        _counting.reset(token)


def _state(b: ir.IRBuilder) -> _Counting | None:
    st = _counting.get()
    return st if st is not None and b.module is st.module else None


def counting(b: ir.IRBuilder) -> bool:
    """Whether saturation is counted in the function `b` is writing (counts not suspended)."""
    st = _state(b)
    return st is not None and not st.suspended.get(b.function.name)


@contextmanager
def uncounted(b: ir.IRBuilder) -> Iterator[None]:
    """Suspend implicit counting (fixedpoint.uncounted): the op counts these elements itself."""
    st = _state(b)
    name = b.function.name
    if st is not None:
        st.suspended[name] = st.suspended.get(name, 0) + 1
    try:
        yield
    finally:
        if st is not None:
            st.suspended[name] -= 1


def counter_slot(b: ir.IRBuilder) -> ir.Value:
    """The i32 counter of the function `b` writes in (made on first use in a kernel)."""
    st = _state(b)
    assert st is not None
    fn = b.function
    slot = st.slots.get(fn.name)
    if slot is None:
        if fn.name in st.counted_helpers:
            slot = fn.args[-1]
        else:
            entry = fn.entry_basic_block
            with b.goto_block(entry):
                if entry.instructions:
                    b.position_before(entry.instructions[0])
                slot = b.alloca(I32, name="saturated")
                b.store(c32(0), slot)
        st.slots[fn.name] = slot
    return slot


def counted_slot(fn: ir.Function) -> ir.Value | None:
    """A kernel's counter if its body counted anything (codegen returns its value)."""
    st = _counting.get()
    return None if st is None else st.slots.get(fn.name)


def count(b: ir.IRBuilder, flag: ir.Value) -> None:
    """Add an i1 `flag` (1: this element saturated) to the counter, when counting."""
    if counting(b):
        slot = counter_slot(b)
        b.store(b.add(b.load(slot, typ=I32), b.zext(flag, I32)), slot)


def out_of_int32(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """i1: the i64 x lies outside the int32 range (saturate32 would clamp it)."""
    return b.or_(b.icmp_signed("<", x, c64(fp.INT32_MIN)), b.icmp_signed(">", x, c64(fp.INT32_MAX)))


def saturate32(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """fixedpoint.saturate32: clamp an i64 to the int32 range and truncate (counted)."""
    wide = x
    x = b.select(b.icmp_signed("<", x, c64(fp.INT32_MIN)), c64(fp.INT32_MIN), x)
    x = b.select(b.icmp_signed(">", x, c64(fp.INT32_MAX)), c64(fp.INT32_MAX), x)
    if counting(b):  # outside int32 (clamped ≠ original): an add and an unsigned compare, and
        count(b, out_of_int32(b, wide))  # the clamp itself is left to a saturating narrow store
    return b.trunc(x, I32)


def internal_function(module: ir.Module, name: str, ret: ir.Type, args: list[ir.Type],
                      counts: bool = False) -> tuple[ir.Function, ir.IRBuilder | None]:
    """A module-internal helper function, made once per module.

    Returns the function and a builder at its entry block when it was just created (the caller
    writes its body), or None when the module already has it. `counts`: the helper may
    saturate; in a counting module it takes its caller's counter as an extra last argument
    (call it with `call_helper`).
    """
    if name in module.globals:
        return module.globals[name], None
    st = _counting.get()
    if counts and st is not None and st.module is module:
        st.counted_helpers.add(name)
        args = [*args, PTR]
    fn = ir.Function(module, ir.FunctionType(ret, args), name)
    fn.linkage = "internal"
    return fn, ir.IRBuilder(fn.append_basic_block("entry"))


def call_helper(b: ir.IRBuilder, fn: ir.Function, args: list[ir.Value]) -> ir.Value:
    """Call an internal helper, passing the caller's counter to one that counts."""
    st = _state(b)
    if st is not None and fn.name in st.counted_helpers:
        assert counting(b), "a counting helper called inside uncounted()"
        args = [*args, counter_slot(b)]
    return b.call(fn, args)


def exp2_frac_q30(b: ir.IRBuilder, r: ir.Value) -> ir.Value:
    """fixedpoint.exp2_frac_q30 inline: Horner's rule in Q30 for r in [0, 2^30).

    Every partial sum p lies in [0, 2^31) (the coefficients are positive and p ends below
    2^31), so each product is a 32 × 32-bit one (mul32)."""
    p = c64(fp.EXP2_Q30[-1])
    for c in fp.EXP2_Q30[-2::-1]:
        p = b.add(shr_round(b, mul32(b, p, r), fp.Q30), c64(c))
    return p


def exp_nonpositive_q30(module: ir.Module) -> ir.Function:
    """fixedpoint.exp_nonpositive_q30 as an internal function `i64 (i64 d, i64 frac)`."""
    fn, b = internal_function(module, "opmlc.exp_q30", I64, [I64, I64])
    if b is not None:
        d, frac = fn.args
        t = shr_round_var(b, b.mul(d, c64(fp.LOG2E_Q30)), frac, fp.Q30)
        k = b.ashr(t, c64(fp.Q30))
        p = exp2_frac_q30(b, b.sub(t, b.shl(k, c64(fp.Q30))))
        b.ret(shr_round_var(b, p, b.sub(c64(0), k), 32))
    return fn


def strides(shape: tuple[int, ...]) -> list[int]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return out[::-1]


def broadcast_strides(src: tuple[int, ...], out: tuple[int, ...]) -> list[int]:
    """Element strides of `src` seen with the (numpy-broadcast) shape `out`: 0 where broadcast."""
    pad = (1,) * (len(out) - len(src)) + tuple(src)
    return [0 if d == 1 and o != 1 else s for d, o, s in zip(pad, out, strides(pad), strict=True)]


def linear_index(b: ir.IRBuilder, idx: list[ir.Value], st: list[int]) -> ir.Value:
    acc = c32(0)
    for i, s in zip(idx, st, strict=True):
        if s:
            acc = b.add(acc, b.mul(i, c32(s)))
    return acc


@contextmanager
def nest(b: ir.IRBuilder, shape: tuple[int, ...], name: str = "d") -> Iterator[list[ir.Value]]:
    """Nested loops over every index of `shape` (row-major); yields the index list."""
    if not shape:
        yield []
        return
    with loop(b, shape[0], f"{name}0") as i0:
        if len(shape) == 1:
            yield [i0]
        else:
            with nest(b, shape[1:], name + "_") as rest:
                yield [i0, *rest]
