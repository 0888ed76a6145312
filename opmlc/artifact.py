"""A build directory: what `opmlc compile` writes and every later command reads.

    DIR/manifest.json   model hash, inputs/outputs (shapes, fractional bits), initializer
                        roots, the IR text, the opmlc version (and, from the backend, the
                        program and each task's map and base root)
    DIR/graph.json      the IR graph's structure (initializer data by root; its sha256 in the
                        manifest)
    DIR/tensors/        content-addressed store of initializer encodings (opmlc.store)
    DIR/model.elf       the MIPS program (opmlc.backend.program), reproducible byte for byte
    DIR/native/         this host's part, not the model's (opmlc.backend.native_build): the
                        native object, the weights in native byte order (memory-mapped by
                        Build.load) and the record of files already checked

The manifest is the build's public record: users diff it in CI, and the dispute's model
commitment is derived from it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from opmlc import __version__
from opmlc.commit import padded_buffer
from opmlc.errors import BuildError
from opmlc.frontend import QuantPolicy, lower_model
from opmlc.frontend.calibrate import DEFAULT_FRAC
from opmlc.frontend.ranges import Analysis, input_ranges_of
from opmlc.ir.graph import Graph
from opmlc.store import TensorStore

if TYPE_CHECKING:
    from opmlc.backend.native import NativeSession

MANIFEST = "manifest.json"
GRAPH = "graph.json"
TENSORS = "tensors"
FORMAT = 1


@dataclass
class Build:
    directory: Path
    manifest: dict
    graph: Graph
    analysis: Analysis | None = None  # set by compile_model (not saved: the manifest has the bits)

    @property
    def store(self) -> TensorStore:
        return TensorStore(self.directory / TENSORS)

    @classmethod
    def load(cls, directory: str | Path) -> Build:
        """Load a build, checking every file against the manifest first (opmlc/buildcheck.py):
        a BuildError of one line for anything missing, malformed or corrupted."""
        from opmlc import buildcheck
        from opmlc.backend.native_build import mapped_weights

        directory = Path(directory)
        mpath = directory / MANIFEST
        if not mpath.is_file():
            raise BuildError(f"{directory}: not an opmlc build (no {MANIFEST}); run `opmlc compile MODEL -o {directory}`")
        manifest = buildcheck.read_json(mpath, directory)
        if not isinstance(manifest, dict):
            raise BuildError(f"{mpath}: not a manifest (a JSON object); compile the model again")
        if manifest.get("format") != FORMAT or manifest.get("opmlc_version") != __version__:
            raise BuildError(
                f"{directory}: built by opmlc {str(manifest.get('opmlc_version'))[:40]}, this is {__version__}; "
                "compile it again"
            )
        buildcheck.check_manifest(manifest, directory)
        graph_json = buildcheck.read_json(directory / GRAPH, directory, manifest["graph_sha256"])
        verified = buildcheck.VerifiedFiles(directory)
        inits = buildcheck.load_initializers(manifest, graph_json, directory, TensorStore(directory / TENSORS),
                                             verified, mapped_weights(directory, manifest))
        graph = buildcheck.load_graph(graph_json, inits, directory)
        buildcheck.check_graph_against_manifest(manifest, graph, directory)
        if not buildcheck.program_unchanged(manifest, directory, verified):
            buildcheck.check_program(manifest, graph, directory)
            buildcheck.mark_program(manifest, directory, verified)
        verified.save()
        return cls(directory, manifest, graph)

    @cached_property
    def native(self) -> NativeSession:
        """The native program with its buffers, loaded once per Build (what `opmlc.run(...,
        backend="native")` uses): the object compiled ahead of time, the mapped weights."""
        from opmlc.backend.native_build import open_session

        return open_session(self)

    def save(self) -> None:
        """Write graph.json and the manifest, which records graph.json's sha256."""
        self.directory.mkdir(parents=True, exist_ok=True)
        graph_text = json.dumps(self.graph.to_json(), indent=1) + "\n"
        self.manifest["graph_sha256"] = hashlib.sha256(graph_text.encode()).hexdigest()
        (self.directory / GRAPH).write_text(graph_text)
        (self.directory / MANIFEST).write_text(json.dumps(self.manifest, indent=2) + "\n")


