"""Phase 1 from the native build: what each party of a dispute computes and holds, native trace
against the interpreter's.

Run: `python bench/phase1.py [--shape tiny|27.5M] [--weights int8|int4] [--lie-op sigmoid]
[--lie-node K] [--workdir DIR]`. It compiles the model (tiny: models/tiny_llama.onnx; 27.5M: the
LLaMA shape of bench/native_start.py, d 512, 8 layers, MLP 1536, made with torch in the work
directory and reused), picks the lying node (`--lie-node`, else the first node whose op or
function is `--lie-op`), then runs each party's whole off-chain work in a fresh process, once
with the native trace (the default: opmlc/dispute/native_trace.py) and once with the
interpreter's (engine "interp", the reference: every value held):

- server: `Build.load`, its trace with the lie at node K (every value root), then the hand-off
  at node K (its one VM task: `Claimant.start_node`);
- challenger: `Build.load`, its own honest trace, then node K's VM task (`Verifier.node_run`).

`--build DIR` uses an existing build; `--dispute` then plays `opmlc demo`'s game on it (embedded
chain, the server lying at node K, all three parties in one process) and prints its wall time,
rounds per phase, gas, VM steps and that process's peak RSS.

For each party it prints the trace's wall time (first, with the program's load and the hashing
kernels' JIT, then warm), the VM steps and time of its one task, the values'
peak live bytes (native), and the process's peak RSS (VmHWM) against the weights' bytes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def peak_rss_mib() -> float:
    line = next(x for x in open("/proc/self/status") if x.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def child(build_dir: str, role: str, node: int, engine: str, part: int | None = None, step: int = 0,
          warm: bool = True, element: int = 0) -> None:
    """One party's off-chain work in this process: its trace (the server's with the lie at node
    `node`, element `element`), then its one VM task, node `node` or its part `part`: the
    server's hand-off (startNode / startPart, which also computes the split node's part roots),
    the challenger's witness of step `step`. Prints a JSON line of its figures."""
    import numpy as np

    from opmlc.api import quantize_inputs
    from opmlc.artifact import Build
    from opmlc.dispute.demo import default_input
    from opmlc.dispute.graph_trace import Tamper
    from opmlc.dispute.native_trace import party_roots, tracer
    from opmlc.dispute.roles import Claimant, Verifier

    t0 = time.perf_counter()
    build = Build.load(build_dir)
    q = quantize_inputs(build, default_input(build))
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    lie = Tamper(node, element=element)
    if role == "server":
        side = Claimant(build, q, lie, engine=engine)
    else:
        side = Verifier(build, q, engine=engine)
    trace_s = time.perf_counter() - t0
    rss_trace = peak_rss_mib()
    warm_s = None
    if warm:
        t0 = time.perf_counter()  # again, warm: the program loaded, the hashing kernels built
        party_roots(build, q, lie if role == "server" else None, engine)
        warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if role == "server":
        side.start_node(node) if part is None else side.start_part(node, part)
    else:
        side.node_run(node, part).witness(step)
    vm_s = time.perf_counter() - t0
    weights = sum(a.nbytes for a in build.graph.initializers.values())
    print(json.dumps({"role": role, "engine": engine, "load_s": load_s, "trace_s": trace_s, "warm_s": warm_s, "vm_s": vm_s,
                      "vm_steps": side.vm_steps, "rss_after_trace_mib": rss_trace, "peak_rss_mib": peak_rss_mib(),
                      "weights_mib": weights / 2**20,
                      "peak_live_mib": tracer(build).peak_live_bytes / 2**20 if engine == "native" else None,
                      "output_root": side.trace.output_root.hex()}, default=float))
    del np


def dispute(build_dir: str, node: int, part: int | None = None) -> None:
    """`opmlc demo`'s game on an existing build (embedded chain, the server lying at `node`, in
    its part `part` if given)."""
    from opmlc.artifact import Build
    from opmlc.dispute.demo import run_demo

    t0 = time.perf_counter()
    build = Build.load(build_dir)
    load_s = time.perf_counter() - t0
    r = run_demo(build=build, lie_node=node, lie_part=part, say=lambda m: print(f"  {time.perf_counter() - t0:7.1f} s  {m}",
                                                                      file=sys.stderr, flush=True))
    r.update(load_s=load_s, peak_rss_mib=peak_rss_mib())
    print(json.dumps(r, default=str))


