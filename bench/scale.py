"""Scale: a LLaMA-architecture decoder of TinyLlama-1.1B's shape, compiled from its float32
external-data ONNX with `--weights int8` and `--weights int4`, run natively, against onnxruntime.

Run: `python bench/scale.py [--workdir DIR] [--weights int8,int4] [--layers N --hidden D ...]`.
The model (models/make_llama.py: hidden 2048, 22 layers, 32 heads, 4 key/value heads, MLP 5632,
vocab 32000, context 32; random weights, torch seed 0) is made in the work directory (default
~/.cache/opmlc/scale, outside the repository) and reused while its shape matches; so is the
MatMulNBits model that onnxruntime's `MatMulNBitsQuantizer` makes from it (4 bits, blocks of
32, symmetric; needs onnx-ir). For each weight format it prints

- `opmlc compile MODEL --weights F` in a fresh process: wall time (target < 15 min) and peak RSS
  (target < 8 GB), the build's size on disk;
- a native forward pass over 32 tokens in a fresh process (`opmlc.run(build, [tokens],
  backend="native")`, seeded random token ids): the time to load the build, the first call and
  the median of the next calls, and the process's peak RSS (target < weight bytes + 1 GB);
- the error of its logits against onnxruntime float32 on the float model: max |Δ|, ‖Δ‖ / ‖float‖
  and the positions whose argmax agrees;

and onnxruntime's own figures on the same tokens: float32 on the float model and the
MatMulNBits model (its error against float too), CPUExecutionProvider with the same thread
count (`--threads`, default 1: opmlc's native build runs on one thread). Peak RSS is the
process's VmHWM (ru_maxrss of a child inherits this process's). Smaller shapes (`--layers 2`)
try the whole pipeline in minutes; the full shape takes about 20 minutes on two shared cores
(docs/DESIGN.md "Large models" has the figures). `--compile-arg=--frac-bits --compile-arg=16`
gives the figures' builds of fixed bits; the default (analysed) build bounds the attention
scores by the L2 norms of q and k (docs/DESIGN.md "Quantization, as built").

`--dispute [--weights int8|int4] [--layers N]` plays `opmlc demo`'s game on the embedded chain
instead (docs/DESIGN.md "Disputes at 1.1B"): it reuses the build in the work directory
(`build_FORMAT`, or `--build DIR`) when it loads, else compiles it (timed, recorded in
BUILD.compile.json; `--fresh` compiles again), then runs two disputes in which the server lies
in the last decoder layer (`--lie-layer`): in its largest matmul (the MLP's gate projection),
and in its first `--nonlinear` node (default the SwiGLU sigmoid; `softmax`, `norm` too), each in
the part of the split node holding the output's middle element. Each game runs in a fresh
process (bench/phase1.py's dispute child: all three parties and the chain in one process); then
each party's own work (its native trace and its one VM task, that part) is run again alone in a
fresh process for its peak RSS. Per dispute it prints the winner, the game's wall time, rounds
per phase (nodes / parts / steps), gas, each party's VM steps and peak RSS, and the build's step
budget; `--layers 2` (a 2-layer model of the same width) takes a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.make_llama import LlamaShape, shape_of, write_model  # noqa: E402

NBITS_MODEL = "model_q4.onnx"  # MatMulNBitsQuantizer's output, beside the float model
NBITS_BLOCK = 32

# Runs a module or this file's --forward mode, then prints the process's peak RSS (VmHWM)
WRAP = ("import atexit, runpy, sys\n"
        "atexit.register(lambda: print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')),"
        " file=sys.stderr))\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__') if sys.argv[0].endswith('.py') else "
        "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n")


def timed(target: str, args: list[str], log: Path) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (GiB) and output of `python -m target args` (or of a script path)
    in a fresh process; its output also goes to `log`."""
    cmd = [sys.executable, "-c", WRAP, target, *args]
    with open(log, "w+") as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, _ = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        out.seek(0)
        text = out.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{target} {' '.join(args)} failed (log {log}):\n{text[-3000:]}")
    hwm = [line for line in text.splitlines() if line.startswith("VmHWM")]
    return wall, int(hwm[-1].split()[1]) / 2**20 if hwm else float("nan"), text


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def ensure_model(shape: LlamaShape, work: Path) -> Path:
    """The float model in `work`, made unless one of this shape is there."""
    path = work / "model.onnx"
    if path.is_file() and (work / "model.onnx.data").is_file() and shape_of(path) == shape:
        print(f"model: reusing {path}")
        return path
    for stale in (path, work / "model.onnx.data", work / NBITS_MODEL, work / (NBITS_MODEL + ".data")):
        stale.unlink(missing_ok=True)
    return write_model(shape, work)


