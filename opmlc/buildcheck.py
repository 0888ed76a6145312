"""A build is checked before it is used: what `Build.load` runs for every backend and command.

The manifest is the build's public record (opmlc/artifact.py), and every other file of the build
is checked against it: the manifest's fields and their types, graph.json (by the sha256 the
manifest records, then parsed and verified, its IR text equal to the manifest's `ir`, its
inputs, outputs, initializers and counts equal to the manifest's), every initializer by its root (the stored bytes hash to the root the manifest
names and have the padded size of the tensor's type), and model.elf by its sha256 (its entry
point, and each task's map and base root, recomputed from the graph and the image, equal to the
manifest's). Anything else is a BuildError of
one line naming the file and the field; a malformed build never reaches a backend and never
gives a traceback.

Costs: hashing the initializers at native speed (vm/native_hash.py: a few hundred MB/s per
core; 0.2 s per MB on the pure-Python fallback); the base roots one memory root, then the few
descriptor pages a task changes, per task.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from opmlc.commit import PAGED_TENSOR, from_bytes, paged_root, region_size
from opmlc.errors import BuildError
from opmlc.ir.graph import Graph
from opmlc.ir.initializers import Initializers, PackedI4
from opmlc.ir.types import DType, TensorType

HEX32 = re.compile(r"0x[0-9a-f]{64}\Z")
SHA256 = re.compile(r"[0-9a-f]{64}\Z")
ADDR = re.compile(r"0x[0-9a-f]{8}\Z")

# The manifest's schema: a dict maps required fields to their specs, [spec] is a list of spec,
# {str: spec} a dict of any keys; int excludes bool. Fields not named here are allowed (and
# ignored), so that a later version can add some.
IO = {"name": str, "value": int, "dtype": str, "shape": [int], "frac": int}
SCHEMA = {
    "format": int,
    "opmlc_version": str,
    "model": {"file": str, "sha256": SHA256, "opset": int},
    "quantization": {"method": str, "default_frac": int, "given": {str: int}, "per_tensor": {str: int},
                     "input_ranges": {str: [float]}, "declared_ranges": {str: [float]}},
    "input_shapes": {str: [int]},
    "batch_defaulted": [str],
    "graph": str,
    "graph_sha256": SHA256,
    "inputs": [IO],
    "outputs": [IO],
    "initializers": [{**IO, "root": HEX32}],
    "n_values": int,
    "n_nodes": int,
    "ir": str,
    "program": {"elf": str, "sha256": SHA256, "entry": ADDR, "ir_sha256": SHA256,
                "log2_step_budget": int,
                "tasks": {"whole": (None, {"map": str, "base_root": HEX32}),  # a tuple: alternatives
                          "nodes": [{"map": str, "base_root": HEX32}]}},
}


# The optional "weights" record of a build compiled with --weights (artifact.compile_model).
WEIGHTS = {"format": re.compile(r"int(8|4)\Z"), "block_size": (int, None), "quantized": int,
           "parameters": int, "error": ({str: (float, int)}, None)}


KIND = re.compile(r"(input|init|node)\Z")
GRAPH_SCHEMA = {
    "name": str,
    "values": [{"id": int, "name": str, "kind": KIND, "dtype": str, "shape": [int], "frac": int}],
    "nodes": [{"op": str, "inputs": [int], "output": int, "attrs": {str: object}, "name": str}],
    "inputs": [int],
    "outputs": [int],
}


def check_schema(value: Any, spec: Any, where: str) -> None:
    """Raise ValueError naming the first field of `value` that does not fit `spec`."""
    if isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) is str:
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be an object")
        for k, v in value.items():
            check_schema(v, spec[str], f"{where}.{k}")
    elif isinstance(spec, dict):
        if not isinstance(value, dict):
            raise ValueError(f"{where or 'the manifest'} must be an object")
        for k, sub in spec.items():
            if k not in value:
                raise ValueError(f"{where + '.' if where else ''}{k} is missing")
            check_schema(value[k], sub, f"{where + '.' if where else ''}{k}")
    elif isinstance(spec, list):
        if not isinstance(value, list):
            raise ValueError(f"{where} must be a list")
        for i, v in enumerate(value):
            check_schema(v, spec[0], f"{where}[{i}]")
    elif isinstance(spec, re.Pattern):
        if not isinstance(value, str) or not spec.match(value):
            raise ValueError(f"{where} must be a string like {spec.pattern!r}")
    elif isinstance(spec, tuple):  # alternatives
        for alt in spec:
            try:
                check_schema(value, alt, where)
                return
            except ValueError:
                pass
        raise ValueError(f"{where} must be one of {', '.join(getattr(a, '__name__', str(a)) for a in spec)}")
    elif spec is None:
        if value is not None:
            raise ValueError(f"{where} must be null")
    elif spec is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{where} must be an integer")
    elif not isinstance(value, spec):
        raise ValueError(f"{where} must be a {spec.__name__}")


def read_json(path: Path, directory: Path, sha256: str | None = None) -> Any:
    """The JSON in `path`; with `sha256`, only if the file's bytes hash to it."""
    try:
        raw = path.read_bytes()
        if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
            raise BuildError(f"{path}: does not match the sha256 in the manifest (corrupted?); compile the model again")
        return json.loads(raw)
    except FileNotFoundError:
        raise BuildError(f"{directory}: {path.name} is missing; compile the model again") from None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise BuildError(f"{path}: not readable JSON ({type(exc).__name__}); compile the model again") from None


