"""Text generation over a compiled decoding step (`opmlc generate`, `opmlc.generate`).

Greedy decoding, one token per step: step t reads token t of the sequence (the prompt's, then
the ones generated), the attention mask of positions 0..t and the key/value cache the previous
step wrote (zeros before the first), and outputs the logits, the present cache and the greedy
next token (the build's NEXT_TOKEN output). The prompt is read token by token with the same
step graph, so one build and one kind of task cover the whole generation; the cache travels
between steps as the quantized integers the step computed (the present cache has the type of
the past one, rules/genai.py), never through floats.

Backends: "native" (the build's native code), "interp" (the IR interpreter, the definition) and
"vm" (each step as a whole-graph task of the MIPS VM): bit-identical by construction and test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from opmlc.artifact import Build
from opmlc.errors import InputError, OpmlcError
from opmlc.genai.config import NEXT_TOKEN

BACKENDS = ("native", "interp", "vm")


@dataclass
class StepIO:
    """One decoding step's quantized inputs (in the build's input order) and its outputs."""

    token: int
    position: int
    inputs: list[np.ndarray]
    outputs: list[np.ndarray] = field(default_factory=list)

    @property
    def next_token(self) -> int:
        return int(np.asarray(self.outputs[-1]).reshape(-1)[0])


@dataclass
class Generation:
    prompt_ids: list[int]
    generated_ids: list[int]
    steps: list[StepIO]
    text: str = ""
    stopped: str = "max_new_tokens"  # or "eos": it ended at an end-of-sequence token

    def to_json(self) -> dict:
        return {"prompt_ids": self.prompt_ids, "generated_ids": self.generated_ids, "text": self.text,
                "steps": self.n_steps, "stopped": self.stopped}

    @property
    def n_steps(self) -> int:
        """Decoding steps run: every prompt token, then every generated token but the last."""
        return len(self.prompt_ids) + len(self.generated_ids) - 1


def genai_record(build: Build) -> dict:
    rec = build.manifest.get("genai")
    if not rec:
        raise OpmlcError(f"{build.directory}: not a build of an onnxruntime-genai model (no 'genai' in its manifest); "
                         "compile the model's folder (genai_config.json, model.onnx)")
    return rec


class StepRunner:
    """Runs the build's decoding step on quantized inputs with one backend."""

    def __init__(self, build: Build, backend: str = "native", threads: int | None = None) -> None:
        if backend not in BACKENDS:
            raise OpmlcError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        if threads is not None:
            from opmlc.backend.native import check_threads

            if backend != "native":
                raise InputError(f"--threads applies to the native backend only, not {backend!r}")
            check_threads(threads)
        self.build, self.backend, self.threads = build, backend, threads
        self.rec = genai_record(build)
        g = build.graph
        names = [r["name"] for r in build.manifest["inputs"]]
        self.names = names
        self.out_names = [r["name"] for r in build.manifest["outputs"]]
        if self.out_names[-1] != NEXT_TOKEN:
            raise OpmlcError(f"{build.directory}: the build has no {NEXT_TOKEN!r} output; compile the model again")
        self.types = [g.values[v].type for v in g.inputs]
        self.context = int(self.rec["context"])

    def first_inputs(self, token: int) -> list[np.ndarray]:
        return self.inputs_for(token, 0, None)

    def inputs_for(self, token: int, position: int, prev: StepIO | None) -> list[np.ndarray]:
        """Step `position`'s inputs: the token, the mask of positions 0..position, and the cache
        from the previous step's outputs (zeros at position 0)."""
        rec = self.rec
        out = []
        for name, t in zip(self.names, self.types, strict=True):
            if name == rec["input_ids"]:
                out.append(np.full(t.shape, token, dtype=t.dtype.numpy))
            elif name == rec["attention_mask"]:
                mask = np.zeros(t.shape, dtype=t.dtype.numpy)
                mask[..., : position + 1] = 1
                out.append(mask)
            elif name in rec["cache_inputs"]:
                if prev is None:
                    out.append(np.zeros(t.shape, dtype=t.dtype.numpy))
                else:
                    k = rec["cache_inputs"].index(name)
                    out.append(prev.outputs[self.out_names.index(rec["cache_outputs"][k])])
            else:
                raise OpmlcError(f"{self.build.directory}: input {name!r} is neither the tokens, the mask nor the cache")
        return out

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        g = self.build.graph
        if self.backend == "interp":
            from opmlc.ir.interpreter import run_outputs

            return run_outputs(g, inputs, {})
        if self.backend == "native":  # the build's native session: weights mapped and packed once
            return self.build.native.run(inputs, threads=self.threads)
        from opmlc.tasks import initial_state, read_outputs
        from vm.run import run as vm_run

        values: list = [None] * len(g.values)
        for v, a in zip(g.inputs, inputs, strict=True):
            values[v] = a
        for v, a in g.initializers.items():
            values[v] = a
        state = initial_state(self.build, values, None)
        while not state.exited:
            vm_run(state, 1 << 22)
        if state.exit_code != 0:
            raise OpmlcError(f"the program stopped with exit code {state.exit_code} (a panic)")
        return read_outputs(self.build, state, None)


