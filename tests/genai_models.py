"""onnxruntime-genai test models (models/make_genai.py: random weights, a byte-level BPE trained
on stdlib sources, the builder's int4 export), made once per test run and architecture (shared by
pytest-xdist's workers through a file lock), and onnxruntime-genai's own greedy generation on
them, the reference `opmlc generate` is compared with."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

# the builder's architectures the tests cover (models/make_genai.py ARCHS)
ARCHS = ("llama", "qwen2", "mistral", "phi3", "gemma", "phi")

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


def shared_root(tmp_path_factory) -> Path:
    """A folder every xdist worker of this run sees (the workers' base temp's parent), else the
    session's own base temp."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def made_once(path: Path, make: Callable[[Path], object]) -> Path:
    """`make(path)` unless an earlier call (any worker's) finished it: a file lock per path and a
    marker written last, so a worker never reads a half-made folder."""
    from filelock import FileLock

    done = path.with_name(path.name + ".done")
    with FileLock(str(path.with_name(path.name + ".lock"))):
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)
            make(path)
            done.write_text("ok")
    return path


class Lazy(dict):
    """arch → item, each made on first use by `make(arch)` (tests that need one architecture do
    not pay for the others)."""

    def __init__(self, make: Callable[[str], object]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, arch: str):
        self[arch] = item = self._make(arch)
        return item


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
