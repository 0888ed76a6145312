"""Build a LLaMA-architecture decoder of any shape with random weights, as a float32 ONNX model
with external data (`model.onnx` + `model.onnx.data`): the large-model input of bench/scale.py.

The defaults are TinyLlama-1.1B's shape: hidden 2048, 22 layers, 32 heads of 64 with 4
key/value heads (grouped-query attention), SwiGLU MLP 5632, vocabulary 32000, untied output
head, RMSNorm eps 1e-5, rotary base 10000. Input `tokens` int64 [1, T] (T = `--context`, default
32), output `logits` float32 [1, T, vocab]; causal attention over the fixed context.

The graph is the one torch's TorchScript exporter writes for models/tiny_decoders.py's
TinyLlama (RMSNorm written out as Pow/ReduceMean/Add/Sqrt/Div/Mul, rotate_half as
Slice/Neg/Concat, an additive −inf mask, SiLU as x·Sigmoid(x), weights [in, out] for MatMul),
plus HF's `repeat_kv` for the key/value heads (Unsqueeze, Expand, Reshape). It is written with
onnx.helper rather than exported: torch.onnx.export holds the module's 4.4 GB of parameters, a
traced copy and the serialised proto at once (more than this 24 GB machine can spare next to
other work), and torch 2.13's default dynamo exporter needs onnxscript. Here each weight is
drawn with torch's CPU generator (seeded; normal, std 0.02 as HF's `initializer_range`; norm
weights 1), appended to the data file at a 4 KiB-aligned offset and freed, so making the 1.1B
model needs a few hundred MB of memory. `llama_reference` recomputes the logits with torch
from the same weights (tests check the graph against it at a small shape).

torch is a development dependency only; nothing in opmlc imports this module.
Run: `python -m models.make_llama OUT_DIR [--layers N --hidden D ...]`.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MODEL = "model.onnx"
DATA = MODEL + ".data"
OPSET = 17
ALIGN = 4096  # offsets of the weights in the data file: page-aligned, so readers can map them


@dataclass(frozen=True)
class LlamaShape:
    hidden: int = 2048
    layers: int = 22
    heads: int = 32
    kv_heads: int = 4
    mlp: int = 5632
    vocab: int = 32000
    context: int = 32
    seed: int = 0
    eps: float = 1e-5
    rope_base: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def parameters(self) -> int:
        d, kv = self.hidden, self.kv_heads * self.head_dim
        per_layer = 2 * d * d + 2 * d * kv + 3 * d * self.mlp + 2 * d
        return self.layers * per_layer + 2 * self.vocab * d + d

    def check(self) -> None:
        if self.hidden % self.heads or self.heads % self.kv_heads or self.head_dim % 2:
            raise ValueError(f"hidden {self.hidden} must split into {self.heads} heads of even size, "
                             f"heads into {self.kv_heads} key/value heads")


def weights(shape: LlamaShape) -> Iterator[tuple[str, np.ndarray]]:
    """Every weight in file order, float32, as the graph uses it (MatMul weights [in, out]),
    drawn one at a time from torch's seeded CPU generator."""
    import torch

    gen = torch.Generator().manual_seed(shape.seed)
    d, kv = shape.hidden, shape.kv_heads * shape.head_dim

    def normal(rows: int, cols: int) -> np.ndarray:
        # drawn as torch's Linear stores it ([out, in]); the graph multiplies by its transpose
        w = torch.randn(cols, rows, generator=gen, dtype=torch.float32) * 0.02
        return np.ascontiguousarray(w.numpy().T)

    yield "embed.weight", np.ascontiguousarray(normal(d, shape.vocab).T)  # [vocab, d]
    ones = np.ones(d, np.float32)
    for i in range(shape.layers):
        p = f"layers.{i}."
        yield p + "attn_norm.weight", ones
        yield p + "attn.wq", normal(d, d)
        yield p + "attn.wk", normal(d, kv)
        yield p + "attn.wv", normal(d, kv)
        yield p + "attn.wo", normal(d, d)
        yield p + "mlp_norm.weight", ones
        yield p + "mlp.w1", normal(d, shape.mlp)
        yield p + "mlp.w3", normal(d, shape.mlp)
        yield p + "mlp.w2", normal(shape.mlp, d)
    yield "norm.weight", ones
    yield "head.weight", normal(d, shape.vocab)


def rotary(shape: LlamaShape) -> tuple[np.ndarray, np.ndarray]:
    dh, t = shape.head_dim, shape.context
    inv = 1.0 / (shape.rope_base ** (np.arange(0, dh, 2, dtype=np.float64) / dh))
    ang = np.outer(np.arange(t, dtype=np.float64), inv)
    ang = np.concatenate([ang, ang], axis=-1)
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def causal_mask(t: int) -> np.ndarray:
    return np.triu(np.full((t, t), -np.inf, np.float32), 1)


