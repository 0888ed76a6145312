"""The Python API behind the CLI: load inputs, run a build on a backend, report the result.

Backends are looked up by name; each takes the build and the quantized input arrays and
returns the quantized output arrays (plus backend-specific facts such as VM steps). Every
backend must give the interpreter's bits exactly: the output root is how users compare them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from opmlc import progress
from opmlc.artifact import Build
from opmlc.commit import tensor_root
from opmlc.errors import InputError, OpmlcError
from opmlc.ir.fixedpoint import dequantize, quantize
from opmlc.ir.interpreter import run_outputs
from opmlc.ir.types import DType, TensorType


@dataclass
class RunResult:
    backend: str
    outputs: list[np.ndarray]  # quantized, as the program computes them
    output_types: list[TensorType]
    extra: dict = field(default_factory=dict)

    @property
    def output_roots(self) -> list[bytes]:
        return [tensor_root(a, t) for a, t in zip(self.outputs, self.output_types, strict=True)]

    def dequantized(self) -> list[np.ndarray]:
        return [
            dequantize(a, t.frac) if t.dtype is DType.FX32 else np.asarray(a)
            for a, t in zip(self.outputs, self.output_types, strict=True)
        ]


BackendFn = Callable[[Build, list[np.ndarray], int | None], tuple[list[np.ndarray], dict]]
BACKENDS: dict[str, BackendFn] = {}


def backend(name: str) -> Callable[[BackendFn], BackendFn]:
    def register(fn: BackendFn) -> BackendFn:
        BACKENDS[name] = fn
        return fn

    return register


@backend("interp")
def _interp(build: Build, inputs: list[np.ndarray], node: int | None) -> tuple[list[np.ndarray], dict]:
    from opmlc.ir.interpreter import run_node
    from opmlc.tasks import honest_values

    if node is None:
        return run_outputs(build.graph, inputs), {}
    return [run_node(build.graph, node, honest_values(build, inputs, upto=node))], {}


@backend("native")
def _native(build: Build, inputs: list[np.ndarray], node: int | None) -> tuple[list[np.ndarray], dict]:
    from opmlc.backend.native import native_program, run_native
    from opmlc.tasks import honest_values

    graph = build.graph
    values = None if node is None else honest_values(build, inputs, upto=node)
    bufs = run_native(native_program(graph), graph, inputs, node=node, values=values)
    outs = graph.outputs if node is None else [graph.nodes[node].output]
    return [bufs[v] for v in outs], {}


@backend("vm")
def _vm(build: Build, inputs: list[np.ndarray], node: int | None) -> tuple[list[np.ndarray], dict]:
    from opmlc.tasks import honest_values, initial_state, read_outputs
    from vm.run import run as vm_run

    # the whole graph needs only its inputs and initializers (upto=0); node k needs its operands
    values = honest_values(build, inputs, upto=0 if node is None else node)
    state = initial_state(build, values, node)
    with progress.task("running the VM (steps)") as bar:
        while not state.exited and state.step < MAX_VM_STEPS:  # in chunks, for the bar
            vm_run(state, min(VM_CHUNK, MAX_VM_STEPS - state.step))
            bar.update(completed=state.step)
    if not state.exited:
        raise OpmlcError(f"the VM did not finish the task within {MAX_VM_STEPS} steps")
    if state.exit_code != 0:
        raise OpmlcError(f"the program stopped with exit code {state.exit_code} at pc 0x{state.pc:08x} (a panic)")
    return read_outputs(build, state, node), {"steps": state.step, "final_state_hash": "0x" + state.hash().hex()}


MAX_VM_STEPS = 1 << 40
VM_CHUNK = 1 << 20  # steps between progress updates


def load_input(path: str | Path, name: str, t: TensorType) -> np.ndarray:
    """Read a .npy input for graph input `name` and check it against the build's type."""
    return check_input(_read_npy(path, f"a .npy file for input {name!r}"), name, t, str(path))


