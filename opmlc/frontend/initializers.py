"""The model's initializers, read one at a time: inline ones from the proto, external ones
(ONNX external data, the `.onnx` + `.onnx.data` pair of every model over 2 GB) as read-only
memory maps of their data file.

frontend/load.py parses the model without its external data and checks every reference here
(`check_external`): the location is relative to the model's folder and stays inside it, the
file exists and holds offset + length bytes. The lowering then asks `WeightSource.array(name)`
for a weight when a rule needs it; an external weight is a fresh map of its own bytes, unmapped
when the caller drops the array, so the pages read for one weight leave the process's resident
set with it and compile's memory stays the quantized weights plus the weight at hand.

`model_sha256` hashes the .onnx file followed by every external data file it names (in order of
first reference), streamed, so a build's model hash covers the weights wherever they live.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from opmlc.errors import ModelError

# ONNX element types whose external bytes are a plain little-endian array numpy can view; the
# rest (bfloat16, float8, packed int4, strings) are decoded by onnx, one tensor at a time
_VIEWABLE = {
    onnx.TensorProto.FLOAT: "<f4", onnx.TensorProto.DOUBLE: "<f8", onnx.TensorProto.FLOAT16: "<f2",
    onnx.TensorProto.INT8: "i1", onnx.TensorProto.UINT8: "u1", onnx.TensorProto.INT16: "<i2",
    onnx.TensorProto.UINT16: "<u2", onnx.TensorProto.INT32: "<i4", onnx.TensorProto.UINT32: "<u4",
    onnx.TensorProto.INT64: "<i8", onnx.TensorProto.UINT64: "<u8", onnx.TensorProto.BOOL: "?",
}
HASH_CHUNK = 1 << 22
INLINE_LIMIT = 1 << 16  # external tensors up to this many bytes are read into the proto (shape tensors)


def is_external(t: onnx.TensorProto) -> bool:
    return t.data_location == onnx.TensorProto.EXTERNAL


def _info(t: onnx.TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in t.external_data}


def nbytes(t: onnx.TensorProto) -> int | None:
    """Bytes of a tensor's raw encoding, None where it is not a fixed-width array."""
    dt = _VIEWABLE.get(t.data_type)
    if dt is None:
        return None
    return int(np.prod(t.dims, dtype=np.int64)) * np.dtype(dt).itemsize


def external_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Initializers and Constant node values whose data is external (main graph)."""
    yield from (t for t in model.graph.initializer if is_external(t))
    for n in model.graph.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR and is_external(a.t):
                yield a.t


def check_external(model: onnx.ModelProto, path: Path) -> None:
    """Every external reference of `model` (read from `path`) is a location inside the model's
    folder naming a regular file that holds the tensor's bytes; else a one-line ModelError."""
    folder = path.parent
    sizes: dict[Path, int] = {}
    for t in external_tensors(model):
        info = _info(t)
        loc = info.get("location", "")
        where = f"{path}: tensor {t.name!r}: external data {loc!r}"
        file = resolve(folder, loc, where)
        if file not in sizes:
            if not file.is_file():
                raise ModelError(f"{where}: no such file beside the model ({file}); copy the model's "
                                 "data file into its folder")
            sizes[file] = file.stat().st_size
        try:
            offset, length = int(info.get("offset", 0)), info.get("length")
            length = int(length) if length is not None else None
        except ValueError:
            raise ModelError(f"{where}: offset/length are not integers; re-export the model") from None
        want = nbytes(t)
        if length is None:
            length = want
        if length is None or offset < 0 or length < 0:
            continue  # a non-array tensor (bfloat16 and such): onnx checks it when it is read
        if want is not None and length != want:
            raise ModelError(f"{where}: length {length} but {list(t.dims)} elements need {want} bytes; "
                             "re-export the model")
        if offset + length > sizes[file]:
            raise ModelError(f"{where}: {file.name} has {sizes[file]} bytes, the tensor needs bytes "
                             f"{offset}..{offset + length}; the data file is truncated or not this model's")


def resolve(folder: Path, location: str, where: str) -> Path:
    """The file an external location names: relative to the model's folder, never outside it."""
    if not location or os.path.isabs(location) or Path(location).drive:
        raise ModelError(f"{where}: the location must be a file name relative to the model's folder")
    norm = os.path.normpath(location)
    if norm == ".." or norm.startswith(".." + os.sep) or norm.startswith("../"):
        raise ModelError(f"{where}: the location points outside the model's folder ({folder}); "
                         "keep the data file beside the model")
    return folder / norm


def inline_small(model: onnx.ModelProto, path: Path, limit: int = INLINE_LIMIT) -> None:
    """Read external tensors of at most `limit` bytes into the proto: shape inference and constant
    folding need the values of shape tensors, which some exporters also write out."""
    for t in external_tensors(model):
        size = nbytes(t)
        if size is not None and size <= limit:
            arr = read_tensor(t, path.parent)
            t.CopyFrom(numpy_helper.from_array(np.array(arr), t.name))


def read_tensor(t: onnx.TensorProto, folder: Path) -> np.ndarray:
    """A tensor's values: inline ones decoded, external fixed-width arrays as a read-only map of
    their bytes (a copy for the rare types numpy cannot view)."""
    if not is_external(t):
        return numpy_helper.to_array(t)
    info = _info(t)
    file = folder / os.path.normpath(info["location"])
    dt = _VIEWABLE.get(t.data_type)
    if dt is None:
        copy = onnx.TensorProto()
        copy.CopyFrom(t)
        onnx.external_data_helper.load_external_data_for_tensor(copy, str(folder))
        return numpy_helper.to_array(copy)
    shape = tuple(int(d) for d in t.dims)
    count = int(np.prod(shape, dtype=np.int64))
    offset = int(info.get("offset", 0))
    if count == 0:
        return np.zeros(shape, np.dtype(dt).newbyteorder("="))
    size = count * np.dtype(dt).itemsize
    start = offset - offset % mmap.ALLOCATIONGRANULARITY  # maps begin on a granule
    with open(file, "rb") as f:
        mm = mmap.mmap(f.fileno(), offset + size - start, access=mmap.ACCESS_READ, offset=start)
    # the array holds the map; it is unmapped when the last view of it goes
    return np.frombuffer(mm, dtype=dt, count=count, offset=offset - start).reshape(shape)


class WeightSource:
    """Initializer values by name, read when asked and not kept (see the module docstring)."""

    def __init__(self, model: onnx.ModelProto, path: Path) -> None:
        self.folder = path.parent
        self.tensors = {t.name: t for t in model.graph.initializer}

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def array(self, name: str) -> np.ndarray:
        return read_tensor(self.tensors[name], self.folder)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self.tensors[name].dims)


def model_sha256(model: onnx.ModelProto, path: Path) -> str:
    """sha256 of the .onnx file's bytes, then of each external data file it references (whole
    files, in order of first reference), streamed: equal to sha256(file) for a model without
    external data."""
    h = hashlib.sha256()
    files = [path]
    for t in external_tensors(model):
        f = path.parent / os.path.normpath(_info(t)["location"])
        if f not in files:
            files.append(f)
    for f in files:
        with open(f, "rb") as fh:
            while chunk := fh.read(HASH_CHUNK):
                h.update(chunk)
    return h.hexdigest()
