"""Shared parts of models/make_tiny_llama.py and models/make_tiny_gpt2.py: the byte-level text
that ships offline (Python's own standard library sources), the two decoder architectures, the
training loop and the ONNX export.

Text. Training text is the top-level `*.py` files of the running interpreter's standard library
(sorted by name, concatenated, at most TRAIN_BYTES bytes), minus the HELD_OUT files, which are
the evaluation text (`held_out_bytes`). The vocabulary is the 256 byte values; a token id is a
byte. Rebuilding the models bit for bit needs the same Python version (3.11) and torch 2.13 CPU.

Models. Both take int64 token ids [1, CONTEXT] and return logits [1, CONTEXT, 256] (position t
predicts byte t + 1), causal multi-head attention with a fixed context:
- `TinyLlama`: RMSNorm (written out as LLaMA's reference code does: x · rsqrt(mean(x²) + eps) ·
  w, which torch exports as Pow/ReduceMean/Add/Sqrt/Div/Mul), rotary position embeddings
  (rotate_half: Slice/Neg/Concat/Mul), an additive causal mask of −inf above the diagonal,
  SwiGLU MLP (SiLU as Sigmoid·x), untied output head, no biases.
- `TinyGPT2`: learned positions, LayerNorm (exported as LayerNormalization), GELU (exported as
  Div/Erf/Add/Mul), biases, output head tied to the token embedding.

torch is a development dependency only: this module is imported by the model scripts and by
tests that skip without torch; nothing in opmlc imports it.
"""

from __future__ import annotations

import math
import sysconfig
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CONTEXT = 32
VOCAB = 256
TRAIN_BYTES = 3_000_000
HELD_OUT = ("textwrap.py", "shlex.py", "fnmatch.py", "glob.py", "bisect.py", "colorsys.py")
SEED = 0


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def train_bytes() -> np.ndarray:
    files = sorted(p for p in stdlib_dir().glob("*.py") if p.name not in HELD_OUT)
    data = b"".join(p.read_bytes() for p in files)[:TRAIN_BYTES]
    return np.frombuffer(data, dtype=np.uint8).copy()


def held_out_bytes() -> np.ndarray:
    data = b"".join((stdlib_dir() / name).read_bytes() for name in HELD_OUT)
    return np.frombuffer(data, dtype=np.uint8).copy()


def held_out_windows(count: int, seed: int = 1) -> np.ndarray:
    """`count` windows of CONTEXT + 1 bytes of held-out text at seeded offsets: [count, 33]."""
    text = held_out_bytes()
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(text) - CONTEXT - 1, size=count)
    return np.stack([text[s:s + CONTEXT + 1] for s in starts]).astype(np.int64)


def encode(text: str | bytes) -> np.ndarray:
    """Bytes of `text` as int64 token ids [1, CONTEXT]: the last CONTEXT bytes, or, if shorter,
    right-aligned after padding on the left with spaces (byte 32)."""
    data = text.encode() if isinstance(text, str) else bytes(text)
    data = data[-CONTEXT:]
    data = b" " * (CONTEXT - len(data)) + data
    return np.frombuffer(data, dtype=np.uint8).astype(np.int64).reshape(1, CONTEXT)


def _torch():
    import torch

    return torch