def _read_npy(path: str | Path, wanted: str) -> np.ndarray:
    path = Path(path)
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; pass {wanted}") from None
    except (ValueError, OSError) as exc:
        raise InputError(f"{path}: not a .npy array ({str(exc).splitlines()[0]}); save it with numpy.save") from None


def load_samples(path: str | Path) -> np.ndarray:
    """Read a .npy of calibration samples (a float array whose first axis indexes the samples)."""
    arr = _read_npy(path, "a .npy of sample inputs for --calibrate")
    if not np.issubdtype(arr.dtype, np.floating) or arr.ndim < 1 or not np.all(np.isfinite(arr)):
        raise InputError(f"{path}: calibration samples must be a finite float array [S, …]")
    return arr


def check_input(arr: np.ndarray, name: str, t: TensorType, source: str = "input") -> np.ndarray:
    if t.dtype is not DType.FX32:  # integer or bool inputs (token ids): integer-valued arrays
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_
                or (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)))):
            raise InputError(f"{source}: input {name!r} must hold integers ({t.dtype.value}), got dtype {arr.dtype}")
    elif not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{source}: input {name!r} must be a float array, got dtype {arr.dtype}")
    shape = tuple(arr.shape)
    if shape != t.shape:
        lead = len(t.shape) - len(shape)  # accept the tensor without its leading unit (batch) dims
        if lead > 0 and t.shape[lead:] == shape and all(d == 1 for d in t.shape[:lead]):
            arr = arr.reshape(t.shape)
        else:
            raise InputError(f"{source}: input {name!r} must have shape {list(t.shape)}, got {list(shape)}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{source}: input {name!r} holds inf or NaN")
    return arr


def quantize_inputs(build: Build, arrays: list[np.ndarray]) -> list[np.ndarray]:
    graph = build.graph
    if len(arrays) != len(graph.inputs):
        names = [r["name"] for r in build.manifest["inputs"]]
        raise InputError(f"the model takes {len(names)} input(s) {names}, got {len(arrays)}")
    out = []
    for rec, arr in zip(build.manifest["inputs"], arrays, strict=True):
        t = graph.values[rec["value"]].type
        arr = check_input(np.asarray(arr), rec["name"], t)
        out.append(quantize(arr, t.frac) if t.dtype is DType.FX32 else arr.astype(t.dtype.numpy))
    return out


PAD_BYTE = 0x20  # a space


def encode_text(text: str | bytes, t: TensorType) -> np.ndarray:
    """Token ids for a byte-level decoder whose input has type `t` ([1, T] or [T], integer): the
    UTF-8 bytes of `text`, the last T of them if longer, right-aligned after spaces (PAD_BYTE) if
    shorter, so that the last position always holds the last byte and predicts the next one."""
    if t.dtype not in (DType.I32, DType.I64) or not t.shape or any(d != 1 for d in t.shape[:-1]):
        raise InputError(f"--tokens needs a model whose input is integer token ids [1, T], not {t}")
    data = text.encode() if isinstance(text, str) else bytes(text)
    if not data:
        raise InputError("--tokens: the text is empty")
    n = t.shape[-1]
    data = data[-n:].rjust(n, bytes([PAD_BYTE]))
    return np.frombuffer(data, dtype=np.uint8).astype(t.dtype.numpy).reshape(t.shape)


def run(build: Build, inputs: list[np.ndarray], backend: str = "interp", node: int | None = None) -> RunResult:
    """Run a build on float inputs (quantized at the edge) with the named backend.

    With `node`, only that node runs, as its own task, on operands the interpreter computed; the
    result is that node's output.
    """
    from opmlc.tasks import check_node

    try:
        fn = BACKENDS[backend]
    except KeyError:
        raise OpmlcError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}") from None
    check_node(build, node)
    q = quantize_inputs(build, inputs)
    outputs, extra = fn(build, q, node)
    out_ids = build.graph.outputs if node is None else [build.graph.nodes[node].output]
    types = [build.graph.values[v].type for v in out_ids]
    return RunResult(backend, outputs, types, extra)
