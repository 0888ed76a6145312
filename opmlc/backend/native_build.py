"""The native part of a build, ahead of time: this host's object code and native-endian weights.

Place in the pipeline: `opmlc compile` (opmlc/artifact.py) calls `write_native` after writing the
build's portable files; `Build.load` maps the weights (`mapped_weights`, checked by
opmlc/buildcheck.py) and `Build.native` opens a `NativeSession` over `load_program`.

    DIR/native/host.json     this host's description, the digest of the code generator that
                             wrote the object, the object's cache key and sha256, the
                             weights file's layout: one slot per initializer (value, root, dtype,
                             shape, offset, nbytes)
    DIR/native/<key>.o       the host module (native.host_module: what native_program compiles) compiled for this
                             host by `target.emit_host_object`
    DIR/native/weights.bin   every initializer of a multi-byte type (fx32, i32, i64, f32) in
                             native byte order, each slot 64-byte aligned; the one-byte and packed
                             types (i8, i4, bool) need no byte order: Build.load maps them
                             straight from the tensor store (buildcheck.load_initializers)
    DIR/native/derived.bin   the host kernels' derived buffers (kernels/native/__init__.py,
                             "Constant operands"), node by node, each 64-byte aligned: what every
                             region table would derive at load (≈ 3 s and 0.6 GB of private memory
                             for a 1.1B int4 build), mapped instead while the object is this
                             build's own (same host, same code generator: the same derive code)

Nothing under native/ is part of the model: it is derived from the portable files for one host
(another host rebuilds the object), so `compile --check` leaves it out of the comparison and the
manifest does not mention it. A missing, stale (another host, or another version of opmlc's code
generator) or damaged native/ never stops a run: the object is
then compiled again (JIT, cached in the user's cache directory, one note on stderr) and the
weights come from the tensor store.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from opmlc.backend.native import NativeSession, host_module, native_buffer, plain_layout
from opmlc.backend.target import (
    NativeProgram,
    cache_key,
    default_cache_dir,
    emit_host_object,
    host_description,
    load_native,
)
from opmlc.ir.graph import Graph
from opmlc.ir.types import TensorType

if TYPE_CHECKING:
    from opmlc.artifact import Build

NATIVE_DIR = "native"
HOST = "host.json"
WEIGHTS = "weights.bin"
DERIVED = "derived.bin"
ALIGN = 64  # a cache line: every slot starts on one, as numpy's own allocations do
FORMAT = 1


def generator_digest() -> str:
    """A digest of the code that generates the host module (opmlc/backend's sources, kernels
    included). An object written by other generator code computes the same bits (every kernel
    equals the interpreter) but may be slower: kernels improve between versions, and a build
    keeps the object compile wrote, so load_program compiles again when this differs."""
    global _GENERATOR
    if _GENERATOR is None:
        h = hashlib.sha256()
        root = Path(__file__).resolve().parent
        for path in sorted(root.rglob("*.py")):
            h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
        _GENERATOR = h.hexdigest()
    return _GENERATOR


_GENERATOR: str | None = None


def note(message: str) -> None:
    """One line on stderr: native/ is an optimisation, so its problems are notes, not errors."""
    print(f"opmlc: note: {message}", file=sys.stderr)


def _write_atomic(path: Path, write) -> None:
    """Write then rename, so that a reader sees a whole file or none."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_native(directory: str | Path, graph: Graph, roots: dict[int, str]) -> dict:
    """Compile the counting module for this host and lay out the weights; returns host.json.

    `roots` maps each initializer's value id to its root in the manifest ("0x…")."""
    from opmlc import progress

    out = Path(directory) / NATIVE_DIR
    out.mkdir(parents=True, exist_ok=True)
    module_ir = host_module(graph)
    host = host_description()
    key = cache_key(module_ir, host)
    obj = _cached_object(key)
    if obj is None:
        with progress.task("LLVM: compiling the native program for this host"):
            obj = emit_host_object(module_ir)
        _cache_object(key, obj)
    for old in out.glob("*.o"):  # one object per build: this host's
        old.unlink()
    _write_atomic(out / f"{key}.o", lambda f: f.write(obj))
    kept = []  # (value, type, native buffer) of each weights.bin slot
    for v_id, arr in graph.initializers.items():
        t = graph.values[v_id].type
        if t.dtype.byte_oriented:  # mapped from the tensor store's file as it is (no copy here)
            continue
        if not plain_layout(t):  # no such type yet: the session would convert it once
            continue
        kept.append((v_id, t, native_buffer(arr, t)))
    places, weights_sha256 = _write_aligned(out / WEIGHTS, (a for _v, _t, a in kept))
    slots = [{"value": v_id, "root": roots[v_id], **t.to_json(), "offset": offset, "nbytes": nbytes}
             for (v_id, t, _a), (offset, nbytes) in zip(kept, places, strict=True)]
    derived, derived_sha256 = _write_derived(out / DERIVED, graph)
    record = {
        "format": FORMAT,
        "host": host,
        "generator": generator_digest(),
        "byteorder": sys.byteorder,
        "key": key,
        "object": f"{key}.o",
        "object_sha256": hashlib.sha256(obj).hexdigest(),
        "weights": WEIGHTS,
        "weights_sha256": weights_sha256,
        "slots": slots,
        "derived": derived,
        "derived_sha256": derived_sha256,
    }
    _write_atomic(out / HOST, lambda f: f.write((json.dumps(record, indent=1) + "\n").encode()))
    return record


