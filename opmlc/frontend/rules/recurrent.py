"""Rules for the recurrent layers RNN, GRU and LSTM, unrolled over the static sequence length
onto the IR's `matmul`, `concat`, `view`, `unary` (sigmoid, tanh), `relu`, `binary` and `where`.

Each step computes a gate's pre-activation as ONE matmul of [x_t, h_{t−1}] (concatenated) with
[W_g, R_g] (concatenated along K) plus the bias Wb_g + Rb_g: one int64 accumulation, one
rounding, one saturation, so x·W and h·R never saturate separately before they are added.
GRU's linear_before_reset=1 needs h·R_h on its own (one more matmul). Weights may be constants
(models) or run-time inputs (the ONNX node tests); both take the same path.

Fractional bits: the hidden state takes the bits of the Y output (calibrated or the default),
pre-activations min(those, 22) (|z| < 512: sigmoid and tanh are exactly 0/±1 beyond, so a
saturated pre-activation changes nothing for them), gate values 30 (they lie in [−1, 1]) and
the LSTM cell state the bits of Y_c or fewer, so that |c| ≤ |c_0| + t cannot saturate.

Supported: directions forward, reverse and bidirectional; layout 0 and 1; initial_h/initial_c;
LSTM peepholes (P); clip; GRU linear_before_reset; activations Sigmoid, Tanh and Relu (the
defaults included); sequence_lens as a constant equal to the sequence length, or as a run-time
input in the forward direction (a batch entry past its length keeps its state and yields
zeros). Anything else (other activations, LSTM input_forget, run-time lengths of a reverse
pass) is an UnsupportedError naming it.
"""

from __future__ import annotations

import numpy as np
import onnx

from opmlc.frontend.context import Const, LoweringContext
from opmlc.frontend.rules import rule
from opmlc.frontend.rules.arith import binary, const, frac
from opmlc.frontend.rules.movement import strides_of, view
from opmlc.frontend.rules.shape import reshape_to
from opmlc.ir.types import DType

GATE_FRAC = 30  # sigmoid and tanh values, in [−1, 1]
PRE_FRAC_MAX = 22  # pre-activations: |z| < 512
DEFAULT_ACTS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
ACTS = {"sigmoid", "tanh", "relu"}


