"""Host-only arithmetic for the portable kernels: while the native build's module is generated
(codegen, `host_kernels`), `round_div` (kernels/_fx.py) divides through the FPU instead of
`idiv`, exactly; the MIPS module never enters this context, so its text is what it was.

Why: an i64 `sdiv` costs tens of cycles and no x86 vector unit has one, so a loop that divides
(sigmoid, tanh, erf, softmax, the norms) stays scalar and slow. A double division is vectorised
(`vdivpd`), and corrected to the exact floor quotient here.

Exactness (`round_div_host`, for d > 0 as round_div's callers guarantee): the fast path is
taken when |n| < 2^62 and |n| < 2^50 · d, hence |n / d| < 2^50. Then n and d convert to
doubles with relative error ≤ 2^-53 each, and the quotient rounds with ≤ 2^-53 more, so the
double quotient is within |n/d| · 3·2^-53 < 3/8 of n/d: its floor is floor(n/d) − 1, + 0 or
+ 1, an integer of magnitude < 2^50 + 1 (the conversion back is exact, never out of range).
r = n − q·d is then exact in i64 (|q·d| < |n| + 2d < 2^63) and one step each way brings it into
[0, d): q, r are floor(n/d) and n mod d exactly, as `sdiv`'s path computes them. Any other
(n, d) takes a branch to `sdiv`/`srem`, the portable code itself.

By a reciprocal (`floor_divmod_recip`, a divisor fixed for a whole loop: binary div by a
scalar): q = fl(fl(n) · fl(1 / fl(d))) has four roundings of ≤ 2^-53 relative each instead of
three, so under the same bound |n / d| < 2^50 it is within |n/d| · (4·2^-53 + 2^-104) < 1/2 + ε
< 1 of n/d: its floor is again floor(n/d) − 1, + 0 or + 1, and the same two correction steps
make it exact. A multiply (one vector µop) replaces the division (`vdivpd`: 16 cycles a vector).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from llvmlite import ir

from opmlc.backend.kernels._ir import I64, c64

DOUBLE = ir.DoubleType()

_host_module: ContextVar[ir.Module | None] = ContextVar("opmlc_host_module", default=None)


@contextmanager
def host_arithmetic(module: ir.Module) -> Iterator[None]:
    """Generate `module` with host-only arithmetic (the module docstring)."""
    token = _host_module.set(module)
    try:
        yield
    finally:
        _host_module.reset(token)


def host(b: ir.IRBuilder) -> bool:
    """Whether `b` writes into a module generated for the host."""
    return _host_module.get() is b.module


def is_host_module(module: ir.Module) -> bool:
    """Whether `module` is being generated for the host."""
    return _host_module.get() is module


def _floor_f64(b: ir.IRBuilder) -> ir.Function:
    name = "llvm.floor.f64"
    return b.module.globals.get(name) or ir.Function(b.module, ir.FunctionType(DOUBLE, [DOUBLE]), name)


def floor_divmod_host(b: ir.IRBuilder, n: ir.Value, d: ir.Value, in_fast_range: bool = False
                      ) -> tuple[ir.Value, ir.Value]:
    """(floor(n / d), n mod d) for i64 n and d > 0, exactly (module docstring).

    `in_fast_range`: the caller has proven |n| < 2^62 and |n| < 2^50 · d for every operand it
    passes (e.g. 0 ≤ n < 2^62 and d ≥ 2^12), so only the FPU path is emitted: no branch to
    `sdiv`, whose scalar fallback in every vector iteration costs a loop about a third of its
    time (sigmoid, tanh)."""
    if in_fast_range:
        return _fast_divmod(b, n, d)
    neg = b.icmp_signed("<", n, c64(0))
    mag = b.select(neg, b.sub(c64(0), n), n)  # |n|: INT64_MIN stays negative, failing the test below
    in_range = b.icmp_unsigned("<", b.add(n, c64(1 << 62)), c64(1 << 63))  # −2^62 ≤ n < 2^62
    fast_ok = b.and_(in_range, b.icmp_signed("<", b.ashr(mag, c64(50)), d))
    fast = b.append_basic_block("div.fast")
    slow = b.append_basic_block("div.slow")
    done = b.append_basic_block("div.done")
    b.cbranch(fast_ok, fast, slow)

    b.position_at_end(fast)
    q_fast, r_fast = _fast_divmod(b, n, d)
    fast_end = b.block
    b.branch(done)

    b.position_at_end(slow)
    q = b.sdiv(n, d)
    r = b.srem(n, d)
    under = b.icmp_signed("<", r, c64(0))
    q_slow = b.sub(q, b.zext(under, I64))
    r_slow = b.add(r, b.select(under, d, c64(0)))
    slow_end = b.block
    b.branch(done)

    b.position_at_end(done)
    q = b.phi(I64)
    q.add_incoming(q_fast, fast_end)
    q.add_incoming(q_slow, slow_end)
    r = b.phi(I64)
    r.add_incoming(r_fast, fast_end)
    r.add_incoming(r_slow, slow_end)
    return q, r


def reciprocal(b: ir.IRBuilder, d: ir.Value) -> ir.Value:
    """1 / d as a double, for `floor_divmod_recip` (compute it once, before the loop)."""
    return b.fdiv(ir.Constant(DOUBLE, 1.0), b.sitofp(d, DOUBLE))


def floor_divmod_recip(b: ir.IRBuilder, n: ir.Value, d: ir.Value, recip: ir.Value) -> tuple[ir.Value, ir.Value]:
    """(floor(n / d), n mod d) exactly, for d > 0, |n| < 2^62 and |n| < 2^50 · d (the caller
    proves it, as for `in_fast_range`), given recip = `reciprocal(b, d)` (module docstring)."""
    return _fast_divmod(b, n, d, recip)


def _fast_divmod(b: ir.IRBuilder, n: ir.Value, d: ir.Value, recip: ir.Value | None = None
                 ) -> tuple[ir.Value, ir.Value]:
    """The FPU's quotient (n / d, or n · recip) corrected to the exact floor (module docstring)."""
    nf = b.sitofp(n, DOUBLE)
    qf = b.fdiv(nf, b.sitofp(d, DOUBLE)) if recip is None else b.fmul(nf, recip)
    q = b.fptosi(b.call(_floor_f64(b), [qf]), I64)
    r = b.sub(n, b.mul(q, d))
    under = b.icmp_signed("<", r, c64(0))
    q = b.sub(q, b.zext(under, I64))
    r = b.add(r, b.select(under, d, c64(0)))
    over = b.icmp_signed(">=", r, d)
    return b.add(q, b.zext(over, I64)), b.sub(r, b.select(over, d, c64(0)))