def _write_aligned(path: Path, arrays: Iterable[np.ndarray]) -> tuple[list[tuple[int, int]], str]:
    """Write `arrays` to `path` end to end, each from an ALIGN boundary (zero bytes between),
    taking each from the iterable only when it is written; returns each one's (offset, nbytes)
    and the file's sha256."""
    places: list[tuple[int, int]] = []
    digest = hashlib.sha256()

    def write(f) -> None:
        pos = 0
        for a in arrays:
            data = np.ascontiguousarray(a).view(np.uint8).reshape(-1)
            pad = bytes(-pos % ALIGN)
            for chunk in (pad, data):
                f.write(chunk)
                digest.update(chunk)
            pos += len(pad)
            places.append((pos, data.nbytes))
            pos += data.nbytes

    _write_atomic(path, write)
    return places, digest.hexdigest()


def _write_derived(path: Path, graph: Graph) -> tuple[list[dict], str]:
    """native/derived.bin: each derived buffer from the initializers as a region table holds
    them (native_buffer: an i4 weight packed), made one node at a time (a large model's copies
    are never all in memory); returns its slots ({"node", "offset", "nbytes"}) and its sha256."""
    from opmlc.backend.kernels.native import HOST_KERNELS, node_facts

    nodes: list[int] = []

    def buffers() -> Iterator[np.ndarray]:
        for index, node in enumerate(graph.nodes):
            facts = node_facts(graph, index)
            if facts.get("derived"):
                nodes.append(index)
                yield HOST_KERNELS[node.op].derive(facts, [
                    native_buffer(graph.initializers[v], graph.values[v].type) if v in graph.initializers else None
                    for v in node.inputs])

    places, sha256 = _write_aligned(path, buffers())
    return [{"node": i, "offset": o, "nbytes": n} for i, (o, n) in zip(nodes, places, strict=True)], sha256


def _map_derived(build: Build, record: dict) -> list[np.ndarray] | None:
    """Read-only views of native/derived.bin, one per slot, when the slots are well formed (nodes
    in increasing order whose ops have a derive, aligned, inside the file) and the file hashes to
    host.json's sha256 (hashed once: remembered in native/verified.json); else None, with a note
    when the build has slots. Which nodes have a buffer is not recomputed (their facts take a
    pass over each weight): the caller uses these only with the build's own object, which the
    same generator compiled from the same graph when it wrote the file."""
    from opmlc.backend.kernels.native import HOST_KERNELS
    from opmlc.buildcheck import VerifiedFiles

    g = build.graph
    slots = record.get("derived")
    if not isinstance(slots, list):  # written before derived.bin
        return None
    if not slots:
        return []
    path = build.directory / NATIVE_DIR / DERIVED
    try:
        size = path.stat().st_size
        nodes = [s["node"] for s in slots]
        ok = (all(isinstance(i, int) and 0 <= i < len(g.nodes) for i in nodes) and nodes == sorted(set(nodes))
              and all(getattr(HOST_KERNELS.get(g.nodes[i].op), "derive", None) is not None for i in nodes)
              and all(isinstance(s["offset"], int) and isinstance(s["nbytes"], int) and s["offset"] % ALIGN == 0
                      and 0 <= s["offset"] and 0 < s["nbytes"] and s["offset"] + s["nbytes"] <= size for s in slots))
    except (OSError, KeyError, TypeError):
        ok = False
    verified = VerifiedFiles(build.directory)
    if ok and not verified.fresh(path):
        with open(path, "rb") as f:
            ok = hashlib.file_digest(f, "sha256").hexdigest() == record.get("derived_sha256")
        if ok:
            verified.mark(path)
            verified.save()
    if not ok:
        what = "is missing" if not path.exists() else "does not hold this build's derived buffers (damaged?)"
        note(f"{path} {what}; deriving them at load (compile the model again to restore it)")
        return None
    mm = np.memmap(path, mode="r")
    return [mm[s["offset"]:s["offset"] + s["nbytes"]] for s in slots]


# The user's native cache (target.default_cache_dir, where the JIT keeps its objects under the
# same keys): a model compiled or run before on this host is not compiled again. The JIT trusts
# that directory as it is; so does this.
def _cached_object(key: str) -> bytes | None:
    try:
        return (default_cache_dir() / f"{key}.o").read_bytes() or None
    except OSError:
        return None