def _io_record(graph: Graph, value_id: int, name: str) -> dict:
    v = graph.values[value_id]
    return {"name": name, "value": value_id, **v.type.to_json()}


def compile_model(
    model: str | Path,
    out_dir: str | Path,
    *,
    frac_bits: int | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    frac_overrides: dict[str, int] | None = None,
    input_ranges: dict[str, tuple[float, float]] | None = None,
    weights: str | None = None,
    block_size: int | None = None,
    max_context: int | None = None,
    step_budget: int | None = None,
) -> Build:
    """Compile an ONNX model into a build directory and return the loaded build.

    Without `frac_bits` each tensor's bits come from the range analysis (frontend/ranges.py)
    with the graph inputs in `input_ranges` (others: the documented default range); an explicit
    `frac_bits` gives every tensor those bits instead. `frac_overrides` (per ONNX tensor name,
    e.g. from opmlc.frontend.calibrate) take precedence over both. The manifest records the
    choice under "quantization"; `build.analysis` holds every tensor's analysed range.

    `weights` ("int8" or "int4"; `block_size` a power of two ≥ 16, default per channel for int8
    and 32 for int4) quantizes the constant weights of MatMul, Gemm, Conv and embedding Gathers
    (docs/DESIGN.md "Quantized weights"); the manifest records it under "weights", with the
    error introduced against the float weights.

    An onnxruntime-genai model (a folder with genai_config.json, or its decoder file) is
    compiled as one decoding step at static shapes (opmlc/genai/config.py): a context of
    `max_context` positions (default: the config's context length, capped), the key/value cache
    declared in ±KV_BOUND; the manifest records it under "genai".

    `step_budget` (a power of two, default 2^24) bounds every VM task's steps: nodes whose
    work exceeds it are split into parts (docs/DESIGN.md "Tasks: the step budget and node
    parts", "Partial sums"); the manifest records it as `program.log2_step_budget`. A genai step without an
    explicit budget gets the smallest one under which no node is split (a generation disputes
    whole step nodes: opmlc/dispute/generation.py)."""
    from opmlc.backend.parts import DEFAULT_LOG2_BUDGET, MAX_LOG2_BUDGET, MIN_LOG2_BUDGET
    from opmlc.backend.program import build_program
    from opmlc.errors import OpmlcError
    from opmlc.frontend.weights import check_format
    from opmlc.genai.config import find_config, model_file

    try:
        _, effective_block = check_format(weights, block_size)
    except ValueError as exc:
        raise OpmlcError(str(exc)) from None
    if step_budget is None:
        log2_budget = DEFAULT_LOG2_BUDGET
    else:
        log2_budget = int(step_budget).bit_length() - 1
        if step_budget <= 0 or step_budget != 1 << log2_budget or not MIN_LOG2_BUDGET <= log2_budget <= MAX_LOG2_BUDGET:
            raise OpmlcError(f"--step-budget {step_budget}: must be a power of two from 2^{MIN_LOG2_BUDGET} "
                             f"to 2^{MAX_LOG2_BUDGET} (default 2^{DEFAULT_LOG2_BUDGET})")
    model = model_file(model)
    genai = find_config(model)
    genai_record = None
    if genai is not None:
        given_shapes = dict(input_shapes or {})
        mask = given_shapes.get(genai.attention_mask)
        context = int(mask[-1]) if mask else genai.context(max_context)
        input_shapes = {**genai.input_shapes(context), **given_shapes}
        input_ranges = {**genai.input_ranges(), **(input_ranges or {})}
        genai_record = genai.record(context)
    elif max_context is not None:
        raise OpmlcError(f"--max-context: {model} is not an onnxruntime-genai model (no genai_config.json beside it)")
    given = dict(sorted((frac_overrides or {}).items()))
    ranges = {k: (float(lo), float(hi)) for k, (lo, hi) in sorted((input_ranges or {}).items())}
    policy = QuantPolicy(default=DEFAULT_FRAC if frac_bits is None else frac_bits, overrides=given,
                         analyse=frac_bits is None, input_ranges=ranges, weights=weights, block_size=block_size)
    fe = lower_model(model, policy, input_shapes)
    graph = fe.graph
    if step_budget is None:
        from opmlc.backend.native_build import note
        from opmlc.backend.parts import fitting_log2_budget

        log2_budget = fitting_log2_budget(graph)
        if log2_budget > DEFAULT_LOG2_BUDGET:
            note(f"a node cannot be split under the default step budget 2^{DEFAULT_LOG2_BUDGET}: "
                 f"this build's tasks run up to 2^{log2_budget} VM steps (recorded in the manifest)")
        if genai_record is not None:  # a generation's tasks are whole step nodes: no parts, no partial sums
            from opmlc.backend.parts import node_steps

            most = max((node_steps(graph, k) for k in range(len(graph.nodes))), default=0)
            while log2_budget < MAX_LOG2_BUDGET and most > 1 << log2_budget:
                log2_budget += 1
    from opmlc.backend.psums import split_reductions

    graph = split_reductions(graph, log2_budget)  # a long reduction: exact int64 partial sums
    program = build_program(graph, log2_budget)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    program_record = program.manifest_record()
    (out_dir / program_record["elf"]).write_bytes(program.elf)
    store = TensorStore(out_dir / TENSORS)
    inits = []
    for v_id, data in graph.initializers.items():
        v = graph.values[v_id]
        root = store.put(padded_buffer(data, v.type))  # one copy of a large weight, not two
        inits.append({"name": v.name, "value": v_id, **v.type.to_json(), "root": "0x" + root.hex()})
    manifest = {
        "format": FORMAT,
        "opmlc_version": __version__,
        "model": {"file": model.name, "sha256": fe.model_sha256, "opset": fe.opset},
        "quantization": {
            "method": "analysis" if frac_bits is None else "fixed",
            "default_frac": policy.default,
            "given": given,  # the caller's overrides (calibration), replayed by check_build
            "input_ranges": {k: list(v) for k, v in sorted(input_ranges_of(fe.analysis).items())},
            "declared_ranges": {k: list(v) for k, v in ranges.items()},
            "per_tensor": fe.policy.overrides,
        },
        "input_shapes": {k: list(v) for k, v in sorted((input_shapes or {}).items())},
        "batch_defaulted": fe.batch_defaulted,  # inputs whose open batch dim became 1 (announced)
        "graph": graph.name,
        "inputs": [_io_record(graph, v, n) for v, n in zip(graph.inputs, fe.input_names, strict=True)],
        "outputs": [_io_record(graph, v, n) for v, n in zip(graph.outputs, fe.output_names, strict=True)],
        "initializers": inits,
        "n_values": len(graph.values),
        "n_nodes": len(graph.nodes),
        "ir": graph.to_text(),
        "program": program_record,
    }
    if weights is not None:  # recorded only with --weights, so that other manifests stay as they were
        rep = fe.weights
        manifest["weights"] = {"format": weights, "block_size": effective_block, "quantized": rep.quantized,
                               "parameters": rep.parameters,
                               "error": rep.error.to_json() if rep.error is not None else None}
    if genai_record is not None:  # recorded only for onnxruntime-genai models
        manifest["genai"] = genai_record
    if fe.clipped_constants:  # recorded only when it happens, so that other manifests stay as they were
        manifest["quantization"]["clipped_constants"] = fe.clipped_constants
    build = Build(out_dir, manifest, graph)
    build.save()
    _write_native(build)
    build.analysis = fe.analysis
    return build


