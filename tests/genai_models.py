"""onnxruntime-genai test models (models/make_genai.py: random weights, a byte-level BPE trained
on stdlib sources, the builder's int4 export), made once per test session, and onnxruntime-genai's
own greedy generation on them, the reference `opmlc generate` is compared with."""

from __future__ import annotations

from pathlib import Path

import numpy as np

PROMPTS = [
    "def fibonacci(n):",
    "import os\nimport sys\n",
    "class Stack:\n    def __init__(self):",
    "for i in range(10):",
    "return self._data",
    "# Copyright (c) Python Software Foundation",
    "if __name__ == '__main__':",
    "raise ValueError('bad value')",
    "with open(path) as f:",
    "x = [i * i for i in",
]


def make_model(root: Path, arch: str) -> Path:
    from models.make_genai import make_genai

    return make_genai(root / arch, arch)


def ort_greedy(folder: Path, prompt_ids: list[int], max_new_tokens: int) -> tuple[list[int], list[float]]:
    """onnxruntime-genai's greedy tokens and, for each, the margin of its logits' top two."""
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt_ids) + max_new_tokens, do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(np.asarray(prompt_ids, dtype=np.int32))
    tokens, margins = [], []
    while not gen.is_done():
        logits = np.asarray(gen.get_logits(), dtype=np.float64).reshape(-1)
        gen.generate_next_token()
        tokens.append(int(gen.get_next_tokens()[0]))
        top = np.sort(logits)[-2:]
        margins.append(float(top[1] - top[0]))
    return tokens, margins