def check_manifest(manifest: Any, directory: Path) -> None:
    try:
        check_schema(manifest, SCHEMA, "")
        if "weights" in manifest:
            check_schema(manifest["weights"], WEIGHTS, "weights")
    except ValueError as exc:
        raise BuildError(f"{directory / 'manifest.json'}: {exc}; compile the model again") from None
    if not manifest["outputs"]:
        raise BuildError(f"{directory / 'manifest.json'}: outputs is empty; compile the model again")
    ranges = manifest["quantization"]["input_ranges"]  # what `run` checks inputs against
    names = sorted(r["name"] for r in manifest["inputs"])
    if sorted(ranges) != names or any(len(r) != 2 or not r[0] <= r[1] for r in ranges.values()):
        raise BuildError(f"{directory / 'manifest.json'}: quantization.input_ranges must give [lo, hi] for each "
                         f"input {names}; compile the model again")


class VerifiedFiles:
    """The files of a build already checked on this host, remembered in native/verified.json by
    their size, mtime, ctime and inode, so that a large build is hashed once, not on every load
    (the costs above are paid once per file; docs/DESIGN.md, "The native build ahead of time").

    Sound against any change made through the file system: a write changes mtime and ctime, and
    ctime cannot be set back. The "racy" case (a file changed within the timestamp tick in which
    it was recorded, so that its stat is unchanged) is excluded as git excludes it: an entry
    counts only if the file's mtime is older than the record's own, and `save` writes the record
    again until its mtime is newer than every entry's. Not a defence against someone who can
    write the build: they can rewrite the record too (as they could the manifest). The record is
    best effort: a build directory that cannot be written is checked in full on every load.
    """

    NAME = "native/verified.json"

    def __init__(self, directory: Path, read: bool = True) -> None:
        """`read=False`: remember nothing from earlier loads (every file is checked)."""
        self.directory = directory
        self.path = directory / self.NAME
        self.files: dict[str, list[int]] = {}
        self.mtime_ns = 0
        self.dirty = False
        if not read:
            return
        try:
            doc = json.loads(self.path.read_bytes())
            self.mtime_ns = self.path.stat().st_mtime_ns
            if isinstance(doc, dict) and isinstance(doc.get("files"), dict):
                self.files = doc["files"]
        except (OSError, ValueError):
            pass

    def _stat(self, path: Path) -> list[int] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]

    def fresh(self, path: Path) -> bool:
        """Whether `path` is as it was when it was checked."""
        st = self._stat(path)
        return (st is not None and self.files.get(path.relative_to(self.directory).as_posix()) == st
                and st[1] < self.mtime_ns and st[2] < self.mtime_ns)

    def mark(self, path: Path) -> None:
        """Remember `path`, just checked."""
        st = self._stat(path)
        if st is not None:
            self.files[path.relative_to(self.directory).as_posix()] = st
            self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        newest = max(max(st[1], st[2]) for st in self.files.values())
        text = (json.dumps({"files": self.files}, separators=(",", ":")) + "\n").encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            for _ in range(50):  # a coarse clock ticks within milliseconds
                tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
                tmp.write_bytes(text)
                os.replace(tmp, self.path)
                self.mtime_ns = self.path.stat().st_mtime_ns
                # a file dated in the future stays unremembered (checked on every load) until
                # the clock passes it: never wait for that
                if self.mtime_ns > newest or newest - self.mtime_ns > 50_000_000:
                    break
                time.sleep(0.002)
        except OSError:
            return
        self.dirty = False


