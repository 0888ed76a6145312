"""Run one IR graph on every backend: interpreter, native build, MIPS ELF in the VM and in
unicorn; used by the kernel and model tests to compare the bits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from opmlc.backend.native import NativeSession, native_program, run_native
from opmlc.backend.program import Program, build_program
from opmlc.commit import from_bytes, padded_bytes, tensor_root
from opmlc.ir.graph import Graph
from opmlc.ir.interpreter import run_graph
from vm.loader import load_task
from vm.run import run as vm_run


@dataclass
class Outcome:
    values: list[np.ndarray]  # interpreter: every value
    native: list[np.ndarray]  # native: every value
    saturated: dict[int, int]  # {node: saturated elements}, the same for both (checked here)


def interp_and_native(graph: Graph, inputs: list[np.ndarray]) -> Outcome:
    """Both runs; every kernel test thereby also checks that the native build counts exactly
    the interpreter's saturated elements, node by node."""
    sat_interp: dict[int, int] = {}
    sat_native: dict[int, int] = {}
    values = run_graph(graph, inputs, saturated=sat_interp)
    program = native_program(graph)
    assert program.counts_saturation
    native = run_native(program, graph, inputs, saturated=sat_native)
    assert sat_native == sat_interp, f"saturation counts: native {sat_native}, interpreter {sat_interp}"
    return Outcome(values, native, sat_interp)


def task_inputs(graph: Graph, program: Program, values: list[np.ndarray], node: int | None):
    """(addr, size, root) of each input of the task, and the store holding their bytes."""
    ids = list(graph.inputs) + list(graph.initializers) if node is None else list(dict.fromkeys(graph.nodes[node].inputs))
    store, spliced = {}, []
    m = program.task_map(node)
    for v in ids:
        t = graph.values[v].type
        store[tensor_root(values[v], t)] = padded_bytes(values[v], t)
        r = m.region(v)
        spliced.append((r.addr, r.size, tensor_root(values[v], t)))
    return spliced, store


def run_vm(graph: Graph, program: Program, values: list[np.ndarray], node: int | None = None,
           max_steps: int = 50_000_000):
    """Run the whole graph (node None) or one node in the VM; returns (state, outputs)."""
    spliced, store = task_inputs(graph, program, values, node)
    m = program.task_map(node)
    state = load_task(program.elf, m.node, spliced, store, m.table())
    vm_run(state, max_steps)
    outs = graph.outputs if node is None else [graph.nodes[node].output]
    arrays = [from_bytes(state.memory.read_region(m.region(v).addr, m.region(v).size),
                         graph.values[v].type) for v in outs]
    return state, arrays


def run_unicorn(graph: Graph, program: Program, values: list[np.ndarray], node: int | None = None):
    from toolchain.unicorn_ref import run_elf

    ids = list(graph.inputs) + list(graph.initializers) if node is None else list(dict.fromkeys(graph.nodes[node].inputs))
    m = program.task_map(node)
    ins = [(m.region(v).addr, padded_bytes(values[v], graph.values[v].type)) for v in ids]
    outs = graph.outputs if node is None else [graph.nodes[node].output]
    table = [m.table().get(v, 0) for v in range(len(graph.values))]
    res = run_elf(program.elf, m.node, ins, [(m.region(v).addr, m.region(v).size) for v in outs], table=table)
    return res, [from_bytes(b, graph.values[v].type) for b, v in zip(res.outputs, outs, strict=True)]


__all__ = ["Outcome", "build_program", "interp_and_native", "run_unicorn", "run_vm"]


def const_matmul_graph(name: str, x_shape, w: np.ndarray, trans: bool = True, bias: np.ndarray | None = None,
                       fracs: tuple[int, int, int] = (20, 20, 16)) -> Graph:
    """x (a graph input) @ a constant weight w (transposed when `trans`), with an optional constant
    bias: the dense layer the host matmul kernels with derived weight planes take."""
    from opmlc.ir.graph import GraphBuilder
    from opmlc.ir.types import DType, TensorType

    def fx(shape, frac):
        return TensorType(DType.FX32, tuple(shape), frac)

    b = GraphBuilder(name)
    x = b.add_input("x", fx(x_shape, fracs[0]))
    refs = [x, b.add_initializer("w", w, fx(w.shape, fracs[1]))]
    if bias is not None:
        refs.append(b.add_initializer("c", bias, fx(bias.shape, 18)))
    b.mark_output(b.add_node("matmul", refs, {"frac": fracs[2], "transpose_b": trans}, "y"))
    return b.build()


def int_array(rng: np.random.Generator, bits: int, shape) -> np.ndarray:
    """int32 values uniform in [-2^bits, 2^bits]."""
    return rng.integers(-(1 << bits), 1 << bits, size=shape, endpoint=True).astype(np.int32)


def jit_host_function(module, name: str):
    """(engine, address) of `name` in an llvmlite ir.Module compiled for this host as the native
    build compiles its modules (keep the engine alive while calling the address)."""
    import llvmlite.binding as llvm

    from opmlc.backend import target

    tm = target.host_target_machine()
    mod = target.parse_for_target(str(module), tm)
    target.optimize(mod, tm)
    engine = llvm.create_mcjit_compiler(mod, tm)
    engine.finalize_object()
    return engine, engine.get_function_address(name)


def threads_equal_interpreter(graph: Graph, inputs: list[np.ndarray], threads=(1, 2)) -> tuple[np.ndarray, dict[int, int]]:
    """The interpreter's output and saturation counts (the one definition), asserted equal to
    one NativeSession's at each thread count in turn; returns them for the caller's own checks."""
    want_sat: dict[int, int] = {}
    want = run_graph(graph, inputs, saturated=want_sat)[graph.outputs[0]]
    session = NativeSession(native_program(graph), graph, threads=1)
    for t in threads:
        sat: dict[int, int] = {}
        (got,) = session.run(inputs, saturated=sat, threads=t)
        assert np.array_equal(got, want), f"{t} threads"
        assert sat == want_sat, f"{t} threads: counts {sat} vs {want_sat}"
    return want, want_sat