def _write_native(build: Build) -> None:
    """This host's native/ (opmlc/backend/native_build.py), with every file just written
    remembered as checked: the first run after compile hashes nothing."""
    from opmlc import buildcheck
    from opmlc.backend.native_build import DERIVED, HOST, NATIVE_DIR, WEIGHTS, write_native
    from opmlc.commit import padded_bytes

    d = build.directory
    write_native(d, build.graph, {r["value"]: r["root"] for r in build.manifest["initializers"]})
    verified = buildcheck.VerifiedFiles(d, read=False)
    for r in build.manifest["initializers"]:
        # the store keeps a file it already had (an earlier compile into this directory): it is
        # remembered only if it holds this compile's bytes (a compare, no hashing)
        path = build.store.path(bytes.fromhex(r["root"][2:]))
        v = build.graph.values[r["value"]]
        try:
            same = path.read_bytes() == padded_bytes(build.graph.initializers[v.id], v.type)
        except OSError:
            same = False
        if same:
            verified.mark(path)
            pages = build.store.pages_path(bytes.fromhex(r["root"][2:]))
            if pages.exists():  # store.put has just compared (or written) it
                verified.mark(pages)
    for name in (HOST, WEIGHTS, DERIVED):
        verified.mark(d / NATIVE_DIR / name)
    buildcheck.mark_program(build.manifest, d, verified)
    verified.save()


