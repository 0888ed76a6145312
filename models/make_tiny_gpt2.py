"""Build models/tiny_gpt2.onnx: a GPT-2-architecture byte-level decoder trained on Python's
standard library sources (models/tiny_decoders.py has the text, the architecture and the
training loop).

d_model 64, 4 heads of 16, 2 layers, MLP 256 with (erf) GELU, LayerNorm, learned positions,
output head tied to the token embedding, causal attention over a fixed context of 32 bytes;
input `tokens` int64 [1, 32], output `logits` float [1, 32, 256]. 3000 AdamW steps of 64
windows on one CPU thread, seed 0. Run: `python -m models.make_tiny_gpt2` (needs torch, a
dev-only dependency).
"""

from __future__ import annotations

from models.tiny_decoders import make

STEPS = 3000

if __name__ == "__main__":
    make("gpt2", STEPS)