def _cache_object(key: str, obj: bytes) -> None:
    path = default_cache_dir() / f"{key}.o"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, lambda f: f.write(obj))
    except OSError:
        pass


def read_host(directory: Path) -> dict | None:
    """native/host.json if it is readable and of this format, else None."""
    try:
        record = json.loads((directory / NATIVE_DIR / HOST).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return None
    return record


def _slot_ok(s: object, inits: dict[int, dict], size: int) -> bool:
    """A slot names an initializer of the manifest (same root and type) and lies in the file."""
    try:
        r = inits[s["value"]]
        t = TensorType.from_json(s)
        nbytes = int(np.prod(t.shape, dtype=np.int64)) * np.dtype(t.dtype.numpy).itemsize
        return (all(s[k] == r[k] for k in ("root", "dtype", "shape", "frac")) and isinstance(s["offset"], int)
                and s["offset"] % ALIGN == 0 and s["nbytes"] == nbytes and s["offset"] + nbytes <= size)
    except (KeyError, TypeError, ValueError):
        return False


def mapped_weights(directory: Path, manifest: dict) -> dict[int, np.ndarray] | None:
    """Read-only views of native/weights.bin by value id, one per slot that names an initializer
    of the manifest (same root and type), or None when the file is absent, laid out for another
    byte order, or any slot is not such. Values without a slot (the one-byte and packed types,
    mapped from the tensor store) are not mapped here.

    The views say nothing about the bytes: the caller (buildcheck.load_initializers) trusts them
    only once they were checked against the tensor store (remembered in native/verified.json)."""
    record = read_host(directory)
    if record is None or record.get("byteorder") != sys.byteorder or not isinstance(record.get("slots"), list):
        return None
    path = directory / NATIVE_DIR / WEIGHTS
    try:
        size = path.stat().st_size
        mm = np.memmap(path, mode="r") if size else None
    except (OSError, ValueError):
        return None
    inits = {r["value"]: r for r in manifest["initializers"]}
    views = {}
    for s in record["slots"]:
        if not _slot_ok(s, inits, size):
            return None
        t = TensorType.from_json(s)
        if t.dtype.byte_oriented:  # an older build's slot: the store's file is mapped instead
            continue
        views[s["value"]] = (np.ndarray(t.shape, dtype=t.dtype.numpy, buffer=mm, offset=s["offset"]) if s["nbytes"]
                             else np.zeros(t.shape, dtype=t.dtype.numpy))
    return views


def load_program(build: Build) -> NativeProgram:
    """The build's native program: its object for this host, loaded without the optimizer or code
    generation; otherwise (no object, another host, a damaged object) compiled again by
    target.load_native (cached in the user's cache directory), with a note on stderr."""
    directory = build.directory
    record = read_host(directory)
    reason = None
    if record is None:
        reason = f"{directory / NATIVE_DIR / HOST} is missing or unreadable"
    elif record.get("host") != host_description():
        reason = f"{directory / NATIVE_DIR} was compiled for another host ({str(record.get('host'))[:40]}…)"
    elif record.get("generator") != generator_digest():
        reason = f"{directory / NATIVE_DIR} was compiled by another version of opmlc's code generator"
    else:
        name = str(record.get("object"))
        path = directory / NATIVE_DIR / name
        try:
            obj = path.read_bytes() if Path(name).name == name else None
        except OSError:
            obj = None
        if obj is None:
            reason = f"{path} is missing"
        elif hashlib.sha256(obj).hexdigest() != record.get("object_sha256"):
            reason = f"{path} does not match its sha256 in {HOST} (corrupted?)"
        else:
            return NativeProgram.from_object(obj, str(record.get("key")))
    program = load_native(host_module(build.graph))
    if program.from_cache:
        note(f"{reason}; using the native program for this host compiled by an earlier run (cached)")
    else:
        note(f"{reason}; compiled the native program for this host again (JIT; cached for the next run)")
    return program



def derived_views(build: Build, program: NativeProgram) -> list[np.ndarray] | None:
    """The derived buffers of every region table over `build`'s weights that runs `program`:
    native/derived.bin's views (mapped once per Build, which holds them) when `program` is the
    build's own object (load_program), else None (the table derives them:
    kernels/native/__init__.py `derived_buffers`)."""
    if not program.from_object_file:
        return None
    if "_derived_views" not in build.__dict__:
        record = read_host(build.directory)
        build.__dict__["_derived_views"] = _map_derived(build, record) if record is not None else None
    return build.__dict__["_derived_views"]


def open_session(build: Build) -> NativeSession:
    """The build's native program over its buffers (the graph's initializers: the mapped weights
    when Build.load could use them)."""
    program = load_program(build)
    return NativeSession(program, build.graph, derived=derived_views(build, program))
