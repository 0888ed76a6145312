"""L2 bounds: a sound bound on the Euclidean norm of a tensor's vectors, for the range analysis.

Part of the range analysis (ranges.py). Interval arithmetic bounds a product of two run-time
operands, such as attention's q·kᵀ, by K times the product of per-element bounds: at a LLaMA's
width (q and k from an RMSNorm, a projection and the rotary embedding) that is 2^27 and more,
and the scores would get no fractional bits. Cauchy–Schwarz does far better: |q·k| ≤ ‖q‖₂‖k‖₂,
and the norms are known from where the vectors come from:

- `norm` (RMSNorm, LayerNorm): the normalised row z has ‖z‖₂ ≤ √n, or √(2n) when the op's
  epsilon rounds to 0 units (the rounded mean of squares V ≥ S/n − 1 of the true one S/n, and
  V ≥ 1, so S/V ≤ 2n); then ‖γ⊙z + β‖₂ ≤ max|γ|·‖z‖₂ + ‖β‖₂;
- a linear map by a constant weight (matmul, qmatmul): ‖Wx + b‖₂ ≤ σ_max(W)·‖x‖₂ + ‖b‖₂ per
  block of output columns (an attention head), σ_max from the eigenvalues of the block's small
  Gram matrix (float64, with a relative margin far above its rounding error);
- the rotary embedding x⊙C + rotate_half(x)⊙S acts on each pair (x_i, x_{i+h}) as a 2×2
  matrix: the largest of their singular values bounds it (≈ 1: cos² + sin² = 1);
- rules/rotary.py's form of it (GroupQueryAttention's), concat(x1⊙c − x2⊙s, x2⊙c + x1⊙s), by
  the largest c_i² + s_i² of the cos/sin tables: each pair's square is exactly that times
  x1_i² + x2_i²;
- a graph input (a generation's key/value cache) by its range: max|x|·√len;
- reshapes and views that keep a vector inside one vector of their input (head splits,
  transposes, key/value head repeats, slices), a gather of run-time rows (the cache write's new
  rows), a `where` (max of its operands' bounds where the condition picks whole rows), a
  negation, a product by a constant (max|c|), a sum (triangle inequality), a concatenation
  (root of the sum of squares).

Every bound is on the fixed-point values themselves: each rounding op adds √len ulps of its
output. `L2Bounds.at(v, seg)` bounds every run of `seg` consecutive elements along v's last
axis (seg divides it), computed on demand (the spectral norms only for the heads asked about)
and None where no rule applies.
"""

from __future__ import annotations

import math
import weakref

import numpy as np

from opmlc.ir.graph import Graph, Node
from opmlc.ir.types import DType

CHUNK = 1 << 22  # weight elements dequantized into float64 at once
# σ_max of large weight blocks, kept across the lowering rounds of one model while the weight
# arrays themselves are alive (the rounds share quantized weights): key (the arrays' ids, rows,
# bits, layout), and weak references that must still be those arrays
_SIGMA: dict[tuple, tuple[tuple[weakref.ref, ...], float]] = {}
REL = 1e-9  # relative margin on float64 eigenvalues and norms (their rounding error is ~1e-13)


def _strides(shape) -> list[int]:
    out, s = [], 1
    for d in reversed(shape):
        out.append(s)
        s *= d
    return out[::-1]


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


SMALL_GRAM = 256  # a Gram matrix up to this order gets eigvalsh; larger ones a verified bound


