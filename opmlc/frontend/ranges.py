"""Range analysis: a sound bound on every tensor of a lowered graph, and fractional bits from it.

The frontend's default quantization (`lower_model` without an explicit policy). Each graph
input is given a range — declared (`--input-range NAME=LO,HI`), the calibration samples' range,
or the default [−DEFAULT_INPUT_BOUND, DEFAULT_INPUT_BOUND] for a float input — and intervals are
propagated through the IR graph node by node (interval arithmetic on real values, one interval
per tensor):

- matmul/conv with constant weights: per output channel Σ w⁺·hi + Σ w⁻·lo (+ bias), the exact
  interval of an affine map whose inputs share one interval (loose for deep nets: Σ|w|·max|x|
  grows faster than real activations do); run-time operands: K · the corner products;
- nonlinear outputs have known ranges (sigmoid, softmax [0, 1]; tanh, erf [−1, 1]; a norm's
  |output| ≤ |γ|·√n + |β|); exp, sqrt and the other monotone functions map the endpoints;
- integer tensors are bounded by their dtype, token ids by their use (a gather yields its table's
  range, whatever the index); a tree ensemble's scores by its leaves (per tree the largest leaf
  sum), and a tensor compared by a tree ensemble must hold its thresholds (a graph input
  compared so has its range widened to them).

Per-channel intervals (axis 1) refine the one interval where a CNN keeps channels apart (conv,
relu, pool, a flatten, the Gemm after it): each output channel sums its own input channels' ends.

L2 bounds (l2bounds.py) tighten three kinds of node: a product of two run-time operands (attention
scores: |q·k| ≤ ‖q‖‖k‖), a linear map by a constant weight (|w_n·x| ≤ ‖w_n‖‖x‖) and a sum (each
element at most its row's norm: a decoder's residual stream).

A tensor with bound B gets f = min(MAX_FRAC, floor(30 − log2 B)) bits (`calibrate.frac_for_peak`,
the same formula and factor-2 margin as calibration): it cannot saturate within the inputs'
ranges. B needs no more than the int32 range: where B ≥ 2^30 even f = 0 is not proven safe and
the tensor is reported as one that may saturate; an unbounded tensor (a division by a range that
holds 0) keeps its lowering rule's bits and is reported too. The bits become per-ONNX-name
overrides of a QuantPolicy, the mechanism calibration uses; `lower_model` then lowers again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from opmlc.frontend.calibrate import MAX_FRAC, frac_for_peak
from opmlc.frontend.l2bounds import L2Bounds
from opmlc.ir.fixedpoint import dequantize
from opmlc.ir.graph import Graph, Node
from opmlc.ir.types import DType

# Assumed range of a float graph input nobody declared: |x| ≤ 16 covers normalised and
# standardised features and images scaled to [0, 1] or [−1, 1]; raw data (8-bit pixels, raw
# measurements) needs --input-range (or --calibrate). A wider default would cost every model
# precision: each bound, and so each tensor's quantization step, scales with it.
DEFAULT_INPUT_BOUND = 16.0
INF = math.inf
Interval = tuple[float, float]
DTYPE_RANGE = {DType.I32: (-(2.0**31), 2.0**31 - 1), DType.I64: (-(2.0**63), 2.0**63 - 1), DType.BOOL: (0.0, 1.0),
               DType.F32: (-float(np.finfo(np.float32).max), float(np.finfo(np.float32).max))}  # tree features


@dataclass(frozen=True)
class TensorRange:
    """What the analysis found for one fx32 tensor: its interval and what its bits hold."""

    value: int
    name: str
    lo: float
    hi: float
    frac: int

    @property
    def bound(self) -> float:
        return max(abs(self.lo), abs(self.hi))

    @property
    def capacity(self) -> float:
        """The largest magnitude fx32 holds at these bits."""
        return 2.0 ** (31 - self.frac)

    @property
    def headroom_bits(self) -> float:
        """log2(capacity / bound): how many doublings of the bound still fit (< 0: may saturate)."""
        b = self.bound
        if b == 0:
            return INF
        return math.log2(self.capacity / b) if math.isfinite(b) else -INF

    def to_json(self) -> dict:
        def num(x: float):
            return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")

        return {"name": self.name, "value": self.value, "lo": num(self.lo), "hi": num(self.hi), "frac": self.frac}


def frac_for_bound(bound: float) -> int | None:
    """The bits a tensor bounded by `bound` takes: None if unbounded; 0 if even 0 bits may not hold it."""
    if not math.isfinite(bound):
        return None
    f = frac_for_peak(bound, MAX_FRAC)
    return 0 if f is None else f


def default_range(dtype: DType) -> Interval:
    return (-DEFAULT_INPUT_BOUND, DEFAULT_INPUT_BOUND) if dtype is DType.FX32 else DTYPE_RANGE[dtype]


# -- interval arithmetic ---------------------------------------------------------------------

def _mul(a: float, b: float) -> float:
    return 0.0 if a == 0 or b == 0 else a * b  # a bound times zero is zero, even an infinite bound


def _mulv(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """w · x elementwise, a zero weight giving zero even against an infinite bound (not NaN)."""
    with np.errstate(invalid="ignore"):
        return np.where(w == 0, 0.0, w * x)


def hull(*ivs: Interval) -> Interval:
    return (min(i[0] for i in ivs), max(i[1] for i in ivs))


def mul_iv(a: Interval, b: Interval) -> Interval:
    c = [_mul(x, y) for x in a for y in b]
    return (min(c), max(c))


def mag(a: Interval) -> float:
    return max(abs(a[0]), abs(a[1]))


def affine(w: np.ndarray, axis: int, x: Interval, bias: np.ndarray | None = None) -> Interval:
    """The interval of Σ_axis w·x (+ bias along the kept axes) for every x in `x`: per output,
    the positive weights times one end and the negative ones times the other."""
    pos = np.where(w > 0, w, 0).sum(axis=axis)
    neg = np.where(w < 0, w, 0).sum(axis=axis)
    return affine_sums(pos, neg, x, bias, bool(np.any(w != 0)))


LARGE_WEIGHT = 1 << 22  # a matmul weight above this many elements is bounded in row blocks


def affine_sums(pos: np.ndarray, neg: np.ndarray, x: Interval, bias: np.ndarray | None = None,
                nonzero: bool = True) -> Interval:
    """affine() from the per-output sums of the positive and negative weights."""
    lo = np.minimum(pos * x[0], pos * x[1]) + np.minimum(neg * x[0], neg * x[1]) if math.isfinite(mag(x)) else None
    hi = np.maximum(pos * x[0], pos * x[1]) + np.maximum(neg * x[0], neg * x[1]) if math.isfinite(mag(x)) else None
    if lo is None or hi is None:
        return (-INF, INF) if nonzero else (0.0, 0.0)
    if bias is not None:
        lo, hi = lo + bias, hi + bias
    return (float(np.min(lo)), float(np.max(hi)))


# -- the propagation ------------------------------------------------------------------------

class Analysis:
    """Intervals of every value of `graph`, given the graph inputs' intervals (by input position)."""

    def __init__(self, graph: Graph, input_ranges: list[Interval]) -> None:
        self.graph = graph
        self.iv: dict[int, Interval] = {}
        self.l2 = L2Bounds(self)  # norms of vectors, asked for by products of run-time operands
        for v, r in zip(graph.inputs, input_ranges, strict=True):
            self.iv[v] = (float(r[0]), float(r[1]))
        for v, data in graph.initializers.items():
            self.iv[v] = self._const_range(v, data)
        # per-channel intervals (axis 1) where a CNN's layers keep channels apart: tighter through
        # conv → relu → pool → conv chains and into the Gemm after a flatten
        self.ch: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        # fx32 values at 0 bits that hold exact integers (quantized arithmetic: x_q − zp, an
        # integer convolution's accumulator): 0 bits lose nothing there, so never "coarse"
        self.integral: set[int] = {v for v, d in graph.initializers.items()
                                   if graph.values[v].type.dtype is DType.FX32 and graph.values[v].type.frac == 0}
        for node in graph.nodes:
            if self._exact_integers(node):
                self.integral.add(node.output)
            out = self._node(node)
            try:
                ch = self._channels(node)
            except Exception:  # the refinement is optional: without it the scalar interval stands
                ch = None
            if ch is not None and ch[0].size and np.all(np.isfinite(ch[0])) and np.all(np.isfinite(ch[1])):
                self.ch[node.output] = ch
                out = (max(out[0], float(ch[0].min())), min(out[1], float(ch[1].max())))
            out = self._l2_tighten(node, out)
            t = graph.values[node.output].type
            if t.dtype is not DType.FX32:  # integers cannot exceed their type; bools are 0/1
                lo, hi = DTYPE_RANGE[t.dtype]
                out = (max(out[0], lo), min(out[1], hi))
            self.iv[node.output] = out

    def _l2_tighten(self, node: Node, out: Interval) -> Interval:
        """out ∩ ±(an L2 bound on the element): a linear map's rows by Cauchy–Schwarz (seg 1),
        a residual sum by the norm of its whole row (l2bounds.py)."""
        g = self.graph
        v = node.output
        shape = g.values[v].type.shape
        if g.values[v].type.dtype is not DType.FX32 or not shape:
            return out
        if node.op == "qmatmul" or (node.op == "matmul" and node.inputs[1] in g.initializers):
            seg = 1
        elif node.op == "binary" and node.attrs.get("kind") in ("add", "sub"):
            seg = shape[-1]
        else:
            return out
        try:
            b = self.l2.at(v, seg)
        except Exception:  # the refinement is optional
            b = None
        return out if b is None else (max(out[0], -b), min(out[1], b))

    EXACT_OPS = ("cast", "binary", "matmul", "conv", "qmatmul", "qconv", "pool", "reduce", "relu", "reshape", "view", "concat", "gather", "where")

    def _exact_integers(self, node: Node) -> bool:
        """Whether node's output is an fx32 tensor at 0 bits computed exactly from integers."""
        g = self.graph
        t = g.values[node.output].type
        if t.dtype is not DType.FX32 or t.frac != 0 or node.op not in self.EXACT_OPS:
            return False
        if node.op == "binary" and node.attrs["kind"] not in ("add", "sub", "mul", "max", "min"):
            return False
        if node.op == "pool" and node.attrs["kind"] != "max":
            return False
        if node.op == "reduce" and node.attrs["kind"] not in ("sum", "max", "min"):
            return False
        for v in node.inputs[:1] if node.op == "cast" else node.inputs:
            vt = g.values[v].type
            if vt.dtype is DType.FX32 and v not in self.integral:
                return False
        return True

    def const(self, v: int) -> np.ndarray | None:
        """A constant operand's real values (None for a run-time value)."""
        data = self.graph.initializers.get(v)
        if data is None:
            return None
        t = self.graph.values[v].type
        return dequantize(data, t.frac) if t.dtype is DType.FX32 else np.asarray(data, np.float64)

    def _const_range(self, v: int, data: np.ndarray) -> Interval:
        if not data.size:
            return (0.0, 0.0)
        # the ends of the raw integers: dequantizing is monotone, and a large weight is never
        # copied into float64 for this
        lo, hi = data.min(), data.max()
        t = self.graph.values[v].type
        if t.dtype is DType.FX32:
            return (float(dequantize(lo, t.frac)), float(dequantize(hi, t.frac)))
        return (float(lo), float(hi))

    def ranges(self) -> list[TensorRange]:
        """Every fx32 graph input and node output, with its bits."""
        g = self.graph
        ids = list(g.inputs) + [n.output for n in g.nodes]
        return [TensorRange(v, g.values[v].name, *self.iv[v], g.values[v].type.frac)
                for v in ids if g.values[v].type.dtype is DType.FX32]

    # one method per IR op; anything unknown is unbounded (and so reported, never trusted)
    def _node(self, node: Node) -> Interval:
        fn = getattr(self, f"_op_{node.op}", None)
        if fn is None:
            return (-INF, INF)
        try:
            return fn(node, [self.iv[i] for i in node.inputs], node.attrs)
        except Exception:  # a case a rule does not model (a bug, a shape it did not foresee):
            return (-INF, INF)  # unbounded, so reported as may-saturate, never trusted or a crash

    def _ch_of(self, v: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Value v's per-channel interval over n channels (its scalar interval if none is known)."""
        if v in self.ch and self.ch[v][0].shape == (n,):
            return self.ch[v]
        lo, hi = self.iv[v]
        return np.full(n, lo), np.full(n, hi)

    def _channels(self, node: Node) -> tuple[np.ndarray, np.ndarray] | None:
        g = self.graph
        x = node.inputs[0] if node.inputs else None
        shape_in = g.values[x].type.shape if x is not None else ()
        shape_out = g.values[node.output].type.shape
        if node.op == "relu" and x in self.ch:
            lo, hi = self.ch[x]
            return np.maximum(lo, 0.0), np.maximum(hi, 0.0)
        if node.op == "pool" and x in self.ch:
            lo, hi = self.ch[x]
            if node.attrs["kind"] == "avg" and any(node.attrs["pads"]):
                return np.minimum(lo, 0.0), np.maximum(hi, 0.0)
            return lo, hi
        if node.op == "reshape" and x in self.ch and len(shape_in) >= 2 and len(shape_out) >= 2:
            lo, hi = self.ch[x]
            if shape_out[:2] == shape_in[:2] and shape_out[0] == shape_in[0]:
                return lo, hi  # each channel's elements stay in their channel
            rest = math.prod(shape_in[2:])
            if len(shape_out) == 2 and shape_out[0] == shape_in[0] and shape_out[1] == shape_in[1] * rest:
                return np.repeat(lo, rest), np.repeat(hi, rest)  # a flatten: channel c → features c·rest…
            return None
        if node.op == "conv":
            w = self.const(node.inputs[1])
            if w is None:
                return None
            grp = node.attrs["group"]
            m, cg = w.shape[0], w.shape[1]
            lo, hi = self._ch_of(x, cg * grp)
            if any(node.attrs["pads"]):
                lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
            pos = np.where(w > 0, w, 0).reshape(m, cg, -1).sum(-1)
            neg = np.where(w < 0, w, 0).reshape(m, cg, -1).sum(-1)
            blk = np.arange(m) // (m // grp)  # each output channel's group
            idx = blk[:, None] * cg + np.arange(cg)[None, :]  # its input channels
            return self._per_channel_sums(node, pos, neg, lo[idx], hi[idx])
        if node.op == "qconv":
            w = self.qweight(node).reshape(g.values[node.inputs[1]].type.shape)
            grp = node.attrs["group"]
            m, cg = w.shape[0], w.shape[1]
            lo, hi = self._ch_of(x, cg * grp)
            if any(node.attrs["pads"]):
                lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
            pos = np.where(w > 0, w, 0).reshape(m, cg, -1).sum(-1)
            neg = np.where(w < 0, w, 0).reshape(m, cg, -1).sum(-1)
            blk = np.arange(m) // (m // grp)
            idx = blk[:, None] * cg + np.arange(cg)[None, :]
            return self._per_channel_sums(node, pos, neg, lo[idx], hi[idx], bias_at=self._qbias(node))
        if node.op == "qmatmul" and len(shape_in) == 2 and len(shape_out) == 2 and x in self.ch:
            k = g.values[node.inputs[1]].type.shape[1]
            lo, hi = self._ch_of(x, k)
            out_lo, out_hi = [], []
            for w in self.qweight_chunks(node):  # [rows, K] at a time: no float copy of the whole weight
                pos, neg = np.where(w > 0, w, 0), np.where(w < 0, w, 0)
                out_lo.append((_mulv(pos, lo[None, :]) + _mulv(neg, hi[None, :])).sum(1))
                out_hi.append((_mulv(pos, hi[None, :]) + _mulv(neg, lo[None, :])).sum(1))
            out_lo, out_hi = np.concatenate(out_lo), np.concatenate(out_hi)
            bias = self._qbias(node)
            if bias is not None:
                out_lo, out_hi = out_lo + bias, out_hi + bias
            return out_lo, out_hi
        if node.op == "matmul" and len(shape_in) == 2 and len(shape_out) == 2 and x in self.ch:
            w = self.const(node.inputs[1])
            if w is None or w.ndim != 2:
                return None
            w = w if node.attrs.get("transpose_b") else w.T  # [N, K]
            lo, hi = self._ch_of(x, w.shape[1])
            pos, neg = np.where(w > 0, w, 0), np.where(w < 0, w, 0)
            return self._per_channel_sums(node, pos, neg, lo[None, :], hi[None, :])
        return None

    def _per_channel_sums(self, node, pos, neg, lo, hi, bias_at=False):
        """Per output channel (rows of the [M, K] weight halves `pos`, `neg`, against the input
        channels' ends `lo`, `hi`): Σ pos·lo + neg·hi, Σ pos·hi + neg·lo, plus a constant bias
        (`bias_at`: a q-op's bias, already read; None for none)."""
        out_lo = (_mulv(pos, lo) + _mulv(neg, hi)).sum(1)
        out_hi = (_mulv(pos, hi) + _mulv(neg, lo)).sum(1)
        if bias_at is not False:
            if bias_at is not None:
                out_lo, out_hi = out_lo + bias_at, out_hi + bias_at
            return out_lo, out_hi
        if len(node.inputs) == 3:
            b = self.const(node.inputs[2])
            if b is None:
                return None
            out_lo, out_hi = out_lo + b, out_hi + b
        return out_lo, out_hi

    def _op_quantize_linear(self, node, ivs, a):
        return (float(a["qmin"]), float(a["qmax"]))

    def _op_reshape(self, node, ivs, a):
        return ivs[0]

    def _op_view(self, node, ivs, a):
        x = ivs[0]
        if "fill" not in a:
            return x
        t = self.graph.values[node.inputs[0]].type
        fill = float(a["fill"]) / (1 << t.frac) if t.dtype is DType.FX32 else float(a["fill"])
        return hull(x, (fill, fill))

    def _op_concat(self, node, ivs, a):
        return hull(*ivs)

    def _op_gather(self, node, ivs, a):
        return hull(ivs[0], (0.0, 0.0))  # an index out of range selects zeros

    def _op_relu(self, node, ivs, a):
        return (max(ivs[0][0], 0.0), max(ivs[0][1], 0.0))

    def _op_where(self, node, ivs, a):
        return hull(ivs[1], ivs[2])

    def _op_softmax(self, node, ivs, a):
        return (0.0, 1.0)

    def _op_pool(self, node, ivs, a):
        x = ivs[0]
        return hull(x, (0.0, 0.0)) if a["kind"] == "avg" and any(a["pads"]) else x

    def _op_cast(self, node, ivs, a):
        x = ivs[0]
        src = self.graph.values[node.inputs[0]].type.dtype
        to = DType(a["to"])
        if to is DType.BOOL:
            return (0.0, 1.0)
        if src is DType.FX32 and to is not DType.FX32:
            return tuple(math.trunc(e) if math.isfinite(e) else e for e in x)  # toward zero
        if src is DType.I64 and to is DType.I32 and (x[0] < -(2.0**31) or x[1] >= 2.0**31):
            return DTYPE_RANGE[DType.I32]  # wraps
        return x

    def _op_unary(self, node, ivs, a):
        lo, hi = ivs[0]
        k = a["kind"]
        if self.graph.values[node.output].type.dtype is DType.BOOL:
            return (0.0, 1.0)
        if k == "neg":
            return (-hi, -lo)
        if k == "abs":
            return (0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi)), max(abs(lo), abs(hi)))
        if k in ("sign", "tanh", "erf"):
            return (-1.0, 1.0)
        if k == "sigmoid":
            return (0.0, 1.0)
        if k in ("floor", "ceil", "round"):
            return (lo - 1, hi + 1)
        if k == "exp":
            return (0.0, math.exp(hi) if hi < 709 else INF)
        if k == "sqrt":
            return (0.0, math.sqrt(max(hi, 0.0)))
        return (-INF, INF)  # bitnot

    def _op_binary(self, node, ivs, a):
        x, y = ivs
        k = a["kind"]
        if self.graph.values[node.output].type.dtype is DType.BOOL:
            return (0.0, 1.0)
        if k == "add":
            return (x[0] + y[0], x[1] + y[1])
        if k == "sub":
            return (x[0] - y[1], x[1] - y[0])
        if k == "mul":
            if node.inputs[0] == node.inputs[1]:  # a square is never negative
                m = mag(x)
                return (0.0 if x[0] <= 0 <= x[1] else min(x[0] ** 2, x[1] ** 2), _mul(m, m))
            return mul_iv(x, y)
        if k == "max":
            return (max(x[0], y[0]), max(x[1], y[1]))
        if k == "min":
            return (min(x[0], y[0]), min(x[1], y[1]))
        fx = self.graph.values[node.output].type.dtype is DType.FX32
        if k == "div":
            if not fx:
                return (-mag(x), mag(x))  # integer division never grows a magnitude (b = 0 gives 0)
            if self._is_norm_of(node.inputs[1], node.inputs[0]):
                return (-1.0, 1.0)  # x / ‖x‖ (L1 or L2, as ONNX-ML's Normalizer lowers): |x_i| ≤ ‖x‖
            if self._is_span_of(node.inputs[1], node.inputs[0]):
                return (-1.0, 1.0)  # x / (max(x, 0) − min(x, 0)), DynamicQuantizeLinear's: |x_i| ≤ the span
            if y[0] > 0 or y[1] < 0:  # 1/y over a range of one sign: [1/hi, 1/lo]
                return mul_iv(x, (1 / y[1], 1 / y[0]))
            return (-INF, INF)  # the divisor's range holds 0
        if k in ("mod", "fmod"):
            m = mag(y)
            return (-m, m)
        return (-INF, INF)  # bitwise

    def _producer(self, v: int) -> Node | None:
        k = self.graph.node_of(v)
        return None if k is None else self.graph.nodes[k]

    def _is_norm_of(self, d: int, x: int) -> bool:
        """Whether d is sum(|x|) or sqrt(sum(x·x)) over x's last axis (then |x_i| ≤ d)."""
        node = self._producer(d)
        if node is not None and node.op == "unary" and node.attrs.get("kind") == "sqrt":
            node, squared = self._producer(node.inputs[0]), True
        else:
            squared = False
        rank = len(self.graph.values[x].type.shape)
        if (node is None or node.op != "reduce" or node.attrs.get("kind") != "sum"
                or list(node.attrs["axes"]) != [rank - 1]):
            return False
        inner = self._producer(node.inputs[0])
        if inner is None:
            return False
        if squared:
            return inner.op == "binary" and inner.attrs.get("kind") == "mul" and inner.inputs == [x, x]
        return inner.op == "unary" and inner.attrs.get("kind") == "abs" and inner.inputs == [x]

    def _is_span_of(self, d: int, x: int) -> bool:
        """Whether d is max(reduce_max(t), 0) − min(reduce_min(t), 0) over all of t, and x is t or
        that min (then |x_i| ≤ d): the span DynamicQuantizeLinear divides by."""
        sub = self._producer(d)
        if sub is None or sub.op != "binary" or sub.attrs.get("kind") != "sub":
            return False
        ends = []
        for v, kind in zip(sub.inputs, ("max", "min"), strict=True):
            clip = self._producer(v)
            if clip is None or clip.op != "binary" or clip.attrs.get("kind") != kind:
                return False
            red, zero = self._producer(clip.inputs[0]), self.const(clip.inputs[1])
            if red is None or red.op != "reduce" or red.attrs.get("kind") != kind or zero is None or np.any(zero != 0):
                return False
            rank = len(self.graph.values[red.inputs[0]].type.shape)
            if sorted(red.attrs["axes"]) != list(range(rank)):
                return False
            ends.append(red.inputs[0])
        return ends[0] == ends[1] and x in (ends[0], sub.inputs[1])

    def _op_reduce(self, node, ivs, a):
        x = ivs[0]
        shape = self.graph.values[node.inputs[0]].type.shape
        n = math.prod(shape[i] for i in a["axes"]) if a["axes"] else math.prod(shape)
        k = a["kind"]
        if k == "sum":
            return (_mul(x[0], n), _mul(x[1], n))
        if k in ("mean", "max", "min"):
            return x
        if k in ("argmax", "argmin"):
            return (0.0, float(max(n - 1, 0)))
        m = mag(x)  # prod
        p = m**n if m <= 1 or n * math.log2(m) < 1024 else INF
        return (-p, p)

    def _op_matmul(self, node, ivs, a):
        g = self.graph
        x, w_iv = ivs[0], ivs[1]
        ka = g.values[node.inputs[0]].type.shape[-1]
        data = g.initializers.get(node.inputs[1])
        bias = self.const(node.inputs[2]) if len(node.inputs) == 3 else None
        if (data is not None and data.size > LARGE_WEIGHT and a.get("transpose_b") and data.ndim == 2
                and g.values[node.inputs[1]].type.dtype is DType.FX32):
            return self._large_matmul(node.inputs[1], data, x, bias)
        w = self.const(node.inputs[1])
        if w is not None:
            if not a.get("transpose_b"):
                w = np.swapaxes(w, -1, -2)  # [..., N, K]
            # per output column n (over any batch of weights): Σ_k w[n, k]·x (+ bias[n])
            return affine(w.reshape(-1, w.shape[-2], w.shape[-1]), 2, x, None if bias is None else bias[None, :])
        xa = self.const(node.inputs[0])
        if xa is not None and bias is None:  # constant left operand: per row of a
            return affine(xa.reshape(-1, xa.shape[-1]), 1, w_iv)
        p = mul_iv(x, w_iv)
        out = (_mul(p[0], ka), _mul(p[1], ka))
        if len(node.inputs) == 3:
            out = (out[0] + ivs[2][0], out[1] + ivs[2][1])
        b = self.l2.dot_bound(node)  # Cauchy–Schwarz on the rows' L2 norms (attention scores)
        if b is not None:
            out = (max(out[0], -b), min(out[1], b))
        return out

    def _large_matmul(self, v: int, data: np.ndarray, x: Interval, bias: np.ndarray | None) -> Interval:
        """`affine` of a large [N, K] weight, LARGE_WEIGHT elements of rows at a time, so that its
        float copies stay small (a 1.1B-parameter decoder's output head has 65M weights)."""
        t = self.graph.values[v].type
        n, k = data.shape
        rows = max(1, LARGE_WEIGHT // k)
        pos, neg = np.empty(n), np.empty(n)
        for i in range(0, n, rows):
            w = dequantize(data[i:i + rows], t.frac)
            pos[i:i + rows] = np.where(w > 0, w, 0).sum(axis=1)
            neg[i:i + rows] = np.where(w < 0, w, 0).sum(axis=1)
        return affine_sums(pos, neg, x, None if bias is None else bias[None, :], bool(np.any(pos) or np.any(neg)))

    def _op_conv(self, node, ivs, a):
        x = ivs[0]
        if any(a["pads"]):
            x = hull(x, (0.0, 0.0))  # padded positions contribute 0
        w = self.const(node.inputs[1])
        bias = self.const(node.inputs[2]) if len(node.inputs) == 3 else None
        if w is not None:
            return affine(w.reshape(w.shape[0], -1), 1, x, bias)
        wshape = self.graph.values[node.inputs[1]].type.shape
        p = mul_iv(x, ivs[1])
        k = math.prod(wshape[1:])
        out = (_mul(p[0], k), _mul(p[1], k))
        if len(node.inputs) == 3:
            out = (out[0] + ivs[2][0], out[1] + ivs[2][1])
        return out

    # -- quantized weights (ir/ops/_qweight.py): w = (q − zp) · scale / 2^fs, row chunk by row chunk
    QW_CHUNK = 1 << 20  # weight elements dequantized at once

    def qweight_chunks(self, node: Node, q_index: int = 1):
        """The real values of a q-op's weight, [rows, K] chunks of output channels in order."""
        from opmlc.ir.ops._qweight import dequantize_int, has_zero_point

        g = self.graph
        types = [g.values[i].type for i in node.inputs]
        q = g.initializers[node.inputs[q_index]]
        scale = g.initializers[node.inputs[q_index + 1]]
        zp = g.initializers[node.inputs[q_index + 2]] if has_zero_point(types, q_index) else None
        fs = types[q_index + 1].frac
        n = q.shape[0]
        k = max(1, q.size // max(1, n))
        step = max(1, self.QW_CHUNK // k)
        for r0 in range(0, n, step):
            rows = slice(r0, min(n, r0 + step))
            yield dequantize_int(q, scale, zp, node.attrs["block_size"], rows).astype(np.float64) / 2.0**fs

    def qweight(self, node: Node, q_index: int = 1) -> np.ndarray:
        """The whole dequantized weight [N, K] (small weights: conv kernels)."""
        return np.concatenate(list(self.qweight_chunks(node, q_index)))

    def _qbias(self, node: Node) -> np.ndarray | None:
        from opmlc.ir.ops._qweight import split_inputs

        _, bias_t = split_inputs([self.graph.values[i].type for i in node.inputs], 1)
        return None if bias_t is None else self.const(node.inputs[-1])

    def _op_qmatmul(self, node, ivs, a):
        x = ivs[0]
        pos, neg, nonzero = [], [], False
        for w in self.qweight_chunks(node):
            pos.append(np.where(w > 0, w, 0).sum(1))
            neg.append(np.where(w < 0, w, 0).sum(1))
            nonzero = nonzero or bool(np.any(w != 0))
        pos, neg = np.concatenate(pos), np.concatenate(neg)
        return affine_sums(pos, neg, x, self._qbias(node), nonzero)

    def _op_qconv(self, node, ivs, a):
        x = ivs[0]
        if any(a["pads"]):
            x = hull(x, (0.0, 0.0))  # padded positions contribute 0
        return affine(self.qweight(node), 1, x, self._qbias(node))

    def _op_qgather(self, node, ivs, a):
        lo, hi = 0.0, 0.0  # an index out of range selects zeros
        for w in self.qweight_chunks(node, 0):
            if w.size:
                lo, hi = min(lo, float(w.min())), max(hi, float(w.max()))
        return (lo, hi)

    def _op_norm(self, node, ivs, a):
        n = self.graph.values[node.inputs[0]].type.shape[-1]
        root = math.sqrt(n)  # a normalised row's elements are at most √n in magnitude
        g = self.const(node.inputs[1])
        b = self.const(node.inputs[2]) if len(node.inputs) == 3 else None
        if g is not None:
            lo = -np.abs(g) * root + (b if b is not None else 0.0)
            hi = np.abs(g) * root + (b if b is not None else 0.0)
            return (float(np.min(lo)), float(np.max(hi)))
        m = mag(ivs[1]) * root
        bb = ivs[2] if len(node.inputs) == 3 else (0.0, 0.0)
        return (-m + bb[0], m + bb[1])

    def _op_tree_ensemble(self, node, ivs, a):
        nodes = self.graph.initializers.get(node.inputs[1])
        weights = self.const(node.inputs[3])
        base = mag(ivs[4]) if len(node.inputs) == 5 else 0.0
        if nodes is None or weights is None:
            return (-INF, INF)
        nodes = np.asarray(nodes).reshape(-1, 5)
        aw = np.abs(weights)
        n_trees = int(a["n_trees"])
        if a["aggregate"] in ("min", "max"):
            m = float(aw.max(initial=0.0)) + base
            return (-m, m)
        total = 0.0
        for t in range(n_trees):  # each tree adds one leaf's weights: the largest sum it can
            best, seen, todo = 0.0, set(), [t]
            while todo:
                r = todo.pop()
                if r in seen or not 0 <= r < len(nodes):
                    continue
                seen.add(r)
                mode, first, end, yes, no = (int(v) for v in nodes[r])
                if mode == 0:
                    best = max(best, float(aw[max(first, 0):max(end, 0)].sum()))
                else:
                    todo += [yes, no]
            total += best
        if a["aggregate"] == "average":
            total /= n_trees
        return (-total - base, total + base)

    def tree_thresholds(self) -> dict[int, float]:
        """Per value compared by a tree ensemble, the largest |threshold| it is compared with."""
        out: dict[int, float] = {}
        for node in self.graph.nodes:
            if node.op != "tree_ensemble":
                continue
            table = self.graph.initializers.get(node.inputs[1])
            if table is None:
                continue
            table = np.asarray(table).reshape(-1, 5)
            splits = table[table[:, 0] != 0]
            t = self.graph.values[node.inputs[0]].type
            if splits.size and t.dtype is DType.FX32:  # thresholds in x's bits (ir/ops/tree_ensemble.py)
                peak = float(np.abs(splits[:, 2].astype(np.float64)).max()) / (1 << t.frac)
                out[node.inputs[0]] = max(out.get(node.inputs[0], 0.0), peak)
        return out


def analyse(graph: Graph, input_ranges: dict[str, Interval]) -> Analysis:
    """The analysis of `graph` with graph inputs in `input_ranges` (by name; missing: the
    default range), a graph input compared by a tree ensemble widened to hold its thresholds."""
    names = [graph.values[v].name for v in graph.inputs]
    ranges = [input_ranges.get(n) or default_range(graph.values[v].type.dtype)
              for n, v in zip(names, graph.inputs, strict=True)]
    result = Analysis(graph, ranges)
    widen = {v: p for v, p in result.tree_thresholds().items() if v in graph.inputs}
    if widen:
        for i, v in enumerate(graph.inputs):
            if v in widen and names[i] not in input_ranges:
                lo, hi = ranges[i]
                ranges[i] = (min(lo, -widen[v]), max(hi, widen[v]))
        result = Analysis(graph, ranges)
    return result


def bits_by_name(analysis: Analysis) -> dict[str, int]:
    """Per named fx32 tensor, the bits its range allows (the fewest where a name has several values);
    unbounded tensors are left out (their lowering rule decides)."""
    out: dict[str, int] = {}
    for r in analysis.ranges():
        f = frac_for_bound(r.bound)
        if f is None or not r.name:
            continue
        out[r.name] = min(out.get(r.name, f), f)
    for name, f in accumulator_bits(analysis).items():
        out[name] = min(out.get(name, f), f)
    return out


ACC_BITS = 62  # an int64 accumulator's magnitude bits, less one of margin


def accumulator_bits(analysis: Analysis) -> dict[str, int]:
    """Bits that keep matmul/conv accumulators in int64: the accumulator holds the output times
    2^(fa + fb), so fa + fb + log2(bound) must stay within ACC_BITS; where it would not, the
    operand with more bits (the weights, if constant) gives up the excess."""
    g = analysis.graph
    out: dict[str, int] = {}
    for node in g.nodes:
        if node.op not in ("matmul", "conv", "qmatmul", "qconv"):
            continue
        b = mag(analysis.iv[node.output])
        if not math.isfinite(b) or b == 0:
            continue
        # a quantized weight's bits are its scale's (the integers q − zp add none)
        va, vb = node.inputs[0], node.inputs[2 if node.op in ("qmatmul", "qconv") else 1]
        fa, fb = g.values[va].type.frac, g.values[vb].type.frac
        excess = fa + fb + math.ceil(math.log2(b)) + 1 - ACC_BITS
        if excess <= 0:
            continue
        v, f = (vb, fb) if vb in g.initializers or fb >= fa else (va, fa)
        name = g.values[v].name
        if name:
            out[name] = min(out.get(name, f), max(0, f - excess))
    return out


def input_ranges_of(analysis: Analysis) -> dict[str, list[float]]:
    """The graph inputs' ranges as the analysis assumed them (for the manifest)."""
    g = analysis.graph
    return {g.values[v].name: [analysis.iv[v][0], analysis.iv[v][1]] for v in g.inputs}


def at_risk(analysis: Analysis) -> list[TensorRange]:
    """fx32 tensors whose analysed range does not fit their bits (unbounded ones included)."""
    return [r for r in analysis.ranges() if r.bound >= r.capacity]


COARSE_BITS = 8  # fewer fractional bits than this: a value's step is coarse enough to say so


def coarse(analysis: Analysis) -> list[TensorRange]:
    """fx32 tensors left with fewer than COARSE_BITS bits by a wide analysed bound (a bound is a
    worst case over the declared input ranges and can be far looser than the values met, for
    example through a Scaler whose features differ in scale): precision may be lost there."""
    return [r for r in analysis.ranges()
            if r.frac < COARSE_BITS and r.bound < r.capacity and r.value not in analysis.integral]


__all__ = ["COARSE_BITS", "DEFAULT_INPUT_BOUND", "MAX_FRAC", "Analysis", "TensorRange", "analyse", "at_risk", "coarse",
           "bits_by_name", "frac_for_bound", "input_ranges_of"]
