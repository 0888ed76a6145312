"""The `opmlc` command line: a thin typer layer over the Python API (opmlc.api, opmlc.artifact).

Every user mistake is an OpmlcError: one line on stderr, exit code 2. `--json` prints one JSON
object on stdout for machines.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from opmlc import __version__
from opmlc.errors import OpmlcError
from opmlc.frontend.ranges import DEFAULT_INPUT_BOUND


class _ManualGroup(typer.core.TyperGroup):
    """Help in a manual page's terms: BUILD_DIR, PATH, N, TEXT rather than Python's type names."""

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        for param in getattr(cmd, "params", ()):
            if param.metavar is not None or getattr(param, "is_flag", False):
                continue
            desc = param.type_descriptor
            if param.param_type_name == "argument":
                param.metavar = param.name.upper()
            elif desc.is_path or "Path" in param.bare_type():  # list[Path]: a repeatable path
                param.metavar = "PATH"
            else:
                param.metavar = {"int": "N", "float": "X"}.get(param.bare_type().lower(), "TEXT")
        return cmd

    def format_commands(self, ctx, formatter) -> None:
        """Each command with its whole summary line, wrapped (click would cut it at the width)."""
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, " ".join(inspect.cleandoc(cmd.help or "").split("\n\n")[0].split())))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


app = typer.Typer(
    name="opmlc",
    cls=_ManualGroup,
    context_settings={"max_content_width": 100},
    help="Compile ONNX models to bit-exact fixed-point programs and dispute their inference on chain.\n\n"
    "A build runs the same bits on the golden interpreter, natively and in a MIPS VM whose single "
    "steps a Solidity contract re-executes; a wrong result is found by bisection over the graph's "
    "nodes, then over one node's VM steps. `opmlc COMMAND --help` describes each command.",
    epilog="\b\nTypical use:\n"
    "  opmlc compile MODEL.onnx -o build/      # a reproducible build\n"
    "  opmlc run build/ --input X.npy --backend vm\n"
    "  opmlc demo --record game.json          # a whole dispute on a local chain\n"
    "  opmlc report game.json -o dispute.svg  # … drawn\n\n"
    "\b\nExit status: 0 success; 1 a check that failed (compile --check, verify-step);\n"
    "2 a user mistake (a bad model, input or option), reported in one line on stderr.\n"
    "Progress bars go to stderr, only on a terminal and never with --json.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def user_errors(fn):
    """Turn an OpmlcError into its one-line message and exit code 2; show progress bars on stderr.

    The bars (opmlc/progress.py) appear only when stderr is a terminal and --json is off.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from opmlc import progress
        from toolchain.errors import ToolchainError

        try:
            with progress.shown(sys.stderr.isatty() and not kwargs.get("as_json")):
                return fn(*args, **kwargs)
        except OpmlcError as exc:
            typer.echo(f"opmlc: error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except ToolchainError as exc:  # the user's environment: no node, no Node.js, a bad URL
            typer.echo(f"opmlc: error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _parse_shapes(specs: list[str]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for spec in specs:
        name, sep, dims = spec.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = tuple(int(d) for d in dims.split(",") if d.strip())
        except ValueError:
            raise OpmlcError(f"--input-shape {spec!r}: expected NAME=D0,D1,… (for example input=1,64)") from None
    return shapes


@app.command("compile")
@user_errors
def compile_cmd(
    model: Annotated[Path, typer.Argument(help="The ONNX model to compile.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Build directory to write.")] = None,
    emit: Annotated[str | None, typer.Option("--emit", help="Print an intermediate form: 'ir'.")] = None,
    frac_bits: Annotated[int | None, typer.Option(
        "--frac-bits", help="Give every fx32 tensor N fractional bits instead of the analysed ones (an override: "
        "the compile warns of tensors whose analysed range N bits cannot hold).")] = None,
    input_range: Annotated[
        list[str] | None, typer.Option("--input-range", help="NAME=LO,HI declares the range of a float input's values "
                                       f"(repeatable; default ±{DEFAULT_INPUT_BOUND:g}); recorded in the manifest.")
    ] = None,
    calibrate: Annotated[
        Path | None, typer.Option("--calibrate", help="A .npy of sample inputs [S, …]: each tensor's bits from its observed "
                                  "range, the input's range from the samples; prints each tensor's headroom.")
    ] = None,
    input_shape: Annotated[
        list[str] | None, typer.Option("--input-shape", help="NAME=D0,D1,… fixes an input's shape (repeatable).")
    ] = None,
    check: Annotated[
        Path | None, typer.Option("--check", help="Rebuild MODEL and compare with this build directory; exit 1 if anything differs.")
    ] = None,
    weights: Annotated[str | None, typer.Option(
        "--weights", help="Quantize the float weights of MatMul, Gemm, Conv and embeddings: int8 (one scale per output "
        "channel) or int4 (one scale per block of 32); prints the error introduced.")] = None,
    block_size: Annotated[int | None, typer.Option(
        "--block-size", help="With --weights: elements of the reduction axis sharing one scale (a power of two ≥ 16).")] = None,
    max_context: Annotated[int | None, typer.Option(
        "--max-context", help="An onnxruntime-genai model: the positions of its key/value cache (default: "
        "genai_config.json's context_length, at most 256).")] = None,
    step_budget: Annotated[int | None, typer.Option(
        "--step-budget", help="VM steps any one task may take (a power of two, default 2^24 = 16777216): larger "
        "nodes are split into parts over their output, and a long reduction (matmul, qmatmul, reduce sum/mean) "
        "into exact int64 partial sums: chunk nodes and psum nodes, recorded in the build's graph.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Compile MODEL into a build directory: manifest, IR, weights by tensor root, model.elf.

    Fractional bits are chosen by range analysis: each input's range (--input-range, else the
    calibration samples' range, else ±16 for a float input; integer token ids are bounded by
    the embedding they index) is propagated through the graph by interval arithmetic, and every
    tensor gets the most bits (up to 24) at which its bound, with a factor 2 to spare, still
    fits an int32, so no tensor can saturate for inputs in range. Weights get up to 24 bits.
    --calibrate gives the tensors it observes their bits from the samples instead. The bits and
    the input ranges are recorded in the manifest ("quantization"). Tensors whose range no bits
    can hold are listed as warnings.

    --weights int8|int4 stores MatMul/Gemm/Conv weights and embedding tables as 8- or 4-bit
    integers with a fixed-point scale per output channel or per block (--block-size), round to
    nearest; kernels accumulate exactly and rescale once. The compile prints the error this
    introduced against the float weights (and, for small models with float inputs, against the
    float model's outputs on random inputs in range); the manifest records it ("weights").

    The build is reproducible: the same model and opmlc version give byte-identical files on any
    machine. `--check DIR` rebuilds and compares, for CI.
    """
    from opmlc.artifact import check_build, compile_model
    from opmlc.frontend.weights import check_format

    try:
        check_format(weights, block_size)
    except ValueError as exc:
        raise OpmlcError(str(exc)) from None
    from opmlc.frontend import QuantPolicy, lower_model

    if check is not None:
        differ = check_build(model, check)
        if as_json:
            typer.echo(json.dumps({"build": str(check), "reproducible": not differ, "differ": differ}))
        elif differ:
            typer.echo(f"{check}: rebuild differs in {', '.join(differ)}", err=True)
        else:
            typer.echo(f"{check}: rebuild is byte-identical")
        raise typer.Exit(1 if differ else 0)

    if emit not in (None, "ir"):
        raise OpmlcError(f"--emit {emit!r}: the forms are 'ir'")
    if frac_bits is not None and not 0 <= frac_bits <= 30:
        raise OpmlcError(f"--frac-bits {frac_bits}: must be in 0..30")
    shapes = _parse_shapes(input_shape or [])
    ranges = _parse_ranges(input_range or [])
    overrides = None
    peaks: dict[str, float] = {}
    if calibrate is not None:
        from opmlc.api import load_samples
        from opmlc.frontend.calibrate import calibrate as calibrate_model
        from opmlc.frontend.calibrate import observed_peaks

        samples = load_samples(calibrate)
        policy = calibrate_model(model, samples, default=16 if frac_bits is None else frac_bits)
        overrides = policy.overrides
        ranges = {**policy.input_ranges, **ranges}
        peaks = observed_peaks(model, samples)[1]
    if output is None:
        if emit is None:
            raise OpmlcError("nothing to do: pass -o DIR to write a build, or --emit ir to print the IR")
        policy = QuantPolicy(default=16 if frac_bits is None else frac_bits, overrides=overrides or {},
                             analyse=frac_bits is None, input_ranges=ranges, weights=weights, block_size=block_size)
        fe = lower_model(model, policy, shapes)
        _announce_batch_defaults(fe.graph, fe.input_names, fe.batch_defaulted)
        typer.echo(fe.graph.to_text(), nl=False)
        return
    build = compile_model(model, output, frac_bits=frac_bits, input_shapes=shapes, frac_overrides=overrides,
                          input_ranges=ranges, weights=weights, block_size=block_size, max_context=max_context,
                          step_budget=step_budget)
    weights_doc = None
    if weights is not None:
        from opmlc.api import weights_output_error

        weights_doc = dict(build.manifest["weights"])
        weights_doc["output_error"] = weights_output_error(build, model)
        if not as_json:
            typer.echo(_weights_line(weights_doc))
    _announce_batch_defaults(build.graph, [r["name"] for r in build.manifest["inputs"]],
                             build.manifest["batch_defaulted"])
    from opmlc.frontend.ranges import COARSE_BITS, at_risk, coarse

    risky = at_risk(build.analysis)
    rough = coarse(build.analysis) if frac_bits is None else []
    for r in rough:
        typer.echo(f"opmlc: warning: tensor {r.name!r} keeps only {r.frac} fractional bits (fewer than "
                   f"{COARSE_BITS}): its analysed bound ±{r.bound:.4g} is wide, so its results may lose "
                   "precision; declare the inputs' real ranges (--input-range), calibrate (--calibrate) "
                   "or choose bits (--frac-bits)", err=True)
    for r in risky:
        typer.echo(f"opmlc: warning: tensor {r.name!r} may saturate: its analysed range [{r.lo:.4g}, {r.hi:.4g}] "
                   f"exceeds ±{r.capacity:.4g}, what {r.frac} fractional bits hold"
                   + (" (drop --frac-bits to let the analysis choose)" if frac_bits is not None else
                      "; declare tighter input ranges (--input-range) or calibrate (--calibrate)"), err=True)
    from opmlc.api import clipped_constants

    if clipped_constants(build):
        typer.echo(f"opmlc: warning: {clipped_constants(build)} constant element(s) (weights, thresholds) lie outside"
                   " the range of their fractional bits and were clipped; compile with fewer (--frac-bits)", err=True)
    if emit == "ir":
        typer.echo(build.graph.to_text(), nl=False)
    report = _headroom(build.analysis, peaks) if calibrate is not None else None
    if as_json:
        doc = {"build": str(output), "nodes": len(build.graph.nodes), "values": len(build.graph.values),
               "quantization": build.manifest["quantization"]["method"],
               "input_ranges": build.manifest["quantization"]["input_ranges"],
               "may_saturate": [r.name for r in risky], "coarse": [r.name for r in rough],
               "clipped_constants": clipped_constants(build)}
        if report is not None:
            doc["headroom"] = report
        if weights_doc is not None:
            doc["weights"] = weights_doc
        typer.echo(json.dumps(doc))
        return
    if report is not None:
        typer.echo("headroom of each fx32 tensor: the magnitude its bits hold, its analysed bound and observed peak,\n"
                   "and log2(holds / peak), log2(holds / bound) (negative: may saturate)")
        typer.echo(f"  {'tensor':32} {'bits':>4} {'holds':>10} {'bound':>10} {'peak':>10} {'peak hr':>8} {'bound hr':>8}")
        for row in report:
            def num(x, fmt):
                return format(x, fmt) if x is not None else "-"
            typer.echo(f"  {row['name'][:32]:32} {row['frac']:4d} {row['holds']:10.4g} {num(row['bound'], '10.4g')} "
                       f"{num(row['peak'], '10.4g')} {num(row['peak_headroom_bits'], '8.1f')} "
                       f"{num(row['bound_headroom_bits'], '8.1f')}")
    if emit is None:
        q = build.manifest["quantization"]
        for rec in build.manifest["inputs"]:  # say what the bits assume where the user did not
            lo, hi = q["input_ranges"][rec["name"]]
            why = None
            if rec["dtype"] == "fx32" and rec["name"] in build.manifest.get("genai", {}).get("cache_inputs", []) \
                    and rec["name"] not in ranges:
                why = "the key/value cache's declared range, opmlc/genai/config.py KV_BOUND"
            elif rec["dtype"] == "fx32" and rec["name"] not in ranges:
                why = "the default" if hi == DEFAULT_INPUT_BOUND else "the default, widened to a tree ensemble's thresholds"
            if why is not None:
                typer.echo(f"input {rec['name']!r}: assumed range [{lo:g}, {hi:g}] ({why}; declare the real one "
                           f"with --input-range {rec['name']}=LO,HI)")
        typer.echo(f"compiled {model} → {output} ({len(build.graph.nodes)} nodes, {len(build.graph.values)} values)")


def _weights_line(doc: dict) -> str:
    """One line: what --weights quantized and the error it introduced."""
    err = doc.get("error") or {}
    block = f"blocks of {doc['block_size']}" if doc.get("block_size") else "one scale per output channel"
    line = (f"weights {doc['format']} ({block}): {doc['quantized']} tensors, {doc['parameters']:,} parameters; "
            f"weight error: relative RMS {err.get('rel_rms', 0.0):.3g}, max |Δw| {err.get('max_abs', 0.0):.3g}")
    out = doc.get("output_error")
    if out:
        line += (f"; output error vs float on {out['samples']} random inputs in range: max {out['max_abs']:.3g} "
                 f"({out['max_rel']:.2%} of the largest output)"
                 + (f", argmax agrees {out['argmax_agree']}/{out['rows']}" if out.get("rows") else ""))
    return line


def _parse_ranges(specs: list[str]) -> dict[str, tuple[float, float]]:
    ranges = {}
    for spec in specs:
        name, sep, bounds = spec.partition("=")
        try:
            lo, hi = (float(b) for b in bounds.split(","))
            if not sep or not name or not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
                raise ValueError
        except ValueError:
            raise OpmlcError(f"--input-range {spec!r}: expected NAME=LO,HI with finite LO ≤ HI (for example input=0,1)") from None
        ranges[name] = (lo, hi)
    return ranges


def _headroom(analysis, peaks: dict[str, float]) -> list[dict]:
    """Per fx32 tensor of the build: bits, what they hold, analysed bound, observed peak, headroom."""
    import math

    rows = []
    for r in analysis.ranges():
        peak = peaks.get(r.name)
        bound = r.bound if math.isfinite(r.bound) else None
        rows.append({"name": r.name, "frac": r.frac, "holds": r.capacity, "bound": bound, "peak": peak,
                     "peak_headroom_bits": math.log2(r.capacity / peak) if peak else None,
                     "bound_headroom_bits": math.log2(r.capacity / bound) if bound else None})
    return rows


def _warn_saturation(build, result) -> None:
    """Saturation is never silent: one warning line per problem on stderr."""
    from opmlc.api import saturation_report

    for line in saturation_report(build, result):
        typer.echo(f"opmlc: warning: {line}", err=True)


def _saturation_json(build, result) -> dict:
    """`opmlc run --json`'s saturation fields: {node index: count}, {input: count}, constants
    clipped by the build, who counted."""
    from opmlc.api import clipped_constants

    return {"saturated": {str(k): n for k, n in sorted(result.saturated.items())},
            "clipped_inputs": dict(sorted(result.clipped_inputs.items())),
            "clipped_constants": clipped_constants(build),
            "saturation_counted_by": result.saturation_counted_by}


def _announce_batch_defaults(graph, names: list[str], defaulted: list[str]) -> None:
    """One stderr line per input whose dynamic batch dimension was compiled as 1."""
    for v, name in zip(graph.inputs, names, strict=True):
        if name in defaulted:
            rest = ",".join(str(d) for d in graph.values[v].type.shape[1:])
            typer.echo(f"opmlc: note: input {name!r} has a dynamic batch dimension, compiled as 1; "
                       f"pass --input-shape {name}=B{',' + rest if rest else ''} for batches of B rows", err=True)


@app.command("run")
@user_errors
def run_cmd(
    build_dir: Annotated[Path, typer.Argument(help="A build directory from `opmlc compile`.")],
    input: Annotated[
        list[Path] | None, typer.Option("--input", "-i", help="A .npy file per model input, in order.")
    ] = None,
    tokens: Annotated[
        str | None, typer.Option("--tokens", help="Text for a byte-level decoder instead of --input: its UTF-8 bytes are "
                                 "the token ids (the last T bytes; shorter text is padded with spaces on the left).")
    ] = None,
    backend: Annotated[str, typer.Option("--backend", help="interp (golden interpreter), native or vm.")] = "interp",
    node: Annotated[int | None, typer.Option("--node", help="Run only node K, as its own task.")] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", help="Threads of the native backend (default: every core); "
                                 "any number gives the same bits.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help='Print {"backend", "output_root", "output", "saturated", "clipped_inputs", '
                           '"clipped_constants", "saturation_counted_by"} (+ "steps", "final_state_hash" for vm).')
    ] = False,
) -> None:
    """Run a build on inputs and print the dequantized output and its tensor root.

    With --node K, node K runs alone on operands the interpreter computed, and its output is
    printed: the unit of phase 2 of a dispute. In the VM a task maps only its own operands and
    output (2 GiB at most); a model whose values exceed 2 GiB has no whole-graph VM task and
    runs in the VM one node at a time (`opmlc inspect` says which). With --tokens TEXT (a byte-level decoder such as
    models/tiny_llama.onnx), the predicted next byte (the argmax of the last position's logits)
    is printed too.

    Saturation is never silent: elements clamped to the int32 range, per node, and input
    elements clipped at quantization are warned about on stderr (the native build counts them
    itself, the VM has the interpreter count alongside it).
    """
    from opmlc.api import encode_text, run
    from opmlc.artifact import Build

    build = Build.load(build_dir)
    if tokens is not None:
        recs = build.manifest["inputs"]
        if input or len(recs) != 1:
            raise OpmlcError("--tokens replaces --input for a model with one token-id input; pass one or the other")
        arrays = [encode_text(tokens, build.graph.values[recs[0]["value"]].type)]
    else:
        arrays = _load_inputs(build, input or [])
        from opmlc.api import inputs_out_of_range

        for message in inputs_out_of_range(build, arrays):
            typer.echo(f"opmlc: warning: {message}", err=True)
    result = run(build, arrays, backend, node, threads=threads)
    _warn_saturation(build, result)
    outs = result.dequantized()
    roots = ["0x" + r.hex() for r in result.output_roots]
    next_token = None
    if tokens is not None and node is None:
        nid = int(np.argmax(outs[0].reshape(-1, outs[0].shape[-1])[-1]))
        next_token = {"id": nid, "char": chr(nid) if nid < 128 else None}
    if node is None:
        names = [r["name"] for r in build.manifest["outputs"]]
    else:
        names = [build.graph.values[build.graph.nodes[node].output].name or f"node {node}"]
    # a classifier's label output (skl2onnx: "output_label" or "label"): integer class labels
    labels = [o.tolist() for n, o, t in zip(names, outs, result.output_types, strict=True)
              if "label" in n and t.dtype.value in ("i32", "i64")]
    if as_json:
        doc = {"backend": backend, "output_root": roots[0], "output": outs[0].tolist(), **result.extra}
        if next_token is not None:
            doc["next_token"] = next_token
        if labels:
            doc["label"] = labels[0]
        if node is not None:
            doc["node"] = node
        if len(outs) > 1:
            doc["outputs"] = [{"name": n, "output_root": root, "output": o.tolist()}
                              for n, root, o in zip(names, roots, outs, strict=True)]
        doc.update(_saturation_json(build, result))
        typer.echo(json.dumps(doc))
        return
    for name, root, out in zip(names, roots, outs, strict=True):
        typer.echo(f"{name}: {np.array2string(out, precision=5, max_line_width=100)}")
        if out.ndim >= 1 and out.shape[-1] > 1:
            typer.echo(f"{name} argmax: {np.argmax(out, axis=-1).tolist()}")
        typer.echo(f"{name} root: {root}")
    if labels:
        lab = labels[0]
        typer.echo(f"predicted label: {lab[0] if isinstance(lab, list) and len(lab) == 1 else lab}")
    if next_token is not None:
        shown = repr(next_token["char"]) if next_token["char"] is not None else "(not ASCII)"
        typer.echo(f"next token: {next_token['id']} {shown}")
    for k, v in result.extra.items():
        typer.echo(f"{k}: {v}")


@app.command("generate")
@user_errors
def generate_cmd(
    build_dir: Annotated[Path, typer.Argument(help="A build of an onnxruntime-genai model (`opmlc compile FOLDER`).")],
    prompt: Annotated[str, typer.Option("--prompt", help="The text to continue (tokenized with the model folder's "
                                        "tokenizer.json).")],
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Tokens to generate (fewer if the model "
                                                "emits its end-of-sequence token).")] = 16,
    backend: Annotated[str, typer.Option("--backend", help="native (default), interp or vm: bit-identical.")] = "native",
    threads: Annotated[int | None, typer.Option("--threads", help="Threads of the native backend (default: every "
                                                "core); the same tokens on any number.")] = None,
    ignore_eos: Annotated[bool, typer.Option("--ignore-eos", help="Generate all --max-new-tokens tokens, past the "
                                             "model's end-of-sequence token (genai_config.json's eos_token_id).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"prompt_ids", "generated_ids", "text", "steps", '
                                          '"stopped", "backend", "seconds", "tokens_per_second"} instead of streaming '
                                          'the text.')] = False,
) -> None:
    """Generate text greedily: one decoding step per token (the prompt read token by token), the
    key/value cache carried between steps as the step computed it, the text streamed as it is
    made; it stops at the model's end-of-sequence token unless --ignore-eos. Needs the tokenizers
    package (pip install 'opmlc[llm]')."""
    import time

    from opmlc.artifact import Build
    from opmlc.genai.generate import generate

    build = Build.load(build_dir)
    start = time.perf_counter()

    def show(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    gen = generate(build, prompt, max_new_tokens, backend, on_text=None if as_json else show, stop_at_eos=not ignore_eos,
                   threads=threads)
    seconds = time.perf_counter() - start
    if as_json:
        doc = {**gen.to_json(), "backend": backend, "seconds": round(seconds, 3),
               "tokens_per_second": round(len(gen.generated_ids) / seconds, 2) if seconds > 0 else None}
        typer.echo(json.dumps(doc))
    else:
        typer.echo("")


@app.command("prove")
@user_errors
def prove_cmd(
    build_dir: Annotated[Path, typer.Argument(help="A build directory from `opmlc compile`.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the witness or dispute JSON.")],
    input: Annotated[list[Path] | None, typer.Option("--input", "-i", help="A .npy file per model input, in order.")] = None,
    step: Annotated[int | None, typer.Option("--step", help="Prove one step: the instruction after N steps.")] = None,
    claim: Annotated[
        Path | None, typer.Option("--claim", help="Compute the whole dispute against this claim (from `opmlc claim`).")
    ] = None,
    node: Annotated[int | None, typer.Option("--node", help="With --step: a step of node K's task.")] = None,
    prompt: Annotated[str | None, typer.Option("--prompt", help=PROMPT_HELP)] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="With --prompt: tokens generated.")] = 16,
    ignore_eos: Annotated[bool, typer.Option("--ignore-eos", help=IGNORE_EOS_HELP)] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Write dispute evidence: the witness of one VM step (--step), or a whole dispute (--claim).

    With --prompt (a build of an onnxruntime-genai model) the task is the generation of
    --max-new-tokens tokens from that text; nodes are then numbered step · K + node.

    --step N writes what MIPS.sol's step() takes (pre-state, memory proofs, pre and post state
    hashes); `opmlc verify-step W.json` checks it on chain. --claim CLAIM.json computes, for a
    wrong claim, the dispute an honest challenger plays: every bisection move, the disputed node
    and step, and the final witness, as a JSON trace the contracts accept.
    """
    from opmlc import progress
    from opmlc.artifact import Build
    from opmlc.prove import prove_step

    if (step is None) == (claim is None):
        raise OpmlcError("pass exactly one of --step N (one witness) or --claim CLAIM.json (a whole dispute)")
    build, arrays = _task_inputs(Build.load(build_dir), input, prompt, max_new_tokens, ignore_eos, claim)
    if claim is not None:
        from opmlc.api import quantize_inputs
        from opmlc.dispute.claims import dispute_record, read_claim

        doc = dispute_record(build, quantize_inputs(build, arrays), read_claim(claim, build))
        output.write_text(json.dumps(doc, indent=1) + "\n")
        summary = {"trace": str(output), "winner": doc["winner"], "node": doc["node"], "step": doc["step"],
                   "rounds_phase1": doc["rounds_phase1"], "rounds_phase2": doc["rounds_phase2"]}
        if as_json:
            typer.echo(json.dumps(summary))
        else:
            typer.echo(f"wrote {output}: node {doc['node']} is disputed, step {doc['step']} settles it; "
                       f"{doc['rounds_phase1']} + {doc['rounds_phase2']} bisection rounds; the {doc['winner']} wins")
        return
    if step < 0:
        raise OpmlcError(f"--step {step}: steps count from 0")
    with progress.task("running the VM (steps)", total=step) as bar:
        witness = prove_step(build, arrays, step, node, progress=lambda k: bar.update(completed=k))
    output.write_text(witness.to_json() + "\n")
    summary = {"witness": str(output), "step": step, "node": node,
               "pre_hash": "0x" + witness.pre_hash.hex(), "post_hash": "0x" + witness.post_hash.hex()}
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(f"wrote {output}: step {step}, pre {summary['pre_hash']}, post {summary['post_hash']}")


PROMPT_HELP = ("A build of an onnxruntime-genai model: the task is the generation from this text "
               "(instead of --input).")
IGNORE_EOS_HELP = ("With --prompt: generate all --max-new-tokens tokens, past the model's end-of-sequence token "
                   "(genai_config.json's eos_token_id); by default the generation, and so its claim, stops at it.")


def _task_inputs(build, paths: list[Path] | None, prompt: str | None, max_new_tokens: int,
                 ignore_eos: bool = False, claim: Path | None = None):
    """(the task's build view, its inputs): the build and --input's arrays, or for --prompt the
    generation view (opmlc/dispute/generation.py) and the prompt's token ids. A generation
    covers the tokens made: up to its end-of-sequence token (unless ignore_eos), or, against a
    claim, the claim's."""
    if prompt is None:
        if ignore_eos:
            raise OpmlcError("--ignore-eos is for a generation (--prompt)")
        return build, _load_inputs(build, paths or [])
    if paths:
        raise OpmlcError("--prompt replaces --input for a generation; pass one or the other")
    from opmlc.dispute.generation import generation_of, prompt_inputs
    from opmlc.genai.generate import genai_record
    from opmlc.genai.tokenizer import load_tokenizer

    ids = load_tokenizer(genai_record(build)["folder"]).encode(prompt)
    made = None
    if claim is not None:
        try:
            made = len(json.loads(Path(claim).read_text())["generation"]["generated_ids"])
        except (OSError, ValueError, KeyError, TypeError):
            made = None  # read_claim names what is wrong with the file
    gb = generation_of(build, ids, max_new_tokens, not ignore_eos, made)
    return gb, prompt_inputs(gb, ids)


def _load_inputs(build, paths: list[Path]) -> list[np.ndarray]:
    from opmlc.api import load_input

    recs = build.manifest["inputs"]
    if len(paths) != len(recs):
        raise OpmlcError(f"the model takes {len(recs)} input(s) {[r['name'] for r in recs]}, got {len(paths)} --input")
    return [load_input(p, r["name"], build.graph.values[r["value"]].type) for p, r in zip(paths, recs, strict=True)]


@app.command("demo")
@user_errors
def demo_cmd(
    model: Annotated[Path | None, typer.Option("--model", help="ONNX model (default: models/digits_mlp.onnx).")] = None,
    liar: Annotated[str, typer.Option("--liar", help="Who lies: server, challenger or none.")] = "server",
    lie_node: Annotated[int | None, typer.Option("--lie-node", help="The node whose output the liar alters (default: the last).")] = None,
    input: Annotated[list[Path] | None, typer.Option("--input", "-i", help="A .npy per model input (default: a sample).")] = None,
    rpc: Annotated[str | None, typer.Option("--rpc", help="JSON-RPC URL of a node; default: the embedded chain.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help='Print {"winner", "rounds_phase1", "rounds_phase2", "gas_total", "vm_steps" (the challenger\'s), '
                     '"vm_steps_server", "credited", "seconds"}.')
    ] = False,
    record: Annotated[
        Path | None, typer.Option("--record", help="Write the game's moves, with their gas and both clocks, read back from "
                                  "the chain, as JSON for `opmlc report`.")
    ] = None,
    weights: Annotated[str | None, typer.Option(
        "--weights", help="Compile with quantized weights: int8 or int4 (as `opmlc compile --weights`).")] = None,
    block_size: Annotated[int | None, typer.Option(
        "--block-size", help="With --weights: elements sharing one scale (a power of two ≥ 16).")] = None,
    prompt: Annotated[str | None, typer.Option(
        "--prompt", help="An onnxruntime-genai model (--model FOLDER): dispute the generation from this text.")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="With --prompt: tokens generated.")] = 8,
    lie_step: Annotated[int | None, typer.Option(
        "--lie-step", help="With --prompt: the decoding step the liar alters (default: the last); --lie-node is then "
        "a node of that step.")] = None,
    max_context: Annotated[int | None, typer.Option(
        "--max-context", help="With --prompt: the compile's context (as `opmlc compile --max-context`).")] = None,
    lie_part: Annotated[int | None, typer.Option(
        "--lie-part", help="Put the lie in this part of the --lie-node node, split by the step budget (see `opmlc "
        "inspect`).")] = None,
    step_budget: Annotated[int | None, typer.Option(
        "--step-budget", help="Compile with this step budget per VM task (as `opmlc compile --step-budget`).")] = None,
    ignore_eos: Annotated[bool, typer.Option("--ignore-eos", help=IGNORE_EOS_HELP)] = False,
) -> None:
    """Compile, deploy, request, submit (lying as asked), dispute and settle: opML end to end.

    With --prompt, the task is a text generation (an onnxruntime-genai model): the claim commits
    to the prompt's ids, the generated ids and every decoding step's trace, and the bisection
    runs over (decoding step, node) pairs.

    A Requester, a Server and a Challenger play on the embedded chain (or --rpc URL). At the end:
    who won, the bisection rounds of each phase, the gas of the dispute, the VM steps the
    challenger ran, and the wall time.
    """
    import sys as _sys

    from rich.console import Console

    from opmlc import progress
    from opmlc.dispute.demo import run_demo
    from opmlc.frontend.weights import check_format

    try:
        check_format(weights, block_size)
    except ValueError as exc:
        raise OpmlcError(str(exc)) from None
    console = progress.console() or Console(stderr=True)  # the bars' console, so that lines and bars interleave
    say = (lambda _m: None) if as_json else (lambda m: console.print(f"[bold cyan]•[/] {m}"))
    arrays = None
    if input:
        from opmlc.frontend import lower_model

        graph = lower_model(model or Path(__file__).resolve().parents[1] / "models" / "digits_mlp.onnx").graph
        from opmlc.api import load_input

        if len(input) != len(graph.inputs):
            raise OpmlcError(f"the model takes {len(graph.inputs)} input(s), got {len(input)} --input")
        arrays = [load_input(p, graph.values[v].name, graph.values[v].type) for p, v in zip(input, graph.inputs, strict=True)]
    if prompt is not None and input:
        raise OpmlcError("--prompt replaces --input for a generation; pass one or the other")
    result = run_demo(model, liar, rpc, lie_node, arrays, say, record=record, weights=weights, block_size=block_size,
                      prompt=prompt, max_new_tokens=max_new_tokens, lie_step=lie_step, max_context=max_context,
                      lie_part=lie_part, step_budget=step_budget, ignore_eos=ignore_eos)
    if as_json:
        typer.echo(json.dumps(result))
        return
    _sys.stdout.flush()
    typer.echo(f"winner: {result['winner']}" + (f" ({result.get('reason')})" if result.get("reason") else ""))
    typer.echo(f"rounds: {result['rounds_phase1']} over nodes, "
               + (f"{result['rounds_parts']} over parts, " if result.get("rounds_parts") else "")
               + f"{result['rounds_phase2']} over VM steps"
               + (f" (node {result['node']}" + (f", part {result['part']}" if result.get("part") is not None else "")
                  + f", step {result['step']})" if result.get("node") is not None else ""))
    typer.echo(f"gas of the dispute: {result['gas_total']:,}; VM steps run by the challenger: {result['vm_steps']:,}")
    if result.get("decoding_step") is not None:
        typer.echo(f"disputed: decoding step {result['decoding_step']}, its node {result['step_node']}")
    typer.echo(f"wall time: {result['seconds']} s")
    if record is not None:
        typer.echo(f"game record: {record}" if result["winner"] != "none" else "no game was played: nothing recorded")


@app.command("report")
@user_errors
def report_cmd(
    dispute: Annotated[Path, typer.Argument(help="A dispute trace (`opmlc prove --claim`) or a game record (`opmlc demo --record`).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The picture to write: .svg, .png or .html.")],
) -> None:
    """Draw a dispute: phase 1 over the nodes, phase 2 over the steps, every move's gas and clocks.

    Phase 1's interval over the graph's nodes narrows round by round to the disputed node; for a
    node split by the step budget, the descent over its parts narrows to the disputed part;
    phase 2's interval over that task's VM steps narrows to the one step MIPS.sol executes. A game record (from the
    chain) adds each move's gas and both parties' clocks; an off-chain trace has neither. The
    format follows the suffix of -o: SVG, PNG (through cairosvg) or an HTML page with the SVG.
    """
    from opmlc import report

    d = report.load(dispute)
    report.write(d, output)
    rounds = [len(d.phase1) - 1] + ([len(d.parts) - 1] if d.parts_log2 else []) + [max(len(d.phase2) - 1, 0)]
    typer.echo(f"wrote {output}: {' + '.join(map(str, rounds))} rounds, the {d.winner} wins")


@app.command("verify-step")
@user_errors
def verify_step_cmd(
    witness: Annotated[Path, typer.Argument(help="A witness from `opmlc prove --step`.")],
    rpc: Annotated[str | None, typer.Option("--rpc", help="JSON-RPC URL of a node; default: the embedded chain.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print {contract_post_hash, vm_post_hash, equal, gas, cancun_transaction_gas, prague_transaction_gas, chain}; gas is execution gas.")] = False,
) -> None:
    """Execute a witnessed step with MIPS.sol on a chain and compare with the VM's post-state hash.

    Deploys MIPS.sol (on the embedded chain by default), calls step(pre_state, proof), and exits 0
    only if the contract's post-state hash equals the witness's. "Execution gas" is the gas spent
    inside MIPS.step (measured in the EVM by GasMeter.sol): the same figure on every chain and
    fork, unlike a receipt's gas, which Prague's calldata floor raises.
    """
    from toolchain.chain import call, connect, deploy, execution_gas
    from vm.witness import StepWitness

    try:
        w = StepWitness.from_json(witness.read_text())
    except FileNotFoundError:
        raise OpmlcError(f"{witness}: no such file; write a witness with `opmlc prove --step`") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise OpmlcError(f"{witness}: not a step witness (JSON with 0x-hex pre_state, proof, pre_hash, post_hash)") from None
    chain = connect(rpc)
    mips = deploy(chain, "MIPS", reuse=True)
    fn = mips.functions.step(w.pre_state, w.proof)
    post = bytes(call(fn))
    m = execution_gas(chain, fn)
    equal = post == w.post_hash
    doc = {"contract_post_hash": "0x" + post.hex(), "vm_post_hash": "0x" + w.post_hash.hex(), "equal": equal,
           "gas": m.execution, "cancun_transaction_gas": m.cancun_transaction,
           "prague_transaction_gas": m.prague_transaction, "chain": chain.describe()}
    if as_json:
        typer.echo(json.dumps(doc))
    else:
        typer.echo(f"contract post-state hash {doc['contract_post_hash']}")
        typer.echo(f"VM post-state hash       {doc['vm_post_hash']}")
        typer.echo(f"{'equal' if equal else 'DIFFERENT'}; execution gas {m.execution} on the {doc['chain']}")
        typer.echo(f"  (gas spent inside MIPS.step, the same on every chain; as a whole transaction "
                   f"{m.cancun_transaction} under Cancun, {m.prague_transaction} under Prague's calldata floor)")
    raise typer.Exit(0 if equal else 1)


@app.command("claim")
@user_errors
def claim_cmd(
    build_dir: Annotated[Path, typer.Argument(help="A build directory from `opmlc compile`.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the claim JSON.")],
    input: Annotated[list[Path] | None, typer.Option("--input", "-i", help="A .npy file per model input, in order.")] = None,
    tamper_node: Annotated[
        int | None, typer.Option("--tamper-node", help="Claim a wrong output for node K (for tests and demos).")
    ] = None,
    prompt: Annotated[str | None, typer.Option("--prompt", help=PROMPT_HELP)] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="With --prompt: tokens generated.")] = 16,
    tamper_step: Annotated[int | None, typer.Option(
        "--tamper-step", help="With --prompt: --tamper-node K is node K of this decoding step.")] = None,
    ignore_eos: Annotated[bool, typer.Option("--ignore-eos", help=IGNORE_EOS_HELP)] = False,
) -> None:
    """Write the claim a server posts for these inputs: every value root and the final trace.

    The claim is honest unless --tamper-node K changes node K's output (for tests and demos).
    With --prompt, the claim is for the generation from that text: it commits to the prompt's
    token ids, the generated ids (listed under "generation") and every decoding step's values.
    """
    from opmlc.api import quantize_inputs
    from opmlc.artifact import Build
    from opmlc.dispute.claims import make_claim
    from opmlc.dispute.graph_trace import Tamper
    from opmlc.tasks import check_node

    build, arrays = _task_inputs(Build.load(build_dir), input, prompt, max_new_tokens, ignore_eos)
    if tamper_step is not None:
        if prompt is None:
            raise OpmlcError("--tamper-step is for a generation (--prompt)")
        tamper_node = build.node_of(tamper_step, build.k - 1 if tamper_node is None else tamper_node)
    check_node(build, tamper_node)
    q = quantize_inputs(build, arrays)
    claim = make_claim(build, q, None if tamper_node is None else Tamper(tamper_node))
    output.write_text(json.dumps(claim, indent=1) + "\n")
    typer.echo(f"wrote {output}: output root {claim['output_root']}, final trace {claim['final_trace']}")


@app.command("conformance")
@user_errors
def conformance_cmd(
    op: Annotated[list[str] | None, typer.Option("--op", help="Only the cases of this ONNX op (repeatable).")] = None,
    native: Annotated[bool, typer.Option("--native", help="Also run each case natively; it must match the interpreter bit for bit.")] = False,
    cases: Annotated[bool, typer.Option("--cases", help="List every case with its status and reason.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"passed", "failed", "unsupported", "total", "ops"} (+ "cases").')] = False,
) -> None:
    """Run the ONNX backend node test cases (built offline by onnx) through opmlc.

    Each case is compiled (shape inputs bound as constants, bits calibrated on the case's own
    inputs), run on the golden interpreter (and natively with --native), and compared with the
    expected outputs under the tolerance rule of opmlc/conformance.py (docs/CONFORMANCE.md).
    Every case counts as passed, failed or unsupported.
    """
    from opmlc import conformance, progress

    with progress.task("conformance cases") as bar:
        report = conformance.run(op, native, progress=lambda k, n: bar.update(completed=k, total=n))
    if as_json:
        typer.echo(json.dumps(report.to_json(cases=cases)))
        return
    if cases:
        for r in report.results:
            typer.echo(f"{r.status:<12} {r.name}  {r.detail}")
    for name, c in report.per_op().items():
        typer.echo(f"{name:<28} passed {c['passed']:>4}  failed {c['failed']:>3}  unsupported {c['unsupported']:>4}")
    t = report.totals()
    typer.echo(f"total: {t['passed']} passed, {t['failed']} failed, {t['unsupported']} unsupported of {t['total']} cases")


@app.command("inspect")
@user_errors
def inspect_cmd(
    build_dir: Annotated[Path, typer.Argument(help="A build directory from `opmlc compile`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest summary as JSON.")] = False,
) -> None:
    """Summarise a build: its model, inputs, outputs, ops and weights."""
    from collections import Counter

    from opmlc.artifact import Build

    build = Build.load(build_dir)
    m, g = build.manifest, build.graph
    ops = Counter(n.op for n in g.nodes)
    weight_bytes = sum(g.values[v].type.nbytes for v in g.initializers)
    summary = {
        "model": m["model"],
        "opmlc_version": m["opmlc_version"],
        "inputs": [{k: r[k] for k in ("name", "dtype", "shape", "frac")} for r in m["inputs"]],
        "outputs": [{k: r[k] for k in ("name", "dtype", "shape", "frac")} for r in m["outputs"]],
        "nodes": len(g.nodes),
        "ops": dict(sorted(ops.items())),
        "initializers": len(g.initializers),
        "weight_bytes": weight_bytes,
    }
    q = m.get("quantization", {})
    summary["quantization"] = {k: q[k] for k in ("method", "default_frac", "input_ranges") if k in q}
    if "weights" in m:  # --weights: the format and the error it introduced
        summary["weights"] = m["weights"]
    for key in ("program",):
        if key in m:
            summary[key] = {k: v for k, v in m[key].items() if k != "tasks"}
            summary[key]["whole_graph_task"] = m[key]["tasks"]["whole"] is not None
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(f"model     {m['model']['file']} (sha256 {m['model']['sha256'][:16]}…, opset {m['model']['opset']})")
    for r in summary["inputs"]:
        typer.echo(f"input     {r['name']}: {r['dtype']}<{r['frac']}>{r['shape']}")
    for r in summary["outputs"]:
        typer.echo(f"output    {r['name']}: {r['dtype']}<{r['frac']}>{r['shape']}")
    typer.echo(f"nodes     {len(g.nodes)}: " + ", ".join(f"{op}×{n}" for op, n in sorted(ops.items())))
    typer.echo(f"weights   {len(g.initializers)} tensors, {weight_bytes} bytes")
    if "weights" in m:
        typer.echo("          " + _weights_line(m["weights"]))
    if q.get("method") == "analysis":
        typer.echo("bits      by range analysis, inputs assumed in " + ", ".join(
            f"{k} [{lo:g}, {hi:g}]" for k, (lo, hi) in q.get("input_ranges", {}).items()))
    elif q:
        typer.echo(f"bits      {q.get('default_frac')} everywhere (--frac-bits) but where overridden")
    if "program" in m:
        p = m["program"]
        typer.echo(f"program   {p.get('elf')} sha256 {p.get('sha256', '')[:16]}… entry {p.get('entry')}")
        if p["tasks"]["whole"] is None:
            typer.echo("tasks     one per node (--node K): the values exceed the 2 GiB of a whole-graph task")


@app.command("ops")
@user_errors
def ops_cmd(
    as_json: Annotated[bool, typer.Option("--json", help='Print a list of {"domain", "op", "versions", "opsets"}.')] = False,
) -> None:
    """List the ONNX ops opmlc compiles: domain, op, the opsets accepted and the op's versions.

    Read from the frontend's lowering rules (opmlc/frontend/rules). An op of the default domain
    is accepted in every opset the loader takes; "versions" are the op's definitions in force
    across that range (each one the rule handles). Ops of ai.onnx.ml take their own domain's
    versions. An op without a rule still compiles where all its inputs are constants: it is
    folded at compile time. `opmlc conformance` measures how well each op matches ONNX's tests.
    """
    from opmlc.frontend.supported import supported_ops

    ops = supported_ops()
    if as_json:
        typer.echo(json.dumps([o.to_json() for o in ops]))
        return
    for o in ops:
        opsets = f"opsets {o.opsets[0]}–{o.opsets[1]}" if o.opsets else "any opset"
        typer.echo(f"{o.domain:<11} {o.op:<26} {opsets:<14} versions {', '.join(map(str, o.versions)) or '—'}")
    by_domain = {d: sum(o.domain == d for o in ops) for d in sorted({o.domain for o in ops})}
    typer.echo(f"{len(ops)} ops: " + ", ".join(f"{n} in {d}" for d, n in by_domain.items()))


from opmlc.cli_chain import add_commands  # noqa: E402 - deploy, register, request, result, serve, watch

add_commands(app, user_errors, _load_inputs)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        typer.echo(f"opmlc {__version__}")
        raise typer.Exit(0)


def main() -> None:
    app(prog_name="opmlc")


if __name__ == "__main__":
    main()
    sys.exit(0)
