"""Build models/tiny_llama.onnx: a LLaMA-architecture byte-level decoder trained on Python's
standard library sources (models/tiny_decoders.py has the text, the architecture and the
training loop).

d_model 64, 4 heads of 16, 2 layers, SwiGLU hidden 128, RMSNorm, rotary positions, causal
attention over a fixed context of 32 bytes; input `tokens` int64 [1, 32], output `logits`
float [1, 32, 256]. 3000 AdamW steps of 64 windows on one CPU thread (about a minute and a
half), seed 0. Run: `python -m models.make_tiny_llama` (needs torch, a dev-only dependency).
"""

from __future__ import annotations

from models.tiny_decoders import make

STEPS = 3000

if __name__ == "__main__":
    make("llama", STEPS)