def lam_upper(gram: np.ndarray) -> float:
    """An upper bound on the largest eigenvalue of a symmetric PSD matrix (float64).

    Small: eigvalsh (backward stable: its error is ≤ c·m·eps·‖G‖, far below REL·trace). Large
    (eigvalsh of a 2048² matrix takes ~20 s): a power-iteration estimate μ, raised until
    u·I − G has a Cholesky factor, which proves λ_max < u up to Cholesky's own backward error
    (≤ c·m·eps·trace, again below the REL·trace margin added)."""
    m = gram.shape[0]
    tr = float(np.trace(gram))
    if tr <= 0:
        return 0.0
    if m <= SMALL_GRAM:
        return max(float(np.linalg.eigvalsh(gram)[-1]), 0.0) + REL * tr
    v = np.random.default_rng(0).normal(size=m)
    for _ in range(40):
        v = gram @ v
        v /= np.linalg.norm(v)
    u = max(float(v @ gram @ v), tr / m) * 1.01
    eye = np.eye(m)
    while u < tr:
        try:
            np.linalg.cholesky(u * eye - gram)
            return u + REL * tr
        except np.linalg.LinAlgError:
            u *= 1.05
    return tr  # λ_max ≤ trace


def sigma_max(w: np.ndarray) -> float:
    """An upper bound on the largest singular value of w [m, k] (float64)."""
    if not w.size:
        return 0.0
    return math.sqrt(lam_upper(w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w)) * (1 + REL)


def pair_sigma(c: np.ndarray, s: np.ndarray) -> float:
    """max over i of σ_max([[c_i, −s_i], [s_{i+h}, c_{i+h}]]) for rows of c, s [..., 2h]."""
    h = c.shape[-1] // 2
    a, b, cc, d = c[..., :h], -s[..., :h], s[..., h:], c[..., h:]
    half = (a * a + b * b + cc * cc + d * d) / 2
    det = a * d - b * cc
    lam = half + np.sqrt(np.maximum(half * half - det * det, 0.0))
    return math.sqrt(float(lam.max(initial=0.0))) * (1 + REL) + REL


