"""The Python API behind the CLI: load inputs, run a build on a backend, report the result.

Backends are looked up by name; each takes the build and the quantized input arrays and
returns the quantized output arrays (plus backend-specific facts such as VM steps). Every
backend must give the interpreter's bits exactly: the output root is how users compare them.

Saturation is reported, never silent: a backend puts {node index: saturated elements} under
`extra["saturated"]` (the interpreter and the native build count them themselves, equally; the
VM cannot count without changing the program, so the interpreter is run alongside it), and
`run` moves it to `RunResult.saturated`, next to the input elements clipped at quantization.
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
from opmlc.ir.fixedpoint import count_saturation, dequantize, encode
from opmlc.ir.interpreter import run_outputs
from opmlc.ir.types import DType, TensorType


@dataclass
class RunResult:
    backend: str
    outputs: list[np.ndarray]  # quantized, as the program computes them
    output_types: list[TensorType]
    extra: dict = field(default_factory=dict)
    saturated: dict[int, int] = field(default_factory=dict)  # {node index: elements saturated}
    clipped_inputs: dict[str, int] = field(default_factory=dict)  # {input name: elements clipped}
    # who counted: "interp", "native", "interp alongside vm"; None: a backend that does not count
    saturation_counted_by: str | None = "interp"

    @property
    def saturation_free(self) -> bool:
        """No node saturated and no input clipped: every value was represented exactly in range."""
        return not self.saturated and not self.clipped_inputs

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

    sat: dict[int, int] = {}
    if node is None:
        return run_outputs(build.graph, inputs, sat), {"saturated": sat}
    return [run_node(build.graph, node, honest_values(build, inputs, upto=node), sat)], {"saturated": sat}


@backend("native")
def _native(build: Build, inputs: list[np.ndarray], node: int | None,
            threads: int | None = None) -> tuple[list[np.ndarray], dict]:
    from opmlc.tasks import honest_values

    # build.native: loaded once per Build (object, mapped weights, buffers); a call copies the
    # inputs in and the outputs out
    values = None if node is None else honest_values(build, inputs, upto=node)
    sat: dict[int, int] = {}
    return build.native.run(inputs, node=node, values=values, saturated=sat, threads=threads), {"saturated": sat}


@backend("vm")
def _vm(build: Build, inputs: list[np.ndarray], node: int | None) -> tuple[list[np.ndarray], dict]:
    from opmlc.ir.interpreter import run_graph, run_node
    from opmlc.tasks import honest_values, initial_state, read_outputs
    from vm.run import run as vm_run

    # the whole graph needs only its inputs and initializers (upto=0); node k needs its operands
    values = honest_values(build, inputs, upto=0 if node is None else node)
    # The MIPS program has no counters (they would change its image): the interpreter, whose
    # bits the VM must reproduce, counts alongside.
    sat: dict[int, int] = {}
    if node is None:
        run_graph(build.graph, inputs, sat)
    else:
        run_node(build.graph, node, values, sat)
    state = initial_state(build, values, node)
    with progress.task("running the VM (steps)") as bar:
        while not state.exited and state.step < MAX_VM_STEPS:  # in chunks, for the bar
            vm_run(state, min(VM_CHUNK, MAX_VM_STEPS - state.step))
            bar.update(completed=state.step)
    if not state.exited:
        raise OpmlcError(f"the VM did not finish the task within {MAX_VM_STEPS} steps")
    if state.exit_code != 0:
        raise OpmlcError(f"the program stopped with exit code {state.exit_code} at pc 0x{state.pc:08x} (a panic)")
    return read_outputs(build, state, node), {"steps": state.step, "final_state_hash": "0x" + state.hash().hex(),
                                              "saturated": sat}


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
    if t.dtype not in (DType.FX32, DType.F32):  # integer or bool inputs (token ids): integer-valued arrays
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
    if t.dtype in (DType.I32, DType.I64) and arr.size:  # never a silent wrap-around at the edge
        info = np.iinfo(t.dtype.numpy)
        if arr.min() < info.min or arr.max() > info.max:
            raise InputError(f"{source}: input {name!r} holds values outside the {t.dtype.value} range "
                             f"[{info.min}, {info.max}]; pass values that fit")
    return arr


def quantize_inputs(build: Build, arrays: list[np.ndarray],
                    clipped: dict[str, int] | None = None) -> list[np.ndarray]:
    """The inputs quantized at the edge; `clipped`, if given, gets {input name: elements that
    fell outside the int32 range of their fractional bits and were clipped}."""
    graph = build.graph
    if len(arrays) != len(graph.inputs):
        names = [r["name"] for r in build.manifest["inputs"]]
        raise InputError(f"the model takes {len(names)} input(s) {names}, got {len(arrays)}")
    out = []
    for k, (rec, arr) in enumerate(zip(build.manifest["inputs"], arrays, strict=True)):
        value, n = quantize_input(build, k, arr)
        out.append(value)
        if clipped is not None and n:
            clipped[rec["name"]] = n
    return out


def quantize_input(build: Build, k: int, arr: np.ndarray) -> tuple[np.ndarray, int]:
    """Graph input k's array checked and quantized at the edge: (value, elements clipped)."""
    rec = build.manifest["inputs"][k]
    t = build.graph.values[rec["value"]].type
    arr = check_input(np.asarray(arr), rec["name"], t)
    # fx32 quantized (clips counted), f32 as float32 bits (tree features), ints cast
    with count_saturation() as c:
        value = encode(arr, t)
    return value, c.n