def ensure_nbits(model: Path) -> Path:
    """onnxruntime's MatMulNBits model of `model` (4 bits, blocks of 32, symmetric), made once."""
    out = model.parent / NBITS_MODEL
    if out.is_file() and out.stat().st_mtime >= model.stat().st_mtime:
        return out
    import logging

    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)  # a line per node
    t0 = time.perf_counter()
    q = MatMulNBitsQuantizer(str(model), bits=4, block_size=NBITS_BLOCK, is_symmetric=True)
    q.process()
    q.model.save_model_to_file(str(out), use_external_data_format=True)
    print(f"MatMulNBits model: {out} in {time.perf_counter() - t0:.0f} s")
    return out


def ort_run(model: Path, tokens: np.ndarray, threads: int, repeat: int) -> tuple[np.ndarray, float]:
    """onnxruntime's logits and median seconds per forward pass (the first call excluded)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    out = sess.run(None, {"tokens": tokens})[0]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        sess.run(None, {"tokens": tokens})
        times.append(time.perf_counter() - t0)
    return out, float(np.median(times))


def forward(build_dir: str, tokens_path: str, out_path: str, repeat: int) -> None:
    """The --forward mode (a fresh process): load the build, run it natively, time it."""
    import opmlc

    tokens = np.load(tokens_path)
    t0 = time.perf_counter()
    build = opmlc.Build.load(build_dir)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = opmlc.run(build, [tokens], backend="native")
    first_s = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        opmlc.run(build, [tokens], backend="native")
        times.append(time.perf_counter() - t0)
    np.save(out_path, result.dequantized()[0])
    print("FORWARD " + json.dumps({"load_s": load_s, "first_s": first_s,
                                   "median_s": float(np.median(times)) if times else first_s,
                                   "saturated": sum(result.saturated.values())}))


def ensure_build(model: Path, build_dir: Path, fmt: str, compile_args: list[str], fresh: bool) -> dict:
    """The build in `build_dir`, compiled (`opmlc compile` in a fresh process, timed) unless one
    that loads is there; returns its compile record (wall time, peak RSS, the commit that
    compiled it), kept beside the build in BUILD.compile.json."""
    from opmlc.artifact import Build
    from opmlc.errors import OpmlcError

    record = build_dir.parent / f"{build_dir.name}.compile.json"
    if not fresh and build_dir.is_dir():
        try:
            Build.load(build_dir)  # checks the files once (native/verified.json): the parties do not hash again
            rec = json.loads(record.read_text()) if record.is_file() else {}
            print(f"build: reusing {build_dir}" + (f" (compiled by {rec['commit']} in {rec['wall_s'] / 60:.1f} min, "
                                                     f"peak RSS {rec['peak_rss_gib']:.2f} GiB)" if rec else ""))
            return rec
        except OpmlcError as exc:
            print(f"build: {exc}")
    args = ["compile", str(model), "-o", str(build_dir), "--weights", fmt, *compile_args]
    print(f"build: opmlc {' '.join(args)}", flush=True)
    wall, rss, _ = timed("opmlc.cli", args, build_dir.parent / f"{build_dir.name}.compile.log")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    rec = {"wall_s": wall, "peak_rss_gib": rss, "commit": commit[:12], "args": args[3:]}
    record.write_text(json.dumps(rec) + "\n")
    Build.load(build_dir)
    print(f"build: compiled in {wall / 60:.1f} min, peak RSS {rss:.2f} GiB", flush=True)
    return rec


def lie_nodes(build, layer: int, nonlinear: str) -> list[tuple[str, int]]:
    """The disputes' lying nodes in decoder layer `layer`: its largest matmul (the MLP's gate
    projection, 2048×5632) and its first `nonlinear` node (an op or a unary's kind)."""
    g = build.graph
    prefix = f"/layers.{layer}/"
    nodes = [(k, n) for k, n in enumerate(g.nodes) if n.name.startswith(prefix)]
    if not nodes:
        raise SystemExit(f"--lie-layer {layer}: the model has no node named {prefix}*")

    def macs(k: int) -> int:
        n = g.nodes[k]
        return g.values[n.output].type.numel * g.values[n.inputs[0]].type.shape[-1]

    mm = max((k for k, n in nodes if n.op in ("matmul", "qmatmul")), key=lambda k: (macs(k), -k))
    nl = next((k for k, n in nodes if nonlinear in (n.op, n.attrs.get("kind"), n.attrs.get("fn"))), None)
    if nl is None:
        raise SystemExit(f"--nonlinear {nonlinear}: layer {layer} has no such node")
    return [("matmul", mm), (nonlinear, nl)]


def lie_part(build, node: int) -> tuple[int | None, int]:
    """(part, element) of the lie at `node`: the part holding the output's middle element when the
    node is split (its first element), else (None, 0)."""
    from opmlc.tasks import node_parts

    parts = node_parts(build, node)
    if parts is None:
        return None, 0
    per = parts.part_bytes // 4
    j = (parts.numel // 2) // per
    return j, parts.element_range(j)[0]


def party(build_dir: Path, role: str, node: int, part: int | None, element: int, step: int) -> dict:
    """A party's whole off-chain work in a fresh process (bench/phase1.py's child): its native
    trace and its one VM task; its figures, peak RSS included."""
    cmd = [sys.executable, str(ROOT / "bench" / "phase1.py"), "--child", str(build_dir), role, str(node), "native",
           "--element", str(element), "--step", str(step), "--no-warm"]
    if part is not None:
        cmd += ["--part", str(part)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if p.returncode:
        raise SystemExit(f"the {role}'s replay failed:\n{p.stderr[-3000:]}")
    return {**json.loads(p.stdout.strip().splitlines()[-1]), "wall_s": time.perf_counter() - t0}


def run_disputes(work: Path, model: Path, fmt: str, layers: int, build_dir: Path | None = None,
                 compile_args: list[str] = (), fresh: bool = False, lie_layer: int | None = None,
                 nonlinear: str = "sigmoid", cases: tuple[str, ...] = ("matmul", "nonlinear")) -> list[dict]:
    """The --dispute mode: `opmlc demo`'s game on the build, the server lying in the largest
    matmul then in a nonlinear node, each in a fresh process; then each party's work alone.
    Returns one record per dispute (also written to WORK/dispute_FORMAT.json)."""
    from opmlc.artifact import Build

    build_dir = build_dir or work / f"build_{fmt}"
    rec = ensure_build(model, build_dir, fmt, list(compile_args), fresh)
    build = Build.load(build_dir)
    g = build.graph
    log2_budget = build.manifest["program"]["log2_step_budget"]
    layer = layers - 1 if lie_layer is None else lie_layer
    print(f"{build_dir}: {len(g.nodes)} nodes, step budget 2^{log2_budget}, "
          f"{sum(1 for k in range(len(g.nodes)) if build.manifest['program']['tasks']['nodes'][k].get('parts'))} "
          f"split nodes; lies in layer {layer}", flush=True)
    rows = []
    chosen = lie_nodes(build, layer, nonlinear)
    for case, node in [chosen[i] for i, c in enumerate(("matmul", "nonlinear")) if c in cases]:
        n = g.nodes[node]
        part, element = lie_part(build, node)
        from opmlc.tasks import node_parts

        parts = node_parts(build, node)
        where = f"part {part} of {parts.count} (element {element})" if parts else "unsplit"
        print(f"\n{case}: node {node} {n.name} ({n.op} {n.attrs.get('kind', '')}) -> "
              f"{g.values[n.output].type.shape}, lie in {where}", flush=True)
        cmd = [sys.executable, str(ROOT / "bench" / "phase1.py"), "--child", str(build_dir), "dispute", str(node),
               "native"] + ([] if part is None else ["--part", str(part)])
        t0 = time.perf_counter()
        p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)  # its progress lines on stderr
        wall = time.perf_counter() - t0
        if p.returncode:
            raise SystemExit(f"the dispute at node {node} failed")
        r = json.loads(p.stdout.strip().splitlines()[-1])
        r.update(case=case, lie_node=node, lie_part=part, process_s=wall)
        print(f"{case}: {r['winner']} wins ({r['reason']}) at node {r['node']}"
              + ("" if r.get("part") is None else f" part {r['part']}") + f" step {r['step']}, "
              f"{r['seconds']} s (+ {r['load_s']:.1f} s Build.load; process {wall:.0f} s)", flush=True)
        for role in ("server", "challenger"):
            r[role] = party(build_dir, role, node, r.get("part"), element, r["step"])
        rows.append(r)
    print(f"\nstep budget 2^{log2_budget}; build compiled in "
          + (f"{rec['wall_s'] / 60:.1f} min, peak RSS {rec['peak_rss_gib']:.2f} GiB" if rec else "(not recorded)")
          + "; RSS: VmHWM of a party's own process (its trace + its one VM task), and of the game's one process")
    print(f"{'lie':>9} {'node':>5} {'part':>9} {'winner':>10} {'wall':>7} {'rounds n/p/s':>13} {'gas':>11} "
          f"{'VM steps srv':>13} {'VM steps ch':>12} {'RSS srv':>8} {'RSS ch':>8} {'RSS game':>9} {'trace':>7}")
    for r in rows:
        part = "-" if r["lie_part"] is None else f"{r['lie_part']}/{r['part']}"
        print(f"{r['case']:>9} {r['lie_node']:>5} {part:>9} {r['winner']:>10} {r['seconds']:>6.0f}s "
              f"{r['rounds_phase1']:>4}/{r['rounds_parts']}/{r['rounds_phase2']:<4} {r['gas_total']:>11,} "
              f"{r['vm_steps_server']:>13,} {r['vm_steps']:>12,} {r['server']['peak_rss_mib'] / 1024:>6.2f}G "
              f"{r['challenger']['peak_rss_mib'] / 1024:>6.2f}G {r['peak_rss_mib'] / 1024:>7.2f}G "
              f"{r['challenger']['trace_s']:>6.1f}s")
    for r in rows:
        r.update(log2_step_budget=log2_budget, build=str(build_dir), compile=rec)
    (work / f"dispute_{fmt}.json").write_text(json.dumps(rows, indent=1, default=str) + "\n")
    return rows


def errors(got: np.ndarray, ref: np.ndarray) -> dict:
    d = got.astype(np.float64) - ref
    return {"max_abs": float(np.abs(d).max()), "rel": float(np.linalg.norm(d) / np.linalg.norm(ref)),
            "argmax": f"{int((got.argmax(-1) == ref.argmax(-1)).sum())}/{ref.shape[1]}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "opmlc" / "scale")
    ap.add_argument("--weights", default="int8,int4", help="formats to compile, comma-separated (default int8,int4)")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime's intra-op threads (default 1, as native)")
    ap.add_argument("--repeat", type=int, default=3, help="timed forward passes after the first (default 3)")
    ap.add_argument("--compile-arg", action="append", default=[], help="one more `opmlc compile` argument (repeatable)")
    ap.add_argument("--dispute", action="store_true",
                    help="play opmlc demo's dispute on the build (the first of --weights) instead: a lie in the "
                         "largest matmul, then in a nonlinear node")
    ap.add_argument("--build", type=Path, default=None, help="--dispute: this build (compiled there unless it loads)")
    ap.add_argument("--fresh", action="store_true", help="--dispute: compile the build again even if one loads")
    ap.add_argument("--lie-layer", type=int, default=None, help="--dispute: the lies' decoder layer (default the last)")
    ap.add_argument("--nonlinear", default="sigmoid", help="--dispute: the nonlinear lie's op or kind (default sigmoid)")
    ap.add_argument("--cases", default="matmul,nonlinear", help="--dispute: which lies (default matmul,nonlinear)")
    ap.add_argument("--forward", nargs=3, metavar=("BUILD", "TOKENS", "OUT"), help=argparse.SUPPRESS)
    default = LlamaShape()
    for field, value in asdict(default).items():
        if field not in ("eps", "rope_base"):
            ap.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=value)
    args = ap.parse_args()
    if args.forward:
        forward(*args.forward, repeat=args.repeat)
        return
    shape = replace(default, **{k: getattr(args, k) for k in asdict(default) if hasattr(args, k)})
    work = args.workdir / (f"h{shape.hidden}_l{shape.layers}_a{shape.heads}_kv{shape.kv_heads}_m{shape.mlp}"
                           f"_v{shape.vocab}_t{shape.context}_s{shape.seed}")
    work.mkdir(parents=True, exist_ok=True)
    model = ensure_model(shape, work)
    float_bytes = (work / "model.onnx.data").stat().st_size
    print(f"shape {asdict(shape)}: {shape.parameters() / 1e9:.3f}B parameters, {float_bytes / 2**30:.2f} GiB float32")
    if args.dispute:
        run_disputes(work, model, args.weights.split(",")[0], shape.layers, args.build, args.compile_arg, args.fresh,
                     args.lie_layer, args.nonlinear, tuple(args.cases.split(",")))
        return
    tokens = np.random.default_rng(7).integers(0, shape.vocab, (1, shape.context)).astype(np.int64)
    tokens_path = work / "tokens.npy"
    np.save(tokens_path, tokens)

    rows = []
    for fmt in [f for f in args.weights.split(",") if f]:
        build = work / f"build_{fmt}"
        wall, rss, text = timed("opmlc.cli", ["compile", str(model), "-o", str(build), "--weights", fmt,
                                              *args.compile_arg], work / f"compile_{fmt}.log")
        weight_bytes = sum(p.stat().st_size for p in (build / "tensors").iterdir())
        print(f"{fmt}: compiled in {wall / 60:.1f} min, peak RSS {rss:.2f} GiB, build {dir_size(build) / 2**30:.2f} GiB "
              f"(tensor store {weight_bytes / 2**30:.2f} GiB)", flush=True)
        out = work / f"logits_{fmt}.npy"
        fwall, frss, ftext = timed(str(Path(__file__).resolve()), ["--forward", str(build), str(tokens_path), str(out),
                                                                 "--repeat", str(args.repeat)], work / f"run_{fmt}.log")
        f = json.loads(next(ln for ln in ftext.splitlines() if ln.startswith("FORWARD "))[8:])
        print(f"{fmt}: native forward {f['median_s']:.2f} s (first call {f['first_s']:.2f} s, load {f['load_s']:.1f} s), "
              f"peak RSS {frss:.2f} GiB, {f['saturated']} saturated elements", flush=True)
        rows.append((fmt, wall, rss, dir_size(build), weight_bytes, f, frss, np.load(out)))

    ref, ref_s = ort_run(model, tokens, args.threads, args.repeat)
    nbits = ensure_nbits(model)
    nb, nb_s = ort_run(nbits, tokens, args.threads, args.repeat)
    print(f"\nreference: onnxruntime {__import__('onnxruntime').__version__} float32, CPUExecutionProvider, "
          f"{args.threads} thread(s); 32 tokens per forward pass; targets: compile < 15 min and < 8 GiB, "
          f"run RSS < weight bytes + 1 GiB")
    head = (f"{'':>22} {'compile':>9} {'peak RSS':>9} {'build':>8} {'forward':>9} {'vs ort f32':>10} "
            f"{'vs ort q4':>10} {'run RSS':>8} {'max|Δ|':>8} {'rel':>8} {'argmax':>7}")
    print(head)
    for fmt, wall, rss, size, wbytes, f, frss, logits in rows:
        e = errors(logits, ref)
        print(f"{'opmlc --weights ' + fmt:>22} {wall / 60:>7.1f} m {rss:>7.2f} G {size / 2**30:>6.2f} G "
              f"{f['median_s']:>7.2f} s {f['median_s'] / ref_s:>9.1f}x {f['median_s'] / nb_s:>9.1f}x "
              f"{frss:>6.2f} G {e['max_abs']:>8.3g} {e['rel']:>8.3g} {e['argmax']:>7}")
        print(f"{'':>22} weights in the store {wbytes / 2**30:.2f} GiB → run RSS target {(wbytes + 2**30) / 2**30:.2f} G")
    e = errors(nb, ref)
    print(f"{'onnxruntime float32':>22} {'':>9} {'':>9} {float_bytes / 2**30:>6.2f} G {ref_s:>7.2f} s")
    nb_bytes = sum(p.stat().st_size for p in nbits.parent.glob(NBITS_MODEL + "*"))
    print(f"{'onnxruntime MatMulNBits':>22} {'':>9} {'':>9} {nb_bytes / 2**30:>6.2f} G {nb_s:>7.2f} s {'':>10} {'':>10} "
          f"{'':>8} {e['max_abs']:>8.3g} {e['rel']:>8.3g} {e['argmax']:>7}")


if __name__ == "__main__":
    main()
