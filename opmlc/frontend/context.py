"""The lowering context: what an ONNX tensor name stands for while the graph is lowered.

A name is either a compile-time constant (`Const`: a float or integer numpy array, after
folding) or a value of the IR being built (`Ref`). Constants become IR initializers, quantized,
only when an IR op consumes them; shape arithmetic on constants never reaches the IR.

A model's initializers are `Const.lazy`: read from the model (frontend/initializers.py: an external
one is a memory map of its bytes) each time a rule asks for `.array`, and not kept, so that the
float model is never in memory at once; `release` drops the constants no later node reads.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import onnx

from opmlc.errors import UnsupportedError
from opmlc.ir import fixedpoint as fp
from opmlc.ir.graph import GraphBuilder
from opmlc.ir.types import MAX_FRAC, DType, TensorType


class Const:
    """A compile-time constant: an array, or (`lazy`) a loader called on each access."""

    __slots__ = ("_array", "_load")

    def __init__(self, array: np.ndarray | None = None, load: Callable[[], np.ndarray] | None = None) -> None:
        self._array, self._load = array, load

    @classmethod
    def lazy(cls, load: Callable[[], np.ndarray]) -> Const:
        return cls(load=load)

    @property
    def array(self) -> np.ndarray:
        return self._array if self._load is None else self._load()

    def __repr__(self) -> str:
        return "Const(lazy)" if self._load is not None else f"Const({self._array!r})"


@dataclass(frozen=True)
class Ref:
    id: int


Sym = Const | Ref


SCALAR_FRAC = 28  # bits for scalar constants, at most (they scale whole tensors)


@dataclass
class QuantPolicy:
    """Fractional bits per tensor: `default` for activations and constants, or per-name overrides.
    Scalar constants take up to SCALAR_FRAC bits; a constant holding ±inf (an attention mask's
    −inf) at most `default`, where it saturates to ∓2^(31 − default).

    With `analyse`, `lower_model` first bounds every tensor (opmlc/frontend/ranges.py, graph
    inputs in `input_ranges` or the default range) and adds the bits those bounds allow as
    overrides; `overrides` given here (calibration's) take precedence over the analysis."""

    default: int = 16
    overrides: dict[str, int] = field(default_factory=dict)
    analyse: bool = False
    input_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    weight_frac: int | None = None  # bits for non-scalar constants, if not `default`
    # `--weights int8|int4`: constant weights of MatMul/Gemm/Conv/Gather become quantized
    # weights (frontend/initializers.py, docs/DESIGN.md "Quantized weights"); None keeps them fx32
    weights: str | None = None
    block_size: int | None = None  # None: the format's default (int8 per channel, int4 32)

    def weight_bits(self) -> int | None:
        """8 or 4 when weights are quantized, else None."""
        from opmlc.frontend.weights import BITS

        return BITS[self.weights] if self.weights else None

    def scale_frac(self, name: str, peak: float) -> int:
        """Bits for a quantized weight's scale: those its dequantized weight would get as an fx32
        constant (the accumulator rule included, through the override of `name`), at most
        MAX_FRAC, fewer where the largest |q − zp| · scale (`peak`) would not fit an int32."""
        want = self.overrides.get(name, self.default if self.weight_frac is None else self.weight_frac)
        if peak == 0.0:
            return max(0, min(want, MAX_FRAC))
        fits = 30 - max(0, math.ceil(math.log2(peak + 1e-300)))
        return max(0, min(want, fits, MAX_FRAC))

    def activation(self, name: str) -> int:
        return self.overrides.get(name, self.default)

    def constant(self, name: str, data: np.ndarray) -> int:
        """Bits for a constant: the default unless its largest magnitude would then saturate."""
        if name in self.overrides:
            want = self.overrides[name]
        elif np.size(data) == 1:
            want = SCALAR_FRAC  # a scalar (alpha, epsilon, a clip bound) costs nothing in precision
        else:
            want = self.default if self.weight_frac is None else self.weight_frac
        data = np.asarray(data)
        peak = _peak(data)
        if peak is None:  # ±inf saturates: at most the default bits keep it as large as any tensor
            want = min(want, self.default)
            finite = np.abs(data[np.isfinite(data)])
            peak = float(np.max(finite)) if finite.size else 0.0
        if peak == 0.0:
            return want
        fits = MAX_FRAC if peak < 2.0**-MAX_FRAC else 30 - max(0, math.ceil(math.log2(peak + 1e-300)))
        return max(0, min(want, fits))


def _peak(data: np.ndarray) -> float | None:
    """max |x| over an array without a copy of it (a weight may be a 65M-element map); None when
    it holds ±inf (NaN is refused before)."""
    if not data.size:
        return 0.0
    if np.issubdtype(data.dtype, np.floating) and not np.all(np.isfinite(data)):
        return None
    return float(max(abs(np.min(data)), abs(np.max(data))))


QUANT_CHUNK = 1 << 22  # elements quantized at a time: a large weight's float64 temporaries stay small


def quantize_chunked(arr: np.ndarray, frac: int) -> np.ndarray:
    """fixedpoint.quantize element by element, as the interpreter defines it, a block of rows at
    a time (a transposed weight is a strided view: no float copy of it is made)."""
    arr = np.asarray(arr)
    if arr.size <= QUANT_CHUNK or arr.ndim == 0:
        return fp.quantize(arr, frac)
    out = np.empty(arr.shape, np.int32)
    rows = max(1, QUANT_CHUNK // max(1, arr.size // arr.shape[0]))
    for i in range(0, arr.shape[0], rows):
        out[i:i + rows] = fp.quantize(arr[i:i + rows], frac)
    return out


MEMO_MIN = 1 << 12  # constants of fewer elements are quantized again each round (cheap)


def fingerprint(arr: np.ndarray) -> tuple:
    """Shape, dtype and a digest of a strided sample of a constant (≤ 16 indices per axis): with
    the constant's name, what tells the rounds' weights apart without reading them whole."""
    sample = np.ascontiguousarray(arr[tuple(slice(None, None, max(1, d // 16)) for d in arr.shape)])
    return arr.shape, arr.dtype.str, hashlib.sha256(sample.tobytes()).hexdigest()


class WeightMemo:
    """Quantized constants kept from one lowering round to the next: lower_model lowers a model
    up to 4 times while the range analysis settles the bits, and a weight's integers depend only
    on its values and its bits (fx32) or format (--weights). Keys name the constant, its
    `fingerprint` and those parameters. `end_round` drops what the last round did not use, so
    the memo holds no more than that round's graph (whose initializers are the same arrays)."""

    def __init__(self) -> None:
        self._entries: dict[tuple, object] = {}
        self._used: set[tuple] = set()

    def get(self, key: tuple, make: Callable[[], object]) -> object:
        if key not in self._entries:
            self._entries[key] = make()
        self._used.add(key)
        return self._entries[key]

    def end_round(self) -> None:
        self._entries = {k: v for k, v in self._entries.items() if k in self._used}
        self._used = set()


def _quantize_counted(arr: np.ndarray, frac: int) -> tuple[np.ndarray, int]:
    with fp.count_saturation() as c:
        q = quantize_chunked(arr, frac)
    return q, c.n


def numpy_dtype_to_ir(dt: np.dtype) -> DType:
    """fx32 for floats, i64 for int64/uint32, i32 for narrower ints, bool for bool."""
    dt = np.dtype(dt)
    if dt == np.bool_:
        return DType.BOOL
    if np.issubdtype(dt, np.floating):
        return DType.FX32
    if dt in (np.dtype(np.int64), np.dtype(np.uint32)):
        return DType.I64
    if np.issubdtype(dt, np.integer) and dt.itemsize <= 4:
        return DType.I32
    raise UnsupportedError(f"element type {dt} has no IR type")


@dataclass(frozen=True)
class QWeightRefs:
    """The IR values of one quantized weight (ir/ops/_qweight.py): q, scale, zero point."""

    q: int
    scale: int
    zero_point: int | None
    block_size: int

    def operands(self) -> list[int]:
        return [self.q, self.scale] + ([self.zero_point] if self.zero_point is not None else [])


@dataclass
class WeightsReport:
    """What `--weights` did in one lowering: how many weights and parameters it quantized, and
    the error it introduced (frontend/initializers.py WeightError, summed over the weights)."""

    quantized: int = 0
    parameters: int = 0
    error: object = None  # WeightError


class NodeNames:
    """Fresh names for the intermediate values one ONNX node lowers to: `OUT/what1`, `OUT/what2`…
    after the node's first output (or its name), so that a composite rule's values are traceable
    to the node and never collide with another node's."""

    def __init__(self, node: onnx.NodeProto) -> None:
        self.base, self.n = node.output[0] or node.name, 0

    def __call__(self, what: str) -> str:
        self.n += 1
        return f"{self.base}/{what}{self.n}"


class LoweringContext:
    def __init__(self, builder: GraphBuilder, policy: QuantPolicy, opset: int, source: str,
                 memo: WeightMemo | None = None) -> None:
        self.builder = builder
        self.memo = memo if memo is not None else WeightMemo()
        self.policy = policy
        self.opset = opset
        self.source = source  # the model's path, for error messages
        self.env: dict[str, Sym] = {}
        self._const_refs: dict[tuple[str, int], int] = {}
        self.node: onnx.NodeProto | None = None
        # ONNX element types by tensor name (after shape inference), for the few rules whose
        # integer semantics depend on a width the IR's i32/i64 do not keep (uint8's BitwiseNot)
        self.elem_types: dict[str, int] = {}
        self._qweights: dict[tuple[str, str], QWeightRefs] = {}
        # DequantizeLinear outputs of constant integer weights (rules/quantized_weights.py QDQWeight):
        # the ONNX model's own quantized weights, kept as they are by MatMul, Gemm, Conv and Gather
        self.qdq_weights: dict[str, object] = {}
        self.weights_report = WeightsReport()

    # -- quantized weights (--weights) ------------------------------------------------------
    def quantizes_weights(self) -> bool:
        return self.policy.weights is not None

    def qweight_ref(self, name: str, w: np.ndarray, *, per_channel: bool = False,
                    shape: tuple[int, ...] | None = None) -> QWeightRefs:
        """The quantized weight of the constant `w` ([N, K] float, output-channel major) under the
        policy's `weights`: q (i8/i4, reshaped to `shape` if given), its fx32 scale and no zero
        point (symmetric). `per_channel` forces one scale per output channel (conv). Quantized
        once per name; the error it introduces is added to `weights_report`."""
        from opmlc.frontend.weights import DEFAULT_BLOCK, quantize_weight

        bits = self.policy.weight_bits()
        assert bits is not None, "qweight_ref without --weights"
        bs = None if per_channel else (self.policy.block_size or DEFAULT_BLOCK[bits])
        key = (name, "channel" if bs is None else str(bs))
        if key in self._qweights:
            return self._qweights[key]
        w = np.asarray(w)
        if not np.issubdtype(w.dtype, np.floating):
            w = w.astype(np.float64)
        try:  # quantize_weight refuses NaN and inf, block by block
            qw = self.memo.get(("q", name, bits, bs, fingerprint(w)), partial(quantize_weight, w, bits, bs))
        except ValueError as exc:
            raise self.unsupported(f"weight {name!r}: {exc}, which --weights cannot quantize") from None
        refs = self.add_qweight(name, qw, shape)
        self._qweights[key] = refs
        return refs

    def add_qweight(self, name: str, qw, shape: tuple[int, ...] | None = None) -> QWeightRefs:
        """The IR initializers of a quantized weight made elsewhere (`frontend/weights.
        QuantizedWeight`: by quantize_weight, or from an ONNX quantized format with signed q and
        zero point and float scales): the scale rounded to fixed point with the bits of
        `QuantPolicy.scale_frac`, fewer if |q − zp| · scale would not fit an int32. Counts it in
        `weights_report` (its `error`, if any, summed)."""
        from opmlc.frontend.weights import WeightError, block_peaks

        n, k = qw.q.shape
        zp = None if qw.zero_point is None else np.asarray(qw.zero_point)
        dmax = block_peaks(qw)
        scale = np.abs(np.asarray(qw.scale, np.float64))
        scale_name = f"{name}/scale"
        fs = self.policy.scale_frac(scale_name, float((dmax * scale).max(initial=0.0)))
        while True:  # the rounded scale must keep |q − zp| · scale below 2^31 (w fits an int32)
            raw = np.rint(np.asarray(qw.scale, np.float64) * 2.0**fs)
            big = max(float(np.abs(raw).max(initial=0.0)), float((dmax * np.abs(raw)).max(initial=0.0)))
            if big < 2.0**31:
                break
            if fs == 0:
                raise self.unsupported(f"weight {name!r}: a scale of {scale.max():.3g} is beyond fixed point")
            fs -= 1
        qtype = DType.I8 if qw.bits == 8 else DType.I4
        lo, hi = qtype.int_range
        if qw.q.size and (qw.q.min() < lo or qw.q.max() > hi):
            raise self.unsupported(f"weight {name!r}: integers outside {qtype.value}'s range {lo}..{hi}")
        qshape = tuple(shape) if shape is not None else (n, k)
        q_ref = self.builder.add_initializer(name, qw.q.reshape(qshape), TensorType(qtype, qshape))
        s_ref = self.builder.add_initializer(scale_name, raw.astype(np.int32), TensorType(DType.FX32, raw.shape, fs))
        z_ref = None
        if zp is not None:
            z_ref = self.builder.add_initializer(f"{name}/zero_point", zp.astype(np.int8), TensorType(qtype, raw.shape))
        rep = self.weights_report
        rep.quantized += 1
        rep.parameters += int(qw.q.size)
        if rep.error is None:
            rep.error = WeightError()
        if qw.error is not None:
            rep.error.add(qw.error)
        return QWeightRefs(q_ref, s_ref, z_ref, qw.block_size)

    # -- errors ---------------------------------------------------------------------------
    def where(self) -> str:
        n = self.node
        if n is None:
            return self.source
        opset = f"opset {self.opset}" if self.opset else "no default-domain opset"  # 0: an ai.onnx.ml-only model
        return f"{self.source}: node {n.name or '(unnamed)'!r} ({n.op_type}, {opset})"

    def unsupported(self, what: str) -> UnsupportedError:
        return UnsupportedError(f"{self.where()}: {what}")

    # -- names ----------------------------------------------------------------------------
    def sym(self, name: str) -> Sym:
        try:
            return self.env[name]
        except KeyError:
            raise self.unsupported(f"input {name!r} is not defined before use") from None

    def const(self, name: str) -> np.ndarray | None:
        s = self.sym(name)
        return s.array if isinstance(s, Const) else None

    def require_const(self, name: str, what: str) -> np.ndarray:
        arr = self.const(name)
        if arr is None:
            raise self.unsupported(f"{what} ({name!r}) must be a compile-time constant")
        return arr

    def ref(self, name: str, dtype: DType = DType.FX32) -> int:
        """The IR value for a name, turning a constant into a quantized initializer once."""
        s = self.sym(name)
        if isinstance(s, Ref):
            return s.id
        return self.const_ref(name, s.array, dtype)

    def const_ref(self, name: str, arr: np.ndarray, dtype: DType = DType.FX32, max_frac: int | None = None) -> int:
        if dtype is DType.FX32:
            if not np.issubdtype(arr.dtype, np.floating):
                arr = arr.astype(np.float64)
            if np.any(np.isnan(arr)):
                raise self.unsupported(f"constant {name!r} holds NaN, which fixed point cannot represent")
            # ±inf (the −inf of an attention mask) saturates to the int32 extremes in quantize
            frac = self.policy.constant(name, arr)
            if max_frac is not None:  # a bias may not have more bits than the product it joins
                frac = max(0, min(frac, max_frac))
            key = (name, frac)
            if key not in self._const_refs:
                t = TensorType(DType.FX32, tuple(arr.shape), frac)
                if arr.size < MEMO_MIN:
                    q = fp.quantize(arr, frac)
                else:  # the clips a memoised weight had are counted again in this round
                    q, clipped = self.memo.get(("fx32", name, frac, fingerprint(arr)),
                                               partial(_quantize_counted, arr, frac))
                    fp.count_saturated(np.ones(clipped, bool))
                self._const_refs[key] = self.builder.add_initializer(name, q, t)
            return self._const_refs[key]
        key = (name, -1)
        if key not in self._const_refs:
            t = TensorType(dtype, tuple(arr.shape))
            self._const_refs[key] = self.builder.add_initializer(name, arr.astype(dtype.numpy, copy=False), t)
        return self._const_refs[key]

    # -- typed values (the CNN / conformance rules) -----------------------------------------
    def dtype(self, name: str) -> DType:
        """The IR element type a name has (constants: by their numpy dtype)."""
        s = self.sym(name)
        if isinstance(s, Ref):
            return self.builder.type_of(s.id).dtype
        return numpy_dtype_to_ir(s.array.dtype)

    def value(self, name: str) -> int:
        """The IR value for a name, constants quantized in their natural element type."""
        return self.ref(name, self.dtype(name))

    def fx(self, name: str) -> int:
        """The IR value for a name as fx32 (ints and bools cast, with the policy's bits)."""
        ref = self.value(name)
        t = self.builder.type_of(ref)
        if t.dtype is DType.FX32:
            return ref
        return self.emit("cast", [ref], {"to": "fx32", "frac": self.policy.activation(name)}, f"{name}/fx")

    def frac_of(self, ref: int) -> int:
        return self.builder.type_of(ref).frac

    def type_of(self, name: str) -> TensorType:
        s = self.sym(name)
        if isinstance(s, Ref):
            return self.builder.type_of(s.id)
        raise AssertionError("type_of is for IR values")

    def shape_of(self, name: str) -> tuple[int, ...]:
        s = self.sym(name)
        return tuple(s.array.shape) if isinstance(s, Const) else self.builder.type_of(s.id).shape

    def emit(self, op: str, inputs: list[int], attrs: dict | None = None, name: str = "") -> int:
        return self.builder.add_node(op, inputs, attrs, name)

    def bind(self, name: str, sym: Sym | int) -> None:
        self.env[name] = Ref(sym) if isinstance(sym, int) else sym

    def release(self, keep: Iterable[str]) -> None:
        """Forget every constant whose name is not in `keep` (the names later nodes or the graph
        outputs read): the float arrays rules derived from weights (a transposed MatMul weight,
        a folded result) are freed once their node is lowered. Their quantized initializers
        stay in the builder; a later rule that derives one again gets the same initializer."""
        keep = set(keep)
        for name in [n for n, s in self.env.items() if isinstance(s, Const) and n not in keep]:
            del self.env[name]

    def attrs(self) -> dict:
        assert self.node is not None
        return {a.name: onnx.helper.get_attribute_value(a) for a in self.node.attribute}