class _Graph:
    """A node list with generated names and small constants as Constant nodes."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.n = 0

    def op(self, op_type: str, inputs: list[str], prefix: str, **attrs) -> str:
        self.n += 1
        out = f"/{prefix}/{op_type}_{self.n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def const(self, value, prefix: str) -> str:
        arr = np.asarray(value)
        self.n += 1
        out = f"/{prefix}/Constant_{self.n}"
        self.nodes.append(helper.make_node("Constant", [], [out], name=out, value=numpy_helper.from_array(arr)))
        return out

    def rmsnorm(self, x: str, w: str, eps: float, p: str) -> str:
        # as torch exports x * rsqrt(mean(x²) + eps) * w (opmlc fuses it into RMSNormalization)
        sq = self.op("Pow", [x, self.const(np.float32(2.0), p)], p)
        mean = self.op("ReduceMean", [sq], p, axes=[-1], keepdims=1)
        s = self.op("Sqrt", [self.op("Add", [mean, self.const(np.float32(eps), p)], p)], p)
        inv = self.op("Div", [self.const(np.float32(1.0), p), s], p)
        return self.op("Mul", [self.op("Mul", [x, inv], p), w], p)

    def heads(self, x: str, n: int, dh: int, t: int, p: str) -> str:
        r = self.op("Reshape", [x, self.const(np.array([1, t, n, dh], np.int64), p)], p)
        return self.op("Transpose", [r], p, perm=[0, 2, 1, 3])  # [1, n, t, dh]

    def rope(self, x: str, cos: str, sin: str, dh: int, p: str) -> str:
        h = dh // 2

        def sl(a: int, b: int) -> str:
            return self.op("Slice", [x, self.const(np.array([a], np.int64), p), self.const(np.array([b], np.int64), p),
                                     self.const(np.array([-1], np.int64), p), self.const(np.array([1], np.int64), p)], p)

        rot = self.op("Concat", [self.op("Neg", [sl(h, dh)], p), sl(0, h)], p, axis=-1)
        return self.op("Add", [self.op("Mul", [x, cos], p), self.op("Mul", [rot, sin], p)], p)

    def repeat_kv(self, x: str, kv: int, rep: int, t: int, dh: int, p: str) -> str:
        if rep == 1:
            return x
        u = self.op("Unsqueeze", [x, self.const(np.array([2], np.int64), p)], p)  # [1, kv, 1, t, dh]
        e = self.op("Expand", [u, self.const(np.array([1, kv, rep, t, dh], np.int64), p)], p)
        return self.op("Reshape", [e, self.const(np.array([1, kv * rep, t, dh], np.int64), p)], p)


def build_graph(shape: LlamaShape) -> onnx.GraphProto:
    """The decoder's graph; weights are graph initializers named as `weights` yields them (their
    data is attached by `write_model`)."""
    shape.check()
    g = _Graph()
    d, t, dh, nh, nkv = shape.hidden, shape.context, shape.head_dim, shape.heads, shape.kv_heads
    cos_v, sin_v = rotary(shape)
    cos, sin = g.const(cos_v, "rope"), g.const(sin_v, "rope")
    mask = g.const(causal_mask(t), "mask")
    scale = g.const(np.float32(math.sqrt(dh)), "attn")
    x = g.op("Gather", ["embed.weight", "tokens"], "embed")
    for i in range(shape.layers):
        p = f"layers.{i}"
        h = g.rmsnorm(x, f"{p}.attn_norm.weight", shape.eps, f"{p}/attn_norm")
        q = g.heads(g.op("MatMul", [h, f"{p}.attn.wq"], p), nh, dh, t, p)
        k = g.heads(g.op("MatMul", [h, f"{p}.attn.wk"], p), nkv, dh, t, p)
        v = g.heads(g.op("MatMul", [h, f"{p}.attn.wv"], p), nkv, dh, t, p)
        q, k = g.rope(q, cos, sin, dh, p), g.rope(k, cos, sin, dh, p)
        k, v = g.repeat_kv(k, nkv, nh // nkv, t, dh, p), g.repeat_kv(v, nkv, nh // nkv, t, dh, p)
        scores = g.op("Div", [g.op("MatMul", [q, g.op("Transpose", [k], p, perm=[0, 1, 3, 2])], p), scale], p)
        probs = g.op("Softmax", [g.op("Add", [scores, mask], p)], p, axis=-1)
        ctx = g.op("Transpose", [g.op("MatMul", [probs, v], p)], p, perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, g.const(np.array([1, t, d], np.int64), p)], p)
        x = g.op("Add", [x, g.op("MatMul", [ctx, f"{p}.attn.wo"], p)], p)
        h = g.rmsnorm(x, f"{p}.mlp_norm.weight", shape.eps, f"{p}/mlp_norm")
        gate = g.op("MatMul", [h, f"{p}.mlp.w1"], p)
        silu = g.op("Mul", [gate, g.op("Sigmoid", [gate], p)], p)
        up = g.op("MatMul", [h, f"{p}.mlp.w3"], p)
        x = g.op("Add", [x, g.op("MatMul", [g.op("Mul", [silu, up], p), f"{p}.mlp.w2"], p)], p)
    h = g.rmsnorm(x, "norm.weight", shape.eps, "norm")
    g.op("MatMul", [h, "head.weight"], "head")
    g.nodes[-1].output[0] = "logits"
    return helper.make_graph(
        g.nodes, "llama",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, [1, t])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, t, shape.vocab])],
    )


def write_model(shape: LlamaShape, out_dir: str | Path, log=print) -> Path:
    """Write OUT_DIR/model.onnx and OUT_DIR/model.onnx.data; returns the model's path. The
    data file is written weight by weight (never the whole model in memory)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    graph = build_graph(shape)
    start = time.perf_counter()
    offset = 0
    with open(out_dir / DATA, "wb") as f:
        for name, arr in weights(shape):
            pad = -offset % ALIGN
            f.write(bytes(pad))
            offset += pad
            raw = np.ascontiguousarray(arr, dtype="<f4")
            f.write(memoryview(raw).cast("B"))
            tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(arr.shape))
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (("location", DATA), ("offset", offset), ("length", raw.nbytes)):
                tensor.external_data.add(key=key, value=str(value))
            graph.initializer.append(tensor)
            offset += raw.nbytes
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="opmlc/models/make_llama")
    model.ir_version = 8  # onnxruntime 1.17 and later read it
    for k, v in asdict(shape).items():
        model.metadata_props.add(key=f"llama.{k}", value=str(v))
    path = out_dir / MODEL
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path))  # by path: the checker finds the data file beside it
    log(f"wrote {path} + {DATA}: {shape.parameters():,} parameters, {offset / 1e9:.2f} GB "
        f"in {time.perf_counter() - start:.0f} s")
    return path