def make_27m(work: Path) -> Path:
    path = work / "llama27m.onnx"
    if not path.exists():
        from bench.native_start import make_model

        make_model(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=("tiny", "27.5M"), default="tiny")
    ap.add_argument("--weights", choices=("int8", "int4"), default=None)
    ap.add_argument("--lie-op", default="sigmoid", help="the lie's node: the first of this op or function")
    ap.add_argument("--lie-node", type=int, default=None)
    ap.add_argument("--engines", default="native,interp", help="which traces to run (comma-separated)")
    ap.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "opmlc" / "phase1")
    ap.add_argument("--build", type=Path, default=None, help="an existing build (skip the compile)")
    ap.add_argument("--dispute", action="store_true",
                    help="also play the game on the embedded chain (opmlc demo's, on this build)")
    ap.add_argument("--dispute-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child", nargs=4, metavar=("BUILD", "ROLE", "NODE", "ENGINE"), help=argparse.SUPPRESS)
    # a child's task: the part of a split node, the challenger's proven step, no warm trace
    ap.add_argument("--part", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--element", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--step", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--no-warm", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        build_dir, role, node, engine = a.child
        if role == "dispute":
            dispute(build_dir, int(node), a.part)
        else:
            child(build_dir, role, int(node), engine, a.part, a.step, not a.no_warm, a.element)
        return
    from opmlc.artifact import Build, compile_model

    a.workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if a.build is not None:
        out = a.build
        build = Build.load(out)
        print(f"{out}: {len(build.graph.nodes)} nodes")
    else:
        model = ROOT / "models" / "tiny_llama.onnx" if a.shape == "tiny" else make_27m(a.workdir)
        out = a.workdir / f"build-{a.shape}-{a.weights or 'fx32'}"
        compile_model(model, out, weights=a.weights)
        build = Build.load(out)  # checks the files once (native/verified.json): the children do not hash again
        print(f"{model.name} ({a.shape}, weights {a.weights or 'fx32'}): compiled in "
              f"{time.perf_counter() - t0:.1f} s, {len(build.graph.nodes)} nodes")
    g = build.graph
    if a.lie_node is not None:
        node = a.lie_node
    else:
        node = next(k for k, n in enumerate(g.nodes) if a.lie_op in (n.op, n.attrs.get("fn"), n.attrs.get("kind")))
    n = g.nodes[node]
    print(f"lie at node {node}: {n.op} {n.attrs.get('fn', n.attrs.get('kind', ''))} -> {g.values[n.output].type.shape}")
    rows = []
    engines = [] if a.dispute_only else a.engines.split(",")
    for engine in engines:
        for role in ("server", "challenger"):
            p = subprocess.run([sys.executable, __file__, "--child", str(out), role, str(node), engine],
                               capture_output=True, text=True, cwd=ROOT)
            if p.returncode:
                raise SystemExit(p.stderr[-3000:])
            rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
    print(f"{'party':11} {'engine':7} {'trace s':>8} {'warm s':>7} {'VM steps':>11} {'VM s':>7} {'live MiB':>9} "
          f"{'RSS trace':>10} {'peak RSS':>9} {'weights':>8}")
    for r in rows:
        live = f"{r['peak_live_mib']:.2f}" if r["peak_live_mib"] is not None else "(all)"
        print(f"{r['role']:11} {r['engine']:7} {r['trace_s']:8.3f} {r['warm_s']:7.3f} {r['vm_steps']:11,} {r['vm_s']:7.1f} "
              f"{live:>9} {r['rss_after_trace_mib']:8.0f} M {r['peak_rss_mib']:7.0f} M {r['weights_mib']:6.0f} M")
    for role in ("server", "challenger") if len(engines) == 2 else ():
        nat, itp = (next(r for r in rows if r["role"] == role and r["engine"] == e) for e in ("native", "interp"))
        assert nat["output_root"] == itp["output_root"], f"{role}: the engines disagree"
        print(f"{role}: warm trace native {nat['warm_s']:.3f} s vs interpreter {itp['warm_s']:.3f} s "
              f"(x{itp['warm_s'] / max(nat['warm_s'], 1e-9):.1f}); first {nat['trace_s']:.3f} vs {itp['trace_s']:.3f} s")
    if a.dispute or a.dispute_only:
        p = subprocess.run([sys.executable, __file__, "--child", str(out), "dispute", str(node), "native"],
                           stdout=subprocess.PIPE, text=True, cwd=ROOT)
        if p.returncode:
            raise SystemExit("the dispute failed")
        r = json.loads(p.stdout.strip().splitlines()[-1])
        print(f"dispute on the embedded chain, server lying at node {node}: winner {r['winner']} ({r.get('reason')}), "
              f"wall {r['seconds']} s (+ {r['load_s']:.1f} s Build.load), rounds phase 1 {r['rounds_phase1']}, "
              f"phase 2 {r['rounds_phase2']}, gas {r['gas_total']:,}, challenger's VM steps {r['vm_steps']:,}, "
              f"peak RSS of the one process holding all three parties {r['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