def build_llama(d: int = 64, heads: int = 4, layers: int = 2, hidden: int = 128):
    torch = _torch()
    nn = torch.nn

    class RMSNorm(nn.Module):
        def __init__(self, dim: int, eps: float = 1e-5) -> None:
            super().__init__()
            self.eps = eps
            self.weight = nn.Parameter(torch.ones(dim))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight

    def rotate_half(x):
        h = x.shape[-1] // 2
        return torch.cat((-x[..., h:], x[..., :h]), dim=-1)

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dh = d // heads
            self.wq = nn.Linear(d, d, bias=False)
            self.wk = nn.Linear(d, d, bias=False)
            self.wv = nn.Linear(d, d, bias=False)
            self.wo = nn.Linear(d, d, bias=False)

        def forward(self, x, cos, sin, mask):
            b, t, _ = x.shape
            q = self.wq(x).view(b, t, heads, self.dh).transpose(1, 2)
            k = self.wk(x).view(b, t, heads, self.dh).transpose(1, 2)
            v = self.wv(x).view(b, t, heads, self.dh).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.dh) + mask
            out = scores.softmax(-1) @ v
            return self.wo(out.transpose(1, 2).reshape(b, t, d))

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn_norm = RMSNorm(d)
            self.attn = Attention()
            self.mlp_norm = RMSNorm(d)
            self.w1 = nn.Linear(d, hidden, bias=False)
            self.w3 = nn.Linear(d, hidden, bias=False)
            self.w2 = nn.Linear(hidden, d, bias=False)

        def forward(self, x, cos, sin, mask):
            x = x + self.attn(self.attn_norm(x), cos, sin, mask)
            h = self.mlp_norm(x)
            return x + self.w2(nn.functional.silu(self.w1(h)) * self.w3(h))

    class TinyLlama(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(VOCAB, d)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.norm = RMSNorm(d)
            self.head = nn.Linear(d, VOCAB, bias=False)
            dh = d // heads
            inv = 1.0 / (10000.0 ** (torch.arange(0, dh, 2).float() / dh))
            ang = torch.outer(torch.arange(CONTEXT).float(), inv)
            ang = torch.cat((ang, ang), dim=-1)
            self.register_buffer("cos", ang.cos(), persistent=False)
            self.register_buffer("sin", ang.sin(), persistent=False)
            self.register_buffer("mask", torch.full((CONTEXT, CONTEXT), float("-inf")).triu(1), persistent=False)

        def forward(self, tokens):
            x = self.embed(tokens)
            t = tokens.shape[1]
            cos, sin, mask = self.cos[:t], self.sin[:t], self.mask[:t, :t]
            for blk in self.blocks:
                x = blk(x, cos, sin, mask)
            return self.head(self.norm(x))

    return TinyLlama()


def build_gpt2(d: int = 64, heads: int = 4, layers: int = 2):
    torch = _torch()
    nn = torch.nn

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dh = d // heads
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)

        def forward(self, x, mask):
            b, t, _ = x.shape
            q, k, v = self.qkv(x).split(d, dim=-1)
            q, k, v = (z.view(b, t, heads, self.dh).transpose(1, 2) for z in (q, k, v))
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.dh)
            scores = scores.masked_fill(mask, float("-inf"))
            out = scores.softmax(-1) @ v
            return self.proj(out.transpose(1, 2).reshape(b, t, d))

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1 = nn.LayerNorm(d)
            self.attn = Attention()
            self.ln2 = nn.LayerNorm(d)
            self.fc = nn.Linear(d, 4 * d)
            self.out = nn.Linear(4 * d, d)

        def forward(self, x, mask):
            x = x + self.attn(self.ln1(x), mask)
            return x + self.out(nn.functional.gelu(self.fc(self.ln2(x))))

    class TinyGPT2(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wte = nn.Embedding(VOCAB, d)
            self.wpe = nn.Embedding(CONTEXT, d)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.ln_f = nn.LayerNorm(d)
            self.register_buffer("mask", torch.ones(CONTEXT, CONTEXT, dtype=torch.bool).triu(1), persistent=False)

        def forward(self, tokens):
            t = tokens.shape[1]
            x = self.wte(tokens) + self.wpe(torch.arange(t))
            mask = self.mask[:t, :t]
            for blk in self.blocks:
                x = blk(x, mask)
            return self.ln_f(x) @ self.wte.weight.t()

    return TinyGPT2()


def train(model, steps: int, batch: int = 64, lr: float = 3e-3, log=print) -> float:
    """AdamW with cosine decay on random windows of the training text (fixed seed); returns the
    final training loss."""
    torch = _torch()
    torch.manual_seed(SEED)
    data = torch.from_numpy(train_bytes().astype(np.int64))
    gen = torch.Generator().manual_seed(SEED)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    model.train()
    start = time.perf_counter()
    loss_avg = None
    for step in range(steps):
        idx = torch.randint(0, len(data) - CONTEXT - 1, (batch,), generator=gen)
        win = torch.stack([data[i:i + CONTEXT + 1] for i in idx.tolist()])
        logits = model(win[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), win[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        if step % 250 == 0 or step == steps - 1:
            log(f"step {step}: loss {loss_avg:.3f} ({time.perf_counter() - start:.0f} s)")
    model.eval()
    return float(loss_avg)


def held_out_accuracy(model, windows: int = 512) -> float:
    """Float next-byte accuracy on every position of `windows` held-out windows."""
    torch = _torch()
    w = torch.from_numpy(held_out_windows(windows, seed=2))
    with torch.no_grad():
        pred = model(w[:, :-1]).argmax(-1)
    return float((pred == w[:, 1:]).float().mean())


def export(model, path: Path) -> None:
    """ONNX opset 17 with the TorchScript-based exporter, input `tokens` int64 [1, CONTEXT],
    output `logits` float [1, CONTEXT, 256]; then checked."""
    torch = _torch()
    import onnx

    tokens = torch.zeros(1, CONTEXT, dtype=torch.long)
    torch.onnx.export(model, (tokens,), str(path), dynamo=False, opset_version=17,
                      input_names=["tokens"], output_names=["logits"], do_constant_folding=True)
    m = onnx.load(str(path))
    m.producer_name = "opmlc/models"
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def make(kind: str, steps: int) -> None:
    torch = _torch()
    torch.set_num_threads(1)  # two threads on two shared cores spin-wait: 100x slower
    torch.manual_seed(SEED)
    model = build_llama() if kind == "llama" else build_gpt2()
    n = sum(p.numel() for p in model.parameters())
    print(f"tiny_{kind}: {n} parameters, {steps} steps")
    loss = train(model, steps)
    acc = held_out_accuracy(model)
    out = HERE / f"tiny_{kind}.onnx"
    export(model, out)
    print(f"final training loss {loss:.3f}; held-out float next-byte accuracy {acc:.4f}; "
          f"wrote {out} ({out.stat().st_size} bytes)")