def check_build(model: str | Path, directory: str | Path) -> list[str]:
    """Rebuild `model` with the options recorded in `directory`; the files that differ."""
    import filecmp
    import tempfile

    from opmlc import buildcheck
    from opmlc.backend.native_build import NATIVE_DIR
    from opmlc.backend.parts import DEFAULT_LOG2_BUDGET

    # not Build.load: a build whose files are damaged is what --check reports, file by file
    directory = Path(directory)
    if not (directory / MANIFEST).is_file():
        raise BuildError(f"{directory}: not an opmlc build (no {MANIFEST}); run `opmlc compile MODEL -o {directory}`")
    m = buildcheck.read_json(directory / MANIFEST, directory)
    try:
        buildcheck.check_schema(m, {k: buildcheck.SCHEMA[k] for k in ("quantization", "input_shapes")}, "")
        if "weights" in m:
            buildcheck.check_schema(m["weights"], buildcheck.WEIGHTS, "weights")
    except ValueError as exc:
        raise BuildError(f"{directory / MANIFEST}: {exc}; compile the model again") from None
    q = m["quantization"]
    analysed = q.get("method") == "analysis"
    with tempfile.TemporaryDirectory() as tmp:
        compile_model(
            model,
            tmp,
            frac_bits=None if analysed else q["default_frac"],
            frac_overrides=q.get("given", q.get("per_tensor")),
            input_ranges={k: tuple(v) for k, v in q.get("declared_ranges", {}).items()},
            input_shapes={k: tuple(v) for k, v in m.get("input_shapes", {}).items()},
            weights=(m.get("weights") or {}).get("format"),
            block_size=(m.get("weights") or {}).get("block_size"),
            step_budget=1 << m.get("program", {}).get("log2_step_budget", DEFAULT_LOG2_BUDGET),
        )
        fresh = Path(tmp)

        def files(d: Path) -> set[str]:  # native/ is this host's, not the model's: never compared
            return {p.relative_to(d).as_posix() for p in d.rglob("*")
                    if p.is_file() and p.relative_to(d).parts[0] != NATIVE_DIR}

        names = sorted(files(fresh) | files(directory))
        return [
            n for n in names
            if not ((fresh / n).is_file() and (directory / n).is_file()
                    and filecmp.cmp(fresh / n, directory / n, shallow=False))
        ]