def load_initializers(manifest: dict, graph_json: Any, directory: Path, store,
                      verified: VerifiedFiles | None = None,
                      mapped: dict[int, np.ndarray] | None = None) -> Initializers:
    """Every initializer the manifest lists, read from the store and checked against its root.

    With `verified`, a store file already checked (and unchanged since) is not hashed again, and
    newly checked files are remembered. With `mapped` (the views of native/weights.bin,
    native_build.mapped_weights), the initializers are those views once weights.bin (with
    native/host.json, its layout) is known to hold exactly the store's tensors: checked element
    by element against them, or remembered as checked. Otherwise they are arrays read from the
    store. A weights file that disagrees with the store is left unused, with a note. The one-byte
    and packed types (i8, i4, bool: DType.byte_oriented) are read-only maps of their store files
    (checked against their roots), an i4 weight held packed (ir/initializers.py PackedI4).
    """
    bad = f"{directory / 'manifest.json'}: initializers"
    values = graph_json.get("values") if isinstance(graph_json, dict) else None
    if not isinstance(values, list):
        raise BuildError(f"{directory / 'graph.json'}: values must be a list; compile the model again")
    verified = verified if verified is not None else VerifiedFiles(directory, read=False)
    layout: list[Path] = []
    if mapped is not None:
        from opmlc.backend.native_build import HOST, NATIVE_DIR, WEIGHTS

        layout = [directory / NATIVE_DIR / HOST, directory / NATIVE_DIR / WEIGHTS]
    mapped_checked = mapped is not None and all(verified.fresh(p) for p in layout)
    inits = {}
    for i, rec in enumerate(manifest["initializers"]):
        try:
            t = TensorType.from_json(rec)
        except (ValueError, KeyError, TypeError) as exc:
            raise BuildError(f"{bad}[{i}]: {exc}; compile the model again") from None
        if rec["value"] in inits:
            raise BuildError(f"{bad}[{i}]: value {rec['value']} is listed twice; compile the model again")
        root = bytes.fromhex(rec["root"][2:])
        # the page roots (a large tensor's) are checked and remembered with the encoding
        files = [store.path(root)] + ([store.pages_path(root)] if region_size(t) >= PAGED_TENSOR else [])
        data = None
        if not all(verified.fresh(f) for f in files):
            data = _store_view(store, root, directory)  # memory-mapped: hashed without a copy of the file
            if len(data) != region_size(t) or paged_root(data) != (root, store.page_roots(root)):
                raise BuildError(f"{directory}: tensor {rec['root']} ({rec['name']!r}) does not hash to its root, "
                                 f"has the wrong size for {t} or wrong page roots; the store is corrupted, compile "
                                 "the model again")
            for f in files:
                verified.mark(f)
        if t.dtype.byte_oriented:
            # the native buffer is the encoding's first nbytes: the checked store file, mapped
            # read-only (no copy; an i4 weight stays packed, ir/initializers.py)
            data = data if data is not None else _store_view(store, root, directory)
            held_bytes = np.frombuffer(data, np.uint8 if t.dtype is DType.I4 else t.dtype.numpy,
                                       count=t.nbytes if t.dtype is DType.I4 else t.numel)
            inits[rec["value"]] = (PackedI4(held_bytes, t.shape) if t.dtype is DType.I4
                                   else held_bytes.reshape(t.shape))
            continue
        # a store file that hashes to its root holds the bytes weights.bin was checked against
        m = None if mapped is None else mapped.get(rec["value"])
        if mapped_checked and m is not None:
            inits[rec["value"]] = m
            continue
        if data is None:
            data = _store_view(store, root, directory)
        arr = from_bytes(data, t)
        if m is not None:
            if m.dtype == arr.dtype and m.shape == arr.shape and m.tobytes() == arr.tobytes():  # NaN bits too
                arr = m
            else:
                from opmlc.backend.native_build import note

                note(f"{layout[-1]} does not hold the tensor store's {rec['name']!r} (corrupted?); "
                     "using the store (compile the model again to restore it)")
                mapped = None
        arr.flags.writeable = False  # as the mapped ones: the build's weights, never changed by a caller
        inits[rec["value"]] = arr
    if mapped is not None and not mapped_checked:
        for p in layout:
            verified.mark(p)
    return Initializers(inits)


def _store_view(store, root: bytes, directory: Path) -> memoryview:
    try:
        return store.view(root)
    except KeyError as exc:
        raise BuildError(f"{directory}: {exc.args[0]}; compile the model again") from None


def load_graph(graph_json: Any, inits: dict[int, np.ndarray], directory: Path) -> Graph:
    try:
        check_schema(graph_json, GRAPH_SCHEMA, "")
        graph = Graph.from_json(graph_json, inits)
        n_in, n_init = len(graph.inputs), len(graph.initializers)
        for v in graph.values:
            want = "input" if v.id < n_in else "init" if v.id < n_in + n_init else "node"
            if v.kind != want:
                raise ValueError(f"value %{v.id} is of kind {v.kind!r}, not {want!r}")
        return graph
    except Exception as exc:  # noqa: BLE001 — any failure to parse or verify means a malformed graph.json
        text = (str(exc).strip() or type(exc).__name__).splitlines()[0][:200]
        raise BuildError(f"{directory / 'graph.json'}: malformed ({type(exc).__name__}: {text}); "
                         "compile the model again") from None