def shape_of(path: str | Path) -> LlamaShape | None:
    """The shape a model made here was built with (its metadata), or None."""
    model = onnx.load(str(path), load_external_data=False)
    meta = {p.key[6:]: p.value for p in model.metadata_props if p.key.startswith("llama.")}
    if not meta:
        return None
    kinds = {k: type(v) for k, v in asdict(LlamaShape()).items()}
    return LlamaShape(**{k: kinds[k](v) for k, v in meta.items() if k in kinds})


def llama_reference(shape: LlamaShape, tokens: np.ndarray) -> np.ndarray:
    """The logits, computed with torch in float32 from the same weights: the LLaMA forward pass
    written as HF's modeling_llama computes it (for tests at small shapes)."""
    import torch

    w = {k: torch.from_numpy(v.copy()) for k, v in weights(shape)}
    d, t, dh, nh, nkv = shape.hidden, tokens.shape[1], shape.head_dim, shape.heads, shape.kv_heads
    cos, sin = (torch.from_numpy(a[:t]) for a in rotary(shape))

    def norm(x, g):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + shape.eps) * g

    def rot(x):
        return torch.cat((-x[..., dh // 2:], x[..., : dh // 2]), dim=-1)

    with torch.no_grad():
        x = w["embed.weight"][torch.from_numpy(tokens)]
        mask = torch.from_numpy(causal_mask(t))
        for i in range(shape.layers):
            p = f"layers.{i}."
            h = norm(x, w[p + "attn_norm.weight"])
            q = (h @ w[p + "attn.wq"]).view(1, t, nh, dh).transpose(1, 2)
            k = (h @ w[p + "attn.wk"]).view(1, t, nkv, dh).transpose(1, 2)
            v = (h @ w[p + "attn.wv"]).view(1, t, nkv, dh).transpose(1, 2)
            q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
            k, v = k.repeat_interleave(nh // nkv, dim=1), v.repeat_interleave(nh // nkv, dim=1)
            a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dh) + mask, dim=-1) @ v
            x = x + a.transpose(1, 2).reshape(1, t, d) @ w[p + "attn.wo"]
            h = norm(x, w[p + "mlp_norm.weight"])
            x = x + (torch.nn.functional.silu(h @ w[p + "mlp.w1"]) * (h @ w[p + "mlp.w3"])) @ w[p + "mlp.w2"]
        return (norm(x, w["norm.weight"]) @ w["head.weight"]).numpy()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    default = LlamaShape()
    for field, value in asdict(default).items():
        ap.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=value)
    args = ap.parse_args(argv)
    shape = LlamaShape(**{k: getattr(args, k) for k in asdict(default)})
    write_model(shape, args.out_dir)


if __name__ == "__main__":
    main()