class L2Bounds:
    """Lazily computed L2 bounds over `analysis.graph` (ranges.Analysis)."""

    def __init__(self, analysis) -> None:
        self.a = analysis
        self.g: Graph = analysis.graph
        self.memo: dict[tuple[int, int], float | None] = {}

    def _shape(self, v: int) -> tuple[int, ...]:
        return tuple(self.g.values[v].type.shape)

    def _ulp(self, v: int) -> float:
        t = self.g.values[v].type
        return 2.0 ** -t.frac if t.dtype is DType.FX32 else 0.0

    def _producer(self, v: int) -> Node | None:
        k = self.g.node_of(v)
        return None if k is None else self.g.nodes[k]

    def at(self, v: int, seg: int) -> float | None:
        """A bound on ‖x‖₂ for every `seg` consecutive elements x along v's last axis."""
        shape = self._shape(v)
        if not shape or seg <= 0 or shape[-1] % seg or self.g.values[v].type.dtype is not DType.FX32:
            return None
        key = (v, seg)
        if key not in self.memo:
            self.memo[key] = None  # a cycle cannot happen in a DAG, but never recurse forever
            node = self._producer(v)
            b = None
            if node is None:
                b = self._input(v, seg)
            else:
                fn = getattr(self, f"_op_{node.op}", None)
                try:
                    b = fn(node, seg) if fn is not None else None
                except Exception:  # a shape a rule does not model: no bound, never a crash
                    b = None
            self.memo[key] = b if b is None or math.isfinite(b) else None
        return self.memo[key]

    def _round(self, v: int, seg: int) -> float:
        """The L2 size of one rounding (a full ulp per element) over `seg` elements of v."""
        return math.sqrt(seg) * self._ulp(v)

    # -- sources ------------------------------------------------------------------------
    def _input(self, v: int, seg: int) -> float | None:
        """A graph input (a generation's key/value cache): every element lies in its range (the
        declared one, which the interval analysis trusts the same way), so a run of seg
        elements has ‖x‖₂ ≤ max|range|·√seg."""
        if v not in self.g.inputs or v in self.g.initializers:
            return None
        m = max(map(abs, self.a.iv[v]))
        return m * math.sqrt(seg) * (1 + REL) if math.isfinite(m) else None

    def _op_norm(self, node: Node, seg: int) -> float | None:
        gamma = self.a.const(node.inputs[1])
        if gamma is None:
            return None
        n = self._shape(node.inputs[0])[-1]
        beta = self.a.const(node.inputs[2]) if len(node.inputs) == 3 else None
        z = math.sqrt((1 if int(node.attrs["eps"]) >= 1 else 2) * n) * (1 + 1e-6)
        gm = float(np.abs(gamma).max(initial=0.0))
        bn = float(np.sqrt(np.square(beta).sum())) if beta is not None else 0.0
        # z's own rounding (2^−25 per element) and the output's
        return gm * z + bn * (1 + REL) + math.sqrt(seg) * (gm * 2.0**-24 + self._ulp(node.output))

    def _weight_rows(self, node: Node, r0: int, r1: int) -> np.ndarray | None:
        """Rows r0..r1 of a constant weight as [rows, K] float64 (output columns r0..r1)."""
        g = self.g
        if node.op == "qmatmul":
            from opmlc.ir.ops._qweight import dequantize_int, has_zero_point

            types = [g.values[i].type for i in node.inputs]
            q, scale = g.initializers[node.inputs[1]], g.initializers[node.inputs[2]]
            zp = g.initializers[node.inputs[3]] if has_zero_point(types, 1) else None
            w = dequantize_int(q, scale, zp, node.attrs["block_size"], slice(r0, r1))
            return w.astype(np.float64) / 2.0 ** types[2].frac
        data = g.initializers.get(node.inputs[1])
        if data is None or data.ndim != 2:
            return None
        frac = g.values[node.inputs[1]].type.frac
        part = data[r0:r1] if node.attrs.get("transpose_b") else data[:, r0:r1].T
        return part.astype(np.float64) / 2.0**frac

    def _block_sigma(self, node: Node, r0: int, r1: int) -> float | None:
        """σ_max of weight rows r0..r1; a large block's kept across the lowering rounds (they
        share the quantized weight arrays), a block too large to copy whole summed as WᵀW."""
        k = self._shape(node.inputs[0])[-1]
        if (r1 - r0) * k < CHUNK:
            w = self._weight_rows(node, r0, r1)
            return None if w is None else sigma_max(w)
        arrs = [self.g.initializers[v] for v in self._weight_inputs(node)]
        key = (tuple(id(a) for a in arrs), r0, r1, self._weight_frac(node), bool(node.attrs.get("transpose_b")))
        hit = _SIGMA.get(key)
        if hit is not None and all(ref() is a for ref, a in zip(hit[0], arrs, strict=True)):
            return hit[1]
        if (r1 - r0) * k <= 4 * CHUNK:
            w = self._weight_rows(node, r0, r1)
            if w is None:
                return None
            sig = sigma_max(w)
        else:
            gram = np.zeros((k, k))
            rows = max(1, CHUNK // k)
            for c0 in range(r0, r1, rows):
                w = self._weight_rows(node, c0, min(r1, c0 + rows))
                if w is None:
                    return None
                gram += w.T @ w
            sig = math.sqrt(lam_upper(gram)) * (1 + REL)
        for dead in [k_ for k_, h in _SIGMA.items() if any(r() is None for r in h[0])]:
            del _SIGMA[dead]
        try:
            _SIGMA[key] = (tuple(weakref.ref(a) for a in arrs), sig)
        except TypeError:  # an array that takes no weak reference: no cache
            pass
        return sig

    def _weight_inputs(self, node: Node) -> list[int]:
        """The constant inputs that define the weight (q, scale and zero point of a q-op)."""
        if node.op != "qmatmul":
            return [node.inputs[1]]
        from opmlc.ir.ops._qweight import has_zero_point

        zp = has_zero_point([self.g.values[i].type for i in node.inputs], 1)
        return list(node.inputs[1:4 if zp else 3])

    def _weight_frac(self, node: Node) -> int:
        return self.g.values[node.inputs[2 if node.op == "qmatmul" else 1]].type.frac

    def _bias(self, node: Node) -> np.ndarray | None:
        if node.op == "qmatmul":
            return self.a._qbias(node)
        return self.a.const(node.inputs[2]) if len(node.inputs) == 3 else None

    def _linear(self, node: Node, seg: int) -> float | None:
        x = node.inputs[0]
        bx = self.at(x, self._shape(x)[-1])
        if bx is None:
            return None
        n = self._shape(node.output)[-1]
        bias = self._bias(node)
        if seg == 1:  # one output element: Cauchy–Schwarz with its weight row
            rows = max(1, CHUNK // max(1, self._shape(x)[-1]))
            worst = 0.0
            for r0 in range(0, n, rows):
                w = self._weight_rows(node, r0, r0 + rows)
                if w is None:
                    return None
                b = np.sqrt(np.square(w).sum(1)) * bx * (1 + REL)
                if bias is not None:
                    b = b + np.abs(bias[r0:r0 + rows])
                worst = max(worst, float(b.max(initial=0.0)))
            return worst + self._ulp(node.output)
        worst = 0.0
        for r0 in range(0, n, seg):
            b = self._block_sigma(node, r0, r0 + seg)
            if b is None:
                return None
            b *= bx
            if bias is not None:
                b += float(np.sqrt(np.square(bias[r0:r0 + seg]).sum())) * (1 + REL)
            worst = max(worst, b)
        return worst + self._round(node.output, seg)

    def _op_matmul(self, node: Node, seg: int) -> float | None:
        if node.inputs[1] in self.g.initializers:
            return self._linear(node, seg)
        # attention's p @ v: each output row is Σ_j p_j·v_j with p ≥ 0 from a softmax whose row
        # sums to at most 1 + T ulps (each y_i ≤ e_i/Σe + ½ ulp): ‖row‖ ≤ that sum · max ‖v_j‖
        p = self._producer(node.inputs[0])
        if p is None or p.op != "softmax" or node.attrs.get("transpose_b") or len(node.inputs) != 2:
            return None
        bv = self.at(node.inputs[1], seg)
        if bv is None:
            return None
        t = self._shape(node.inputs[0])[-1]
        return (1 + t * self._ulp(node.inputs[0])) * bv * (1 + REL) + self._round(node.output, seg)

    def _op_gather(self, node: Node, seg: int) -> float | None:
        """Rows of a constant table (an embedding): the largest norm of a seg-run of a row.
        A run-time table gathered along another axis than its last (GroupQueryAttention's new
        cache rows): each output run is a run of the table or zeros (an index out of range)."""
        rank = len(self._shape(node.inputs[0]))
        if node.inputs[0] not in self.g.initializers:
            if node.attrs.get("axis", 0) % rank == rank - 1:
                return None
            b = self.at(node.inputs[0], seg)
            fi, fo = self.g.values[node.inputs[0]].type.frac, self.g.values[node.output].type.frac
            return b if b is None or fi == fo else None  # gather keeps the bits (never rounds)
        table = self.g.initializers.get(node.inputs[0])
        if table is None or node.attrs.get("axis", 0) != 0 or table.ndim != 2:
            return None
        frac = self.g.values[node.inputs[0]].type.frac
        rows = max(1, CHUNK // max(1, table.shape[1]))
        worst = 0.0  # an index out of range selects zeros
        for r0 in range(0, table.shape[0], rows):
            w = table[r0:r0 + rows].astype(np.float64) / 2.0**frac
            worst = max(worst, float(np.sqrt(np.square(w).reshape(w.shape[0], -1, seg).sum(-1)).max(initial=0.0)))
        return worst * (1 + REL)

    def _op_qmatmul(self, node: Node, seg: int) -> float | None:
        return self._linear(node, seg)

    def _op_qgather(self, node: Node, seg: int) -> float | None:
        """A quantized embedding: its dequantized rows' largest seg-run norm, plus the rounding
        to the output's bits (shr_round: half an ulp per element)."""
        worst = 0.0
        for w in self.a.qweight_chunks(node, 0):
            if w.size:
                worst = max(worst, float(np.sqrt(np.square(w).reshape(w.shape[0], -1, seg).sum(-1)).max()))
        return worst * (1 + REL) + self._round(node.output, seg)

    # -- movement -------------------------------------------------------------------------
    def _op_reshape(self, node: Node, seg: int) -> float | None:
        li, lo = self._shape(node.inputs[0])[-1], self._shape(node.output)[-1]
        gcd = math.gcd(li, lo)
        if gcd % seg == 0:  # seg-runs of the output are seg-runs of the input
            return self.at(node.inputs[0], seg)
        if seg % gcd == 0:  # a run of whole gcd-runs: root of their sum of squares
            b = self.at(node.inputs[0], gcd)
            return None if b is None else b * math.sqrt(seg // gcd) * (1 + REL)
        return None

    def _view_source(self, node: Node) -> int | None:
        """S: a run length of the view's input that holds each output row whole (smallest)."""
        a = node.attrs
        if "fill" in a:
            return None
        shape_out, strides = list(a["shape"]), list(a["strides"])
        lout = shape_out[-1]
        if lout > 1 and strides[-1] != 1:
            return None
        li = self._shape(node.inputs[0])[-1]
        for s in _divisors(li):
            if s >= lout and all(st % s == 0 for st in strides[:-1]) and a["offset"] % s + lout <= s:
                return s
        return None

    def _op_view(self, node: Node, seg: int) -> float | None:
        s = self._view_source(node)
        return None if s is None else self.at(node.inputs[0], s)

    def _op_unary(self, node: Node, seg: int) -> float | None:
        if node.attrs["kind"] != "neg":
            return None
        return self.at(node.inputs[0], seg)  # exact (a saturated −2^31 only shrinks)

    def _op_concat(self, node: Node, seg: int) -> float | None:
        rank = len(self._shape(node.output))
        if node.attrs["axis"] % rank != rank - 1:
            return None
        src = self._rotate_half_source(node)
        if src is not None:  # a signed permutation of src's rows
            return self.at(src, self._shape(src)[-1])
        if seg == self._shape(node.output)[-1]:
            rot = self._rotary_halves(node, seg)
            if rot is not None:
                return rot
        lens = [self._shape(v)[-1] for v in node.inputs]
        if all(n % seg == 0 for n in lens):
            bs = [self.at(v, seg) for v in node.inputs]
            return None if any(b is None for b in bs) else max(bs)
        if seg == self._shape(node.output)[-1]:
            bs = [self.at(v, n) for v, n in zip(node.inputs, lens, strict=True)]
            return None if any(b is None for b in bs) else math.sqrt(sum(b * b for b in bs)) * (1 + REL)
        return None

    def _rotary_halves(self, node: Node, seg: int) -> float | None:
        """concat([x1⊙c − x2⊙s, x2⊙c + x1⊙s(, rest)]) with x1, x2 (and rest) the consecutive
        parts of x's rows (rules/rotary.py's non-interleaved rotation, GroupQueryAttention's):
        per pair (x1_i, x2_i) the square of the output is exactly (c_i² + s_i²)(x1_i² + x2_i²),
        so ‖out‖ ≤ max(ρ, 1)·‖x‖ with ρ² the largest c_i² + s_i² (of the cos/sin tables when both
        are rows gathered at the same run-time positions, which an index out of range zeroes;
        else by their intervals). Each product, sum and the concatenation rounds once: at most
        an ulp of its output per element."""
        ins = list(node.inputs)
        if len(ins) not in (2, 3):
            return None
        p1, p2 = self._producer(ins[0]), self._producer(ins[1])
        if p1 is None or p2 is None or p1.op != "binary" or p2.op != "binary":
            return None
        if p1.attrs["kind"] != "sub" or p2.attrs["kind"] != "add":
            return None
        ms = [self._producer(v) for v in (*p1.inputs, *p2.inputs)]
        if any(m is None or m.op != "binary" or m.attrs["kind"] != "mul" for m in ms):
            return None
        (x1, c), (x2, s), (x2b, cb), (x1b, sb) = (m.inputs for m in ms)
        if (x1, x2, c, s) != (x1b, x2b, cb, sb):
            return None
        parts = [x1, x2, *ins[2:]]
        views = [self._producer(v) for v in parts]
        if any(p is None or p.op != "view" or "fill" in p.attrs for p in views):
            return None
        x = views[0].inputs[0]
        shape = self._shape(x)
        st, off = _strides(shape), 0
        for p in views:  # the parts tile each row of x in order
            w = p.attrs["shape"][-1]
            if p.inputs[0] != x or list(p.attrs["shape"]) != list(shape[:-1]) + [w]:
                return None
            if list(p.attrs["strides"]) != st or p.attrs["offset"] != off:
                return None
            off += w
        if off != shape[-1] or shape[-1] != seg:
            return None
        bx = self.at(x, seg)
        if bx is None:
            return None
        tc, ts = self._gathered_table(c), self._gathered_table(s)
        if tc is not None and ts is not None and tc[1] == ts[1] and tc[0].shape == ts[0].shape:
            rho2 = float((np.square(tc[0]) + np.square(ts[0])).max(initial=0.0))
        else:
            rho2 = max(map(abs, self.a.iv[c])) ** 2 + max(map(abs, self.a.iv[s])) ** 2
        ulps = 2 * max(self._ulp(m.output) for m in ms) + max(self._ulp(p1.output), self._ulp(p2.output))
        return max(math.sqrt(rho2) * (1 + REL), 1.0) * bx + math.sqrt(seg) * (ulps + self._ulp(node.output))

    def _gathered_table(self, v: int) -> tuple[np.ndarray, int] | None:
        """(table, index value) where v is a reshape of rows of a constant table gathered along
        axis 0 (the rotary cos/sin rows at run-time positions), as float64 values."""
        p = self._producer(v)
        if p is not None and p.op == "reshape":
            p = self._producer(p.inputs[0])
        if p is None or p.op != "gather" or p.attrs.get("axis", 0) != 0:
            return None
        table = self.g.initializers.get(p.inputs[0])
        if table is None:
            return None
        return table.astype(np.float64) / 2.0 ** self.g.values[p.inputs[0]].type.frac, p.inputs[1]

    def _rotate_half_source(self, node: Node) -> int | None:
        """x where node is concat([−x[..., h:], x[..., :h]], last axis), else None."""
        if node.op != "concat" or len(node.inputs) != 2:
            return None
        parts = []
        for v in node.inputs:
            p = self._producer(v)
            neg = p is not None and p.op == "unary" and p.attrs["kind"] == "neg"
            if neg:
                p = self._producer(p.inputs[0])
            if p is None or p.op != "view" or "fill" in p.attrs:
                return None
            parts.append((neg, p))
        (n0, v0), (n1, v1) = parts
        x = v0.inputs[0]
        shape = self._shape(x)
        if v1.inputs[0] != x or not n0 or n1 or shape[-1] % 2:
            return None
        h = shape[-1] // 2
        want = list(shape[:-1]) + [h]
        st = _strides(shape)
        for p, off in ((v0, h), (v1, 0)):
            if list(p.attrs["shape"]) != want or list(p.attrs["strides"]) != st or p.attrs["offset"] != off:
                return None
        return x

    def _op_where(self, node: Node, seg: int) -> float | None:
        """cond ? a : b, then the chosen value rounded to the output's bits (an ulp at most per
        element). A condition constant along the last axis (GroupQueryAttention's cache write,
        cond [1, 1, C, 1]) picks each output row whole from a or from b: max(‖a‖, ‖b‖);
        otherwise per element |y_i| ≤ max(|a_i|, |b_i|), so ‖y‖² ≤ ‖a‖² + ‖b‖². Operands
        broadcast along leading axes only (their runs are then runs of the operand)."""
        _, a, b = node.inputs
        out = self._shape(node.output)
        if any(not self._shape(v) or self._shape(v)[-1] != out[-1] for v in (a, b)):
            return None
        ba, bb = self.at(a, seg), self.at(b, seg)
        if ba is None or bb is None:
            return None
        cs = self._shape(node.inputs[0])
        whole = not cs or cs[-1] == 1
        b = max(ba, bb) if whole else math.sqrt(ba * ba + bb * bb) * (1 + REL)
        return b + self._round(node.output, seg)

    # -- arithmetic -------------------------------------------------------------------------
    def _op_binary(self, node: Node, seg: int) -> float | None:
        k = node.attrs["kind"]
        out = self._shape(node.output)
        if k == "mul":  # ‖a⊙x‖ ≤ max|a|·‖x‖, a constant or bounded by its interval
            for i in (0, 1):
                other = node.inputs[1 - i]
                c = self.a.const(other)
                m = float(np.abs(c).max(initial=0.0)) if c is not None else max(map(abs, self.a.iv[other]))
                if self._shape(node.inputs[i]) != out or not math.isfinite(m):
                    continue
                b = self.at(node.inputs[i], seg)
                if b is not None:  # the first that holds: each costs a weight's spectral norm
                    return m * b * (1 + REL) + self._round(node.output, seg)
                if c is not None:
                    break
            return None
        if k not in ("add", "sub"):
            return None
        rot = self._rotary(node, seg)
        if rot is not None:
            return rot
        if any(self._shape(v) != out for v in node.inputs):
            return None
        bs = [self.at(v, seg) for v in node.inputs]
        return None if any(b is None for b in bs) else sum(bs) * (1 + REL) + self._round(node.output, seg)

    def _rotary(self, node: Node, seg: int) -> float | None:
        """add(x⊙C, rotate_half(x)⊙S): per pair (x_i, x_{i+h}) a 2×2 map."""
        if node.attrs["kind"] != "add":
            return None
        muls = [self._producer(v) for v in node.inputs]
        if any(m is None or m.op != "binary" or m.attrs["kind"] != "mul" for m in muls):
            return None
        split = []  # per product: (run-time operand, constant)
        for m in muls:
            cs = [self.a.const(v) for v in m.inputs]
            if (cs[0] is None) == (cs[1] is None):
                return None
            i = 0 if cs[1] is not None else 1
            split.append((m.inputs[i], cs[1 - i]))
        for (x, c), (p, s) in (split, split[::-1]):
            pp = self._producer(p)
            src = self._rotate_half_source(pp) if pp is not None else None
            if src is not None and src == x and self._shape(x) == self._shape(node.output):
                n = self._shape(x)[-1]
                bx = self.at(x, n)
                if bx is None:
                    return None
                shape = np.broadcast_shapes(c.shape, s.shape)
                shape = shape[:-1] + (n,) if shape else (n,)
                cb = np.broadcast_to(c, shape).reshape(-1, n)
                sb = np.broadcast_to(s, shape).reshape(-1, n)
                ulps = self._ulp(muls[0].output) + self._ulp(muls[1].output) + self._ulp(node.output)
                return pair_sigma(cb, sb) * bx + math.sqrt(seg) * ulps
        return None

    def dot_bound(self, node: Node) -> float | None:
        """|a·b| per element of a matmul of two run-time operands, by Cauchy–Schwarz."""
        if len(node.inputs) != 2:
            return None
        a, b = node.inputs
        k = self._shape(a)[-1]
        ba = self.at(a, k)
        if ba is None:
            return None
        if node.attrs.get("transpose_b"):
            bb = self.at(b, k)
        else:  # b [..., K, N] as a view swapping the last two axes of a [..., N, K] tensor
            p = self._producer(b)
            if p is None or p.op != "view" or "fill" in p.attrs or p.attrs["offset"] != 0:
                return None
            src = self._shape(p.inputs[0])
            st = _strides(src)
            want_shape = list(src[:-2]) + [src[-1], src[-2]]
            want_st = st[:-2] + [st[-1], st[-2]]
            if list(p.attrs["shape"]) != want_shape or list(p.attrs["strides"]) != want_st or src[-1] != k:
                return None
            bb = self.at(p.inputs[0], k)
        if bb is None:
            return None
        return ba * bb * (1 + REL) + self._ulp(node.output)