def check_lengths(n_prompt: int, max_new_tokens: int, context: int) -> None:
    if n_prompt < 1:
        raise InputError("--prompt: the text gives no tokens")
    if max_new_tokens < 1:
        raise InputError(f"--max-new-tokens {max_new_tokens}: must be at least 1")
    if n_prompt + max_new_tokens - 1 > context:
        raise InputError(f"the prompt's {n_prompt} tokens and {max_new_tokens} new ones need "
                         f"{n_prompt + max_new_tokens - 1} positions; the build has {context} "
                         f"(compile with a larger --max-context, or ask for fewer tokens)")


def generate_ids(build: Build, prompt_ids: list[int], max_new_tokens: int, backend: str = "native",
                 stop_at_eos: bool = True, runner: StepRunner | None = None,
                 threads: int | None = None) -> Iterator[tuple[int, StepIO]]:
    """Greedy generation; yields (token id, the step that chose it) as each is made. Steps that
    only read the prompt are yielded as (-1, step). `threads`: the native backend's (default
    every core; the same bits on any number)."""
    runner = runner or StepRunner(build, backend, threads)
    check_lengths(len(prompt_ids), max_new_tokens, runner.context)
    vocab = int(runner.rec["vocab_size"])
    if any(not 0 <= t < vocab for t in prompt_ids):
        raise InputError(f"prompt token ids must be in 0..{vocab - 1}")
    eos = set(runner.rec.get("eos_token_ids", []))
    seq = list(prompt_ids)
    prev = None
    made = 0
    position = 0
    while True:
        step = StepIO(seq[position], position, runner.inputs_for(seq[position], position, prev))
        step.outputs = runner.run(step.inputs)
        prev = step
        if position < len(prompt_ids) - 1:
            yield -1, step
        else:
            tok = step.next_token
            seq.append(tok)
            made += 1
            yield tok, step
            if made == max_new_tokens or (stop_at_eos and tok in eos):
                return
        position += 1


def generate(build: Build, prompt: str | list[int], max_new_tokens: int = 16, backend: str = "native",
             on_text: Callable[[str], None] | None = None, stop_at_eos: bool = True,
             keep_steps: bool = False, threads: int | None = None) -> Generation:
    """Generate greedily from a prompt (text, tokenized with the model folder's tokenizer, or
    token ids); `on_text` receives the text as it is produced."""
    from opmlc.genai.tokenizer import load_tokenizer

    rec = genai_record(build)
    tok = None
    if isinstance(prompt, str):
        tok = load_tokenizer(rec["folder"])
        ids = tok.encode(prompt)
    else:
        ids = [int(t) for t in prompt]
        if on_text is not None:
            tok = load_tokenizer(rec["folder"])
    out: list[int] = []
    steps: list[StepIO] = []
    shown = ""
    for t, step in generate_ids(build, ids, max_new_tokens, backend, stop_at_eos, threads=threads):
        if keep_steps:
            steps.append(step)
        if t < 0:
            continue
        out.append(t)
        if on_text is not None and tok is not None:
            text = tok.decode(out)
            if not text.endswith("\ufffd"):  # a multi-byte character still incomplete
                on_text(text[len(shown):])
                shown = text
    text = tok.decode(out) if tok is not None else ""
    if on_text is not None and text != shown and text.startswith(shown):
        on_text(text[len(shown):])
    eos = set(rec.get("eos_token_ids", []))
    return Generation(ids, out, steps, text, "eos" if stop_at_eos and out and out[-1] in eos else "max_new_tokens")
