"""A build directory: what `opmlc compile` writes and every later command reads.

    DIR/manifest.json   model hash, inputs/outputs (shapes, fractional bits), initializer
                        roots, the IR text, the opmlc version (and, from the backend, the
                        program, its regions and its task roots)
    DIR/graph.json      the IR graph's structure (initializer data by root)
    DIR/tensors/        content-addressed store of initializer encodings (opmlc.store)

The manifest is the build's public record: users diff it in CI, and the dispute's model
commitment is derived from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from opmlc import __version__
from opmlc.commit import from_bytes, padded_bytes, tensor_root
from opmlc.errors import BuildError
from opmlc.frontend import QuantPolicy, lower_model
from opmlc.ir.graph import Graph
from opmlc.store import TensorStore

MANIFEST = "manifest.json"
GRAPH = "graph.json"
TENSORS = "tensors"
FORMAT = 1


@dataclass
class Build:
    directory: Path
    manifest: dict
    graph: Graph

    @property
    def store(self) -> TensorStore:
        return TensorStore(self.directory / TENSORS)

    @classmethod
    def load(cls, directory: str | Path) -> Build:
        directory = Path(directory)
        mpath = directory / MANIFEST
        if not mpath.is_file():
            raise BuildError(f"{directory}: not an opmlc build (no {MANIFEST}); run `opmlc compile MODEL -o {directory}`")
        try:
            manifest = json.loads(mpath.read_text())
            graph_json = json.loads((directory / GRAPH).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BuildError(f"{directory}: unreadable build ({exc.__class__.__name__}); compile it again") from None
        if manifest.get("format") != FORMAT or manifest.get("opmlc_version") != __version__:
            raise BuildError(
                f"{directory}: built by opmlc {manifest.get('opmlc_version')}, this is {__version__}; compile it again"
            )
        store = TensorStore(directory / TENSORS)
        inits = {}
        for rec in manifest["initializers"]:
            v = graph_json["values"][rec["value"]]
            from opmlc.ir.types import TensorType

            t = TensorType.from_json(v)
            try:
                inits[rec["value"]] = from_bytes(store.get(bytes.fromhex(rec["root"][2:])), t)
            except KeyError as exc:
                raise BuildError(f"{directory}: {exc.args[0]}; compile it again") from None
        return cls(directory, manifest, Graph.from_json(graph_json, inits))

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / GRAPH).write_text(json.dumps(self.graph.to_json(), indent=1) + "\n")
        (self.directory / MANIFEST).write_text(json.dumps(self.manifest, indent=2) + "\n")


def _io_record(graph: Graph, value_id: int, name: str) -> dict:
    v = graph.values[value_id]
    return {"name": name, "value": value_id, **v.type.to_json()}


def compile_model(
    model: str | Path,
    out_dir: str | Path,
    *,
    frac_bits: int = 16,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
) -> Build:
    """Compile an ONNX model into a build directory and return the loaded build."""
    model = Path(model)
    fe = lower_model(model, QuantPolicy(default=frac_bits), input_shapes)
    graph = fe.graph
    out_dir = Path(out_dir)
    store = TensorStore(out_dir / TENSORS)
    inits = []
    for v_id, data in graph.initializers.items():
        v = graph.values[v_id]
        root = store.put(padded_bytes(data, v.type))
        inits.append({"name": v.name, "value": v_id, **v.type.to_json(), "root": "0x" + root.hex()})
    manifest = {
        "format": FORMAT,
        "opmlc_version": __version__,
        "model": {"file": model.name, "sha256": fe.model_sha256, "opset": fe.opset},
        "quantization": {"default_frac": frac_bits},
        "graph": graph.name,
        "inputs": [_io_record(graph, v, n) for v, n in zip(graph.inputs, fe.input_names, strict=True)],
        "outputs": [_io_record(graph, v, n) for v, n in zip(graph.outputs, fe.output_names, strict=True)],
        "initializers": inits,
        "n_values": len(graph.values),
        "n_nodes": len(graph.nodes),
        "ir": graph.to_text(),
    }
    build = Build(out_dir, manifest, graph)
    build.save()
    return build


def initializer_root(build: Build, value_id: int) -> bytes:
    v = build.graph.values[value_id]
    return tensor_root(build.graph.initializers[value_id], v.type)