def check_graph_against_manifest(manifest: dict, graph: Graph, directory: Path) -> None:
    def fail(what: str) -> BuildError:
        return BuildError(f"{directory}: graph.json and manifest.json disagree on {what}; compile the model again")

    if graph.to_text() != manifest["ir"]:
        raise fail("the IR")
    if manifest["n_values"] != len(graph.values) or manifest["n_nodes"] != len(graph.nodes):
        raise fail("the number of values or nodes")
    for key, ids in (("inputs", graph.inputs), ("outputs", graph.outputs)):
        recs = manifest[key]
        if [r["value"] for r in recs] != list(ids):
            raise fail(key)
        for r in recs:
            if {k: r[k] for k in ("dtype", "shape", "frac")} != graph.values[r["value"]].type.to_json():
                raise fail(f"the type of {key[:-1]} {r['name']!r}")
    for r in manifest["initializers"]:
        if graph.values[r["value"]].type.to_json() != {k: r[k] for k in ("dtype", "shape", "frac")}:
            raise fail(f"the type of initializer {r['name']!r}")


def program_unchanged(manifest: dict, directory: Path, verified: VerifiedFiles) -> bool:
    """Whether manifest.json and the ELF are as they were when check_program last passed on them
    (graph.json is checked against the manifest on every load): then Build.load skips it, since
    recomputing the base roots needs the ELF parser (lief), whose import alone costs a second."""
    name = manifest["program"]["elf"]
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        return False
    return all(verified.fresh(f) for f in (directory / "manifest.json", directory / name))


def mark_program(manifest: dict, directory: Path, verified: VerifiedFiles) -> None:
    """Remember manifest.json and the ELF as checked (check_program passed on them)."""
    for f in (directory / "manifest.json", directory / manifest["program"]["elf"]):
        verified.mark(f)


def check_program(manifest: dict, graph: Graph, directory: Path) -> None:
    """model.elf by its sha256; its entry and every task's map and base root against the manifest."""
    from opmlc.backend.parts import MAX_LOG2_BUDGET, MIN_LOG2_BUDGET, plan
    from opmlc.backend.program import tasks_record
    from opmlc.backend.regions import node_maps, whole_graph_map
    from vm.loader import ElfError, parse_elf

    program = manifest["program"]
    name = program["elf"]
    if Path(name).name != name or name in ("", ".", ".."):
        raise BuildError(f"{directory / 'manifest.json'}: program.elf must be a file name in the build; "
                         "compile the model again")
    path = directory / name
    try:
        elf = path.read_bytes()
    except OSError:
        raise BuildError(f"{path}: missing; compile the model again") from None
    if hashlib.sha256(elf).hexdigest() != program["sha256"]:
        raise BuildError(f"{path}: does not match the sha256 in the manifest (corrupted?); compile the model again")
    tasks = program["tasks"]
    try:
        maps = node_maps(graph)
    except BuildError as exc:
        raise BuildError(f"{directory / 'graph.json'}: {exc}; compile the model again") from None
    whole = whole_graph_map(graph)
    if not MIN_LOG2_BUDGET <= program["log2_step_budget"] <= MAX_LOG2_BUDGET:
        raise BuildError(f"{directory / 'manifest.json'}: program.log2_step_budget must be {MIN_LOG2_BUDGET}.."
                         f"{MAX_LOG2_BUDGET}; compile the model again")
    try:
        parts = plan(graph, program["log2_step_budget"])
    except BuildError as exc:
        raise BuildError(f"{directory / 'graph.json'}: {exc}; compile the model again") from None
    given = ([] if tasks["whole"] is None else [tasks["whole"]]) + tasks["nodes"]
    if [r["map"] for r in given] != [m.to_text() for m in ([] if whole is None else [whole]) + maps]:
        raise BuildError(f"{directory / 'manifest.json'}: program.tasks: the task maps do not match the graph; "
                         "compile the model again")
    try:
        entry = parse_elf(elf).entry
        roots = tasks_record(elf, whole, maps, parts)
    except (ElfError, ValueError) as exc:
        raise BuildError(f"{path}: {exc}; compile the model again") from None
    if program["entry"] != f"0x{entry:08x}" or tasks != roots:
        raise BuildError(f"{directory / 'manifest.json'}: program.entry or the tasks' base roots do not match "
                         f"{name}; compile the model again")
