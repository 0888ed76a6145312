"""The native build's edge: a float input quantized (fixedpoint.quantize) or an i64 input narrowed
to i32 straight into its buffer, by one host function call per input.

Place in the pipeline: `codegen.generate_module(graph, host_kernels=True)` (the native build
only) adds these functions to the host module; `opmlc.run(build, inputs, backend="native")`
(NativeSession.put_input) calls them on every run instead of a chain of numpy passes (six
passes and temporaries: ~9 µs for 784 elements, against ~1 µs here). The MIPS module never
has them: the graph's inputs reach the VM already quantized.

Exactness: fixedpoint.quantize is the definition, floor(x · 2^f + 0.5) in float64, clipped to
int32 and counted when a finite x clips. Here x (float32 widened exactly, or float64) is
multiplied by 2^f (exact but for overflow, as in numpy), 0.5 is added in a separate, equally
rounded step (plain fmul and fadd: LLVM contracts them into an FMA only when told to), then
`llvm.floor`: the same IEEE operations in the same order, hence the same doubles. The clip and
the conversion of a value in [INT32_MIN, INT32_MAX] are exact. A NaN or infinity anywhere makes
the function return −1 (nothing else is promised about the buffer then): the caller takes the
general path, which refuses such an input with its one-line error.

- `i64 opmlc.quantize_f32(ptr src, ptr dst, i64 n, i64 frac)`: elements clipped, or −1;
- `i64 opmlc.quantize_f64(ptr src, ptr dst, i64 n, i64 frac)`: likewise for float64 inputs;
- `i64 opmlc.narrow_i64(ptr src, ptr dst, i64 n)`: i64 → i32, the elements outside the i32
  range (the caller refuses the input when there is any: never a silent wrap-around).
"""

from __future__ import annotations

from llvmlite import ir

from opmlc.backend.kernels._ir import I32, I64, PTR, c64
from opmlc.backend.target import NARROW_I64, QUANTIZE_F32, QUANTIZE_F64
from opmlc.ir.fixedpoint import INT32_MAX, INT32_MIN

DOUBLE = ir.DoubleType()
FLOAT = ir.FloatType()


def emit_edge(module: ir.Module) -> None:
    """Add the edge functions (module docstring) to a host module."""
    _quantize(module, QUANTIZE_F32, FLOAT)
    _quantize(module, QUANTIZE_F64, DOUBLE)
    _narrow(module)


def _intrinsic(module: ir.Module, name: str) -> ir.Function:
    return module.globals.get(name) or ir.Function(module, ir.FunctionType(DOUBLE, [DOUBLE]), name)


def _counted_loop(b: ir.IRBuilder, n: ir.Value, names: tuple[str, ...]):
    """The head of a loop over i in [0, n) carrying i64 accumulators (one phi per name, from 0):
    returns (i, accumulators, head, done) with the builder in the body; the caller adds the
    phis' incoming values from the body's end and branches back to head."""
    pre = b.block
    fn = b.function
    head, body, done = (fn.append_basic_block(x) for x in ("head", "body", "done"))
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64, "i")
    i.add_incoming(c64(0), pre)
    accs = []
    for name in names:
        a = b.phi(I64, name)
        a.add_incoming(c64(0), pre)
        accs.append(a)
    b.cbranch(b.icmp_signed("<", i, n), body, done)
    b.position_at_end(body)
    return i, accs, head, done


def _quantize(module: ir.Module, name: str, src_ty: ir.Type) -> None:
    fn = ir.Function(module, ir.FunctionType(I64, [PTR, PTR, I64, I64]), name)
    fn.attributes.add("nounwind")
    src, dst, n, frac = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    # 2^frac as a double: exact (frac ≤ 62, a power of two); the shift amount is masked in range
    scale = b.sitofp(b.shl(c64(1), b.and_(frac, c64(63))), DOUBLE)
    i, (clipped, bad), head, done = _counted_loop(b, n, ("clipped", "bad"))
    x = b.load(b.gep(src, [i], source_etype=src_ty), typ=src_ty)
    xd = b.fpext(x, DOUBLE) if src_ty is not DOUBLE else x
    y = b.call(_intrinsic(module, "llvm.floor.f64"), [b.fadd(b.fmul(xd, scale), ir.Constant(DOUBLE, 0.5))])
    finite = b.fcmp_ordered("<", b.call(_intrinsic(module, "llvm.fabs.f64"), [xd]), ir.Constant(DOUBLE, float("inf")))
    lo = b.fcmp_ordered("<", y, ir.Constant(DOUBLE, float(INT32_MIN)))
    hi = b.fcmp_ordered(">", y, ir.Constant(DOUBLE, float(INT32_MAX)))
    clip = b.and_(b.or_(lo, hi), finite)
    # a NaN product (y unordered) is replaced by 0 before the conversion: fptosi never sees it
    y = b.select(b.fcmp_unordered("uno", y, y), ir.Constant(DOUBLE, 0.0), y)
    y = b.select(lo, ir.Constant(DOUBLE, float(INT32_MIN)), b.select(hi, ir.Constant(DOUBLE, float(INT32_MAX)), y))
    b.store(b.fptosi(y, I32), b.gep(dst, [i], source_etype=I32))
    clipped.add_incoming(b.add(clipped, b.zext(clip, I64)), b.block)
    bad.add_incoming(b.or_(bad, b.zext(b.not_(finite), I64)), b.block)
    i.add_incoming(b.add(i, c64(1)), b.block)
    b.branch(head)
    b.position_at_end(done)
    b.ret(b.select(b.icmp_unsigned("!=", bad, c64(0)), c64(-1), clipped))


def _narrow(module: ir.Module) -> None:
    fn = ir.Function(module, ir.FunctionType(I64, [PTR, PTR, I64]), NARROW_I64)
    fn.attributes.add("nounwind")
    src, dst, n = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    i, (outside,), head, done = _counted_loop(b, n, ("outside",))
    x = b.load(b.gep(src, [i], source_etype=I64), typ=I64)
    # x in [−2^31, 2^31) ⟺ x + 2^31 < 2^32 unsigned (wrap-around add: no poison flags)
    out = b.icmp_unsigned(">=", b.add(x, c64(1 << 31)), c64(1 << 32))
    b.store(b.trunc(x, I32), b.gep(dst, [i], source_etype=I32))
    outside.add_incoming(b.add(outside, b.zext(out, I64)), b.block)
    i.add_incoming(b.add(i, c64(1)), b.block)
    b.branch(head)
    b.position_at_end(done)
    b.ret(outside)