class Unroller:
    """The state of one recurrent node's lowering: names, bits, and the emit helpers."""

    def __init__(self, ctx: LoweringContext, node: onnx.NodeProto) -> None:
        self.ctx, self.node = ctx, node
        self.n = 0
        a = ctx.attrs()
        op = node.op_type
        self.op = op
        self.direction = a.get("direction", b"forward")
        self.direction = self.direction.decode() if isinstance(self.direction, bytes) else self.direction
        self.dirs = 2 if self.direction == "bidirectional" else 1
        self.layout = int(a.get("layout", 0))
        self.hidden = int(a["hidden_size"])
        self.clip = a.get("clip")
        acts = [s.decode() if isinstance(s, bytes) else s for s in a.get("activations", [])] or DEFAULT_ACTS[op] * self.dirs
        if len(acts) == len(DEFAULT_ACTS[op]) and self.dirs == 2:
            acts = acts * 2
        for name in acts:
            if name.lower() not in ACTS:
                raise ctx.unsupported(f"{op} activation {name} (supported: Sigmoid, Tanh, Relu)")
        if a.get("activation_alpha") or a.get("activation_beta"):
            raise ctx.unsupported(f"{op} activation_alpha/activation_beta")
        if a.get("input_forget", 0):
            raise ctx.unsupported("LSTM input_forget=1")
        self.acts = [s.lower() for s in acts]
        self.lbr = int(a.get("linear_before_reset", 0))
        x_shape = ctx.shape_of(node.input[0])
        self.seq, self.batch = (x_shape[0], x_shape[1]) if self.layout == 0 else (x_shape[1], x_shape[0])
        self.isize = x_shape[2]
        outs = list(node.output) + [""] * 3
        self.y, self.y_h, self.y_c = outs[0], outs[1], outs[2] if op == "LSTM" else ""
        named = [o for o in (self.y, self.y_h) if o]
        self.hf = min(frac(ctx, o) for o in named) if named else ctx.policy.default
        self.pf = min(self.hf, PRE_FRAC_MAX)
        growth = (self.seq + 1).bit_length()
        self.cf = min(frac(ctx, self.y_c) if self.y_c else self.hf, 30 - growth)

    # -- names and small emitters ---------------------------------------------------------------
    def name(self, what: str) -> str:
        self.n += 1
        return f"{self.node.output[0] or self.node.name}/{what}{self.n}"

    def inp(self, k: int) -> str | None:
        return self.node.input[k] if len(self.node.input) > k and self.node.input[k] else None

    def slice(self, name: str, axis: int, start: int, stop: int) -> str:
        """name[..., start:stop, ...] along `axis` (kept): numpy for a constant, else a view."""
        s = self.ctx.sym(name)
        out = self.name("part")
        if isinstance(s, Const):
            idx = [slice(None)] * s.array.ndim
            idx[axis] = slice(start, stop)
            self.ctx.bind(out, Const(np.ascontiguousarray(s.array[tuple(idx)])))
            return out
        shape = list(self.ctx.shape_of(name))
        st = strides_of(shape)
        shape[axis] = stop - start
        view(self.ctx, name, shape, start * st[axis], st, out)
        return out

    def take(self, name: str, axis: int, index: int) -> str:
        """name[..., index, ...]: the axis dropped."""
        part = self.slice(name, axis, index, index + 1)
        shape = [d for k, d in enumerate(self.ctx.shape_of(part)) if k != axis]
        out = self.name("take")
        s = self.ctx.sym(part)
        if isinstance(s, Const):
            self.ctx.bind(out, Const(s.array.reshape(shape)))
        else:
            reshape_to(self.ctx, part, tuple(shape), out)
        return out

    def concat(self, names: list[str], axis: int, fo: int, out: str | None = None) -> str:
        out = out or self.name("cat")
        syms = [self.ctx.sym(n) for n in names]
        if all(isinstance(s, Const) for s in syms):
            self.ctx.bind(out, Const(np.concatenate([s.array for s in syms], axis=axis)))
            return out
        self.ctx.bind(out, self.ctx.emit("concat", [self.ctx.fx(n) for n in names], {"axis": axis, "frac": fo}, out))
        return out

    def fx_frac(self, name: str) -> int:
        s = self.ctx.sym(name)
        if isinstance(s, Const):
            return self.ctx.policy.constant(name, s.array) if np.issubdtype(s.array.dtype, np.floating) else 0
        return self.ctx.frac_of(self.ctx.fx(name))

    def bin(self, kind: str, a: str, b: str, fo: int, out: str | None = None) -> str:
        out = out or self.name(kind)
        self.ctx.bind(out, self.ctx.emit("binary", [self.ctx.fx(a), self.ctx.fx(b)], {"kind": kind, "frac": fo}, out))
        return out

    def act(self, kind: str, x: str) -> str:
        if self.clip is not None:
            c = float(self.clip)
            x = self.bin("max", x, const(self.ctx, self.name("lo"), -c), self.pf)
            x = self.bin("min", x, const(self.ctx, self.name("hi"), c), self.pf)
        out = self.name(kind)
        if kind == "relu":
            self.ctx.bind(out, self.ctx.emit("relu", [self.ctx.fx(x)], {}, out))
        else:
            self.ctx.bind(out, self.ctx.emit("unary", [self.ctx.fx(x)], {"kind": kind, "frac": GATE_FRAC}, out))
        return out

    def matmul(self, a: str, w: str, bias: str | None, fo: int) -> str:
        """a [B, K] · w [N, K]ᵀ (+ bias [N]) in one int64 accumulation."""
        ra, rw = self.ctx.fx(a), self.ctx.fx(w)
        ins = [ra, rw]
        if bias is not None:
            limit = self.ctx.frac_of(ra) + self.ctx.frac_of(rw)
            rb = self.ctx.fx(bias)
            if self.ctx.frac_of(rb) > limit:
                rb = self.ctx.emit("cast", [rb], {"to": "fx32", "frac": limit}, self.name("bias_q"))
            ins.append(rb)
        fo = min(fo, self.ctx.frac_of(ra) + self.ctx.frac_of(rw))
        out = self.name("mm")
        self.ctx.bind(out, self.ctx.emit("matmul", ins, {"frac": fo, "transpose_b": True}, out))
        return out

    # -- weights per direction and gate ----------------------------------------------------------
    def weights(self, d: int) -> dict:
        H, G = self.hidden, GATES[self.op]
        W, R = self.take(self.inp(1), 0, d), self.take(self.inp(2), 0, d)
        B = self.take(self.inp(3), 0, d) if self.inp(3) else None
        out = {}
        for g in range(G):
            wg, rg = self.slice(W, 0, g * H, (g + 1) * H), self.slice(R, 0, g * H, (g + 1) * H)
            fw = min(self.fx_frac(wg), self.fx_frac(rg))
            out[("W", g)], out[("R", g)] = wg, rg
            out[("WR", g)] = self.concat([wg, rg], 1, fw)
            if B is not None:
                wb, rb = self.slice(B, 0, g * H, (g + 1) * H), self.slice(B, 0, (G + g) * H, (G + g + 1) * H)
                out[("Wb", g)], out[("Rb", g)] = wb, rb
                sw, sr = self.ctx.sym(wb), self.ctx.sym(rb)
                if isinstance(sw, Const) and isinstance(sr, Const):
                    both = self.name("bias")
                    self.ctx.bind(both, Const(sw.array.astype(np.float64) + sr.array))
                    out[("B", g)] = both
                else:
                    out[("B", g)] = self.bin("add", wb, rb, min(self.fx_frac(wb), self.fx_frac(rb)))
            else:
                out[("B", g)] = out[("Wb", g)] = out[("Rb", g)] = None
        if self.op == "LSTM" and self.inp(7):
            P = self.take(self.inp(7), 0, d)
            for k in range(3):  # i, o, f
                out[("P", k)] = self.slice(P, 0, k * H, (k + 1) * H)
        return out

    def initial(self, k: int, d: int) -> str:
        """initial_h (k = 5) or initial_c (k = 6) of direction d as [B, H], or zeros."""
        name = self.inp(k)
        if name is None:
            z = self.name("zeros")
            self.ctx.bind(z, Const(np.zeros((self.batch, self.hidden), dtype=np.float32)))
            return z
        return self.take(name, 0 if self.layout == 0 else 1, d)

    def x_at(self, t: int) -> str:
        return self.take(self.node.input[0], 0 if self.layout == 0 else 1, t)

    # -- one step --------------------------------------------------------------------------------
    def gate(self, w: dict, g: int, xh: str, act: str, peep: tuple[str, str] | None = None) -> str:
        pre = self.matmul(xh, w[("WR", g)], w[("B", g)], self.pf)
        if peep is not None:
            p, c = peep
            pre = self.bin("add", pre, self.bin("mul", p, c, self.pf), self.pf)
        return self.act(act, pre)

    def step(self, w: dict, acts: list[str], x: str, h: str, c: str | None) -> tuple[str, str | None]:
        xh = self.concat([x, h], 1, min(self.fx_frac(x), self.fx_frac(h)))
        if self.op == "RNN":
            return self.gate(w, 0, xh, acts[0]), None
        if self.op == "GRU":
            z = self.gate(w, 0, xh, acts[0])
            r = self.gate(w, 1, xh, acts[0])
            if self.lbr:
                hr = self.matmul(h, w[("R", 2)], w[("Rb", 2)], self.pf)
                xw = self.matmul(x, w[("W", 2)], w[("Wb", 2)], self.pf)
                pre = self.bin("add", xw, self.bin("mul", r, hr, self.pf), self.pf)
                hh = self.act(acts[1], pre)
            else:
                rh = self.bin("mul", r, h, self.hf)
                xrh = self.concat([x, rh], 1, min(self.fx_frac(x), self.hf))
                hh = self.gate(w, 2, xrh, acts[1])
            # h' = (1 − z)·h̃ + z·h = h̃ + z·(h − h̃)
            return self.bin("add", hh, self.bin("mul", z, self.bin("sub", h, hh, self.hf), self.hf), self.hf), None
        P = ("P", 0) in w
        i = self.gate(w, 0, xh, acts[0], (w[("P", 0)], c) if P else None)
        f = self.gate(w, 2, xh, acts[0], (w[("P", 2)], c) if P else None)
        cc = self.gate(w, 3, xh, acts[1])
        c2 = self.bin("add", self.bin("mul", f, c, self.cf), self.bin("mul", i, cc, self.cf), self.cf)
        o = self.gate(w, 1, xh, acts[0], (w[("P", 1)], c2) if P else None)
        ch = self.act(acts[2], c2) if self.clip is None else self._plain_act(acts[2], c2)
        return self.bin("mul", o, ch, self.hf), c2

    def _plain_act(self, kind: str, x: str) -> str:
        """h(c) of LSTM: the clip applies to gate inputs, not to the cell state."""
        clip, self.clip = self.clip, None
        try:
            return self.act(kind, x)
        finally:
            self.clip = clip

    # -- the whole node ----------------------------------------------------------------------------
    def lengths(self) -> str | None:
        """A [B, 1] i64 tensor of run-time sequence lengths, or None when every length is the
        sequence length."""
        name = self.inp(4)
        if name is None:
            return None
        s = self.ctx.sym(name)
        if isinstance(s, Const):
            if np.all(np.asarray(s.array) == self.seq):
                return None
            raise self.ctx.unsupported(f"{self.op} with sequence_lens {np.asarray(s.array).tolist()} shorter "
                                       f"than the sequence ({self.seq})")
        if self.dirs == 2 or self.direction == "reverse":
            raise self.ctx.unsupported(f"{self.op} with run-time sequence_lens in direction {self.direction}")
        out = self.name("lens")
        reshape_to(self.ctx, name, (self.batch, 1), out)
        return out

    def lower(self) -> None:
        ctx = self.ctx
        lens = self.lengths()
        nacts = len(DEFAULT_ACTS[self.op])
        ys: dict[tuple[int, int], str] = {}
        last_h, last_c = [], []
        for d in range(self.dirs):
            w = self.weights(d)
            acts = self.acts[d * nacts:(d + 1) * nacts]
            h = self.initial(5, d)
            c = self.initial(6, d) if self.op == "LSTM" else None
            if c is not None:
                self.cf = min(self.cf, self.fx_frac(c))
            reverse = self.direction == "reverse" or d == 1
            for t in (range(self.seq - 1, -1, -1) if reverse else range(self.seq)):
                h2, c2 = self.step(w, acts, self.x_at(t), h, c)
                y = h2
                if lens is not None:
                    live = self.name("live")
                    binary(ctx, "gt", lens, const(ctx, self.name("t"), t, lens), live)
                    h2 = self._where(live, h2, h, self.hf)
                    if c2 is not None:
                        c2 = self._where(live, c2, c, self.cf)
                    zero = self.name("zero")
                    ctx.bind(zero, Const(np.zeros((1, 1), dtype=np.float32)))
                    y = self._where(live, y, zero, self.hf)
                ys[(t, d)] = y
                h, c = h2, c2
            last_h.append(h)
            last_c.append(c)
        B, H, S, D = self.batch, self.hidden, self.seq, self.dirs
        if self.y:
            parts = [self._reshaped(ys[(t, d)], (1, B, H)) for t in range(S) for d in range(D)]
            fy = frac(ctx, self.y)
            flat = self.concat(parts, 0, fy)
            if self.layout == 0:
                reshape_to(ctx, flat, (S, D, B, H), self.y)
            else:  # [S·D, B, H] → [B, S, D, H]
                view(ctx, flat, (B, S, D, H), 0, (H, D * B * H, B * H, 1), self.y)
        for out, states in ((self.y_h, last_h), (self.y_c, last_c)):
            if not out:
                continue
            fo = frac(ctx, out)
            flat = self.concat([self._reshaped(s, (1, B, H)) for s in states], 0, fo)
            if self.layout == 0:
                reshape_to(ctx, flat, (D, B, H), out)
            else:
                view(ctx, flat, (B, D, H), 0, (H, B * H, 1), out)

    def _reshaped(self, name: str, shape: tuple[int, ...]) -> str:
        out = self.name("r")
        s = self.ctx.sym(name)
        if isinstance(s, Const):
            self.ctx.bind(out, Const(s.array.reshape(shape)))
        else:
            reshape_to(self.ctx, name, shape, out)
        return out

    def _where(self, cond: str, a: str, b: str, fo: int) -> str:
        out = self.name("sel")
        self.ctx.bind(out, self.ctx.emit("where", [self.ctx.value(cond), self.ctx.fx(a), self.ctx.fx(b)],
                                         {"frac": fo}, out))
        return out


@rule("RNN", "GRU", "LSTM")
def recurrent(ctx: LoweringContext, node: onnx.NodeProto) -> None:
    if ctx.dtype(node.input[0]) is not DType.FX32:
        raise ctx.unsupported(f"{node.op_type} of a non-float input")
    Unroller(ctx, node).lower()