def inputs_out_of_range(build: Build, arrays: list[np.ndarray]) -> list[str]:
    """One message per float input holding values outside the range the build's bits were chosen
    for (manifest "quantization"/"input_ranges"): past it, tensors may saturate."""
    ranges = build.manifest.get("quantization", {}).get("input_ranges", {})
    out = []
    for rec, arr in zip(build.manifest["inputs"], arrays, strict=False):
        r = ranges.get(rec["name"])
        arr = np.asarray(arr)
        if r is None or rec["dtype"] != DType.FX32.value or not arr.size or not np.issubdtype(arr.dtype, np.number):
            continue
        lo, hi = float(arr.min()), float(arr.max())
        if lo < r[0] or hi > r[1]:
            out.append(f"input {rec['name']!r} holds values in [{lo:.4g}, {hi:.4g}], outside the range "
                       f"[{r[0]:.4g}, {r[1]:.4g}] this build was compiled for: tensors may saturate; "
                       f"compile with --input-range {rec['name']}=LO,HI")
    return out


WEIGHTS_CHECK_PARAMETERS = 1 << 20  # models up to this size get the output error of --weights measured
WEIGHTS_CHECK_SAMPLES = 8


def weights_output_error(build: Build, model: str | Path, seed: int = 0) -> dict | None:
    """The output error `--weights` introduced, against the float model (onnx's reference
    evaluator), on WEIGHTS_CHECK_SAMPLES random inputs uniform in the build's input ranges: the
    largest |Δ| of the dequantized outputs (and relative to the largest |float output|) and, for
    a 2-D first output, how many rows' argmax
    agree. None when it would not be quick (more than WEIGHTS_CHECK_PARAMETERS weights) or the
    model has non-float inputs (token ids: no range to draw from)."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    w = build.manifest.get("weights") or {}
    if w.get("parameters", 0) > WEIGHTS_CHECK_PARAMETERS or any(r["dtype"] != "fx32" for r in build.manifest["inputs"]):
        return None
    rng = np.random.default_rng(seed)
    ranges = build.manifest["quantization"]["input_ranges"]
    try:
        ref = ReferenceEvaluator(onnx.load(str(model)))
    except Exception:  # the float oracle cannot run this model: no figure rather than a failure
        return None
    worst, peak, agree, rows = 0.0, 0.0, 0, 0
    for _ in range(WEIGHTS_CHECK_SAMPLES):
        xs = [rng.uniform(*ranges[r["name"]], size=r["shape"]).astype(np.float32) for r in build.manifest["inputs"]]
        try:
            want = ref.run(None, {r["name"]: x for r, x in zip(build.manifest["inputs"], xs, strict=True)})[0]
        except Exception:
            return None
        got = run(build, xs, "interp").dequantized()[0]
        want = np.asarray(want, np.float64).reshape(got.shape)
        worst = max(worst, float(np.abs(got - want).max(initial=0.0)))
        peak = max(peak, float(np.abs(want).max(initial=0.0)))
        if got.ndim == 2 and got.shape[1] > 1:
            agree += int((got.argmax(1) == want.argmax(1)).sum())
            rows += got.shape[0]
    return {"samples": WEIGHTS_CHECK_SAMPLES, "max_abs": worst, "max_rel": worst / peak if peak else 0.0,
            "argmax_agree": agree, "rows": rows}


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


def run(build: Build, inputs: list[np.ndarray], backend: str = "interp", node: int | None = None,
        threads: int | None = None) -> RunResult:
    """Run a build on float inputs (quantized at the edge) with the named backend.

    With `node`, only that node runs, as its own task, on operands the interpreter computed; the
    result is that node's output. `threads` (native backend only): threads a run uses, default
    every core; any number gives the same bits (docs/DESIGN.md "Native kernels and threads").
    """
    if backend == "native" and node is None:
        return _run_native(build, inputs, threads)
    from opmlc.tasks import check_node

    try:
        fn = BACKENDS[backend]
    except KeyError:
        raise OpmlcError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}") from None
    check_node(build, node)
    if threads is not None:
        from opmlc.backend.native import check_threads

        if backend != "native":
            raise InputError(f"threads applies to the native backend only, not {backend!r}")
        check_threads(threads)
    clipped: dict[str, int] = {}
    q = quantize_inputs(build, inputs, clipped)
    outputs, extra = fn(build, q, node, threads=threads) if threads is not None else fn(build, q, node)
    out_ids = build.graph.outputs if node is None else [build.graph.nodes[node].output]
    types = [build.graph.values[v].type for v in out_ids]
    saturated = extra.pop("saturated", None)
    by = None if saturated is None else {"vm": "interp alongside vm"}.get(backend, backend)
    return RunResult(backend, outputs, types, extra, saturated or {}, clipped, by)


def _run_native(build: Build, inputs: list[np.ndarray], threads: int | None) -> RunResult:
    """`run` of the whole graph on the native backend: the build's session writes each input
    into its buffer (one edge call in the common case, else quantize_input) and runs the task;
    everything that does not depend on the input was prepared when the session was loaded."""
    if threads is not None and not (type(threads) is int and threads > 0):  # a valid count needs no import
        from opmlc.backend.native import check_threads

        threads = check_threads(threads)
    if len(inputs) != len(build.graph.inputs):
        quantize_inputs(build, inputs)  # the one error message for a wrong number of inputs
    session = build.native
    outputs, saturated, clipped = session.run_edge(inputs, lambda k, arr: quantize_input(build, k, arr), threads)
    names = {build.manifest["inputs"][k]["name"]: n for k, n in enumerate(clipped) if n}
    return RunResult("native", outputs, list(session.output_types), {}, saturated, names, "native")


def clipped_constants(build: Build) -> int:
    """Finite constants of the model clipped when the build quantized them (the manifest's
    quantization.clipped_constants, absent when none were)."""
    return int(build.manifest.get("quantization", {}).get("clipped_constants", 0))


def saturation_report(build: Build, result: RunResult) -> list[str]:
    """One line per problem for a person: the nodes that saturated (index, op, name, count of
    elements) and the inputs clipped at quantization; empty when there are none."""
    g = build.graph
    lines = []
    n_const = clipped_constants(build)
    if n_const:
        lines.append(f"this build clipped {n_const} constant element(s) (weights, thresholds) at quantization:"
                     " they lie outside the range of their fractional bits; compile with fewer (--frac-bits)")
    if result.saturated:
        parts = []
        for k, n in sorted(result.saturated.items()):
            node = g.nodes[k]
            name = f" {node.name!r}" if node.name else ""
            parts.append(f"node {k} ({node.op}{name}): {n} of {g.values[node.output].type.numel}")
        lines.append(f"fixed-point saturation in {len(parts)} node(s), elements clamped to the int32 range: "
                     + "; ".join(parts) + " — the result may be wrong; compile with fewer fractional bits"
                     " (--frac-bits) or --calibrate")
    for name, n in sorted(result.clipped_inputs.items()):
        lines.append(f"input {name!r}: {n} element(s) outside the range of its fractional bits, clipped at"
                     " quantization — compile with fewer fractional bits (--frac-bits) or --calibrate")
    if result.saturation_counted_by is None:
        lines.append(f"backend {result.backend!r} does not count saturation")
    return lines
