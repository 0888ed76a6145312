"""A build is checked before it is used (opmlc/buildcheck.py): a damaged model.elf, tensor or
graph.json, and every truncated or mutated manifest, is a one-line BuildError on load — for
every backend — and never a traceback. The mutations are systematic: every field of the
manifest deleted, given a value of another type, or (where the build's files bind it) changed
within its type; graph.json truncated, and mutated with its recorded sha256 made to match."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from models.make_sklearn_models import iris
from opmlc.artifact import Build, compile_model
from opmlc.cli import app
from opmlc.errors import BuildError
from tests.conftest import MODELS as MODEL_DIR

# Fields that describe the build without any other file depending on them (model source,
# compile options, names); changing them within their type leaves a loadable build.
# program.log2_step_budget: another budget whose plan of parts is the build's (checked) is a budget
# the build meets, as its program and base roots are the same
DESCRIPTIVE = ("model", "quantization", "input_shapes", "batch_defaulted", "graph", "program.ir_sha256",
               "program.log2_step_budget")
OTHER_TYPES = (None, True, 1.5, "x", [], {}, -1)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    d = tmp_path_factory.mktemp("integrity") / "iris"
    compile_model(MODEL_DIR / "iris_tree.onnx", d)
    return d


@pytest.fixture
def build_dir(good, tmp_path):
    d = tmp_path / "b"
    shutil.copytree(good, d)
    return d


def load_error(d) -> str | None:
    """The BuildError's message, or None if the build loads; any other exception fails the test."""
    try:
        Build.load(d)
    except BuildError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg, msg
        return msg
    return None


def leaves(doc, path=()):
    """(path, value) of every value in a JSON document, containers included."""
    yield path, doc
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from leaves(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from leaves(v, (*path, i))


def replaced(doc, path, value=..., delete=False):
    out = copy.deepcopy(doc)
    node = out
    for k in path[:-1]:
        node = node[k]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


def dotted(path) -> str:
    return ".".join(str(k) for k in path)


def same_type_change(v):
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, int):
        return v + 1
    if isinstance(v, str):
        if v.startswith("0x") and len(v) > 2:
            return v[:-1] + ("1" if v[-1] != "1" else "2")
        if len(v) == 64:  # a sha256
            return v[:-1] + ("1" if v[-1] != "1" else "2")
        return v + "x"
    if isinstance(v, list) and v:
        return v[:-1]
    return None


def test_a_fresh_build_loads(good):
    assert load_error(good) is None


def test_truncated_manifests_are_one_line_errors(build_dir):
    text = (build_dir / "manifest.json").read_text()
    for cut in range(0, len(text) - 2, max(1, len(text) // 80)):
        (build_dir / "manifest.json").write_text(text[:cut])
        assert load_error(build_dir) is not None, cut


@pytest.mark.parametrize("doc", [[], None, "manifest", 1, {}, {"format": 1}])
def test_manifests_of_the_wrong_shape_are_one_line_errors(build_dir, doc):
    (build_dir / "manifest.json").write_text(json.dumps(doc))
    assert load_error(build_dir) is not None


def test_every_mutated_manifest_field_is_a_one_line_error(build_dir):
    path = build_dir / "manifest.json"
    original = json.loads(path.read_text())
    tried = 0
    for where, value in list(leaves(original)):
        if not where:
            continue
        mutations = [replaced(original, where, v) for v in OTHER_TYPES if type(v) is not type(value)]
        if isinstance(where[-1], str):
            mutations.append(replaced(original, where, delete=True))
        path_text = dotted(where)
        if not any(path_text == d or path_text.startswith(d + ".") for d in DESCRIPTIVE) and where[-1] != "name":
            change = same_type_change(value)
            if change is not None and change != value:
                mutations.append(replaced(original, where, change))
        for doc in mutations:
            if dotted(where).startswith(("quantization.per_tensor", "quantization.given", "quantization.declared_ranges",
                                         "input_shapes")) and isinstance(doc, dict):
                continue  # maps of compile options: any keys are allowed
            path.write_text(json.dumps(doc))
            assert load_error(build_dir) is not None, f"a manifest with {dotted(where)} mutated loaded"
            tried += 1
    assert tried > 300  # every field, several ways


def test_graph_json_truncated_or_mutated_is_a_one_line_error(build_dir):
    gpath, mpath = build_dir / "graph.json", build_dir / "manifest.json"
    text, manifest = gpath.read_text(), json.loads(mpath.read_text())
    for cut in range(0, len(text) - 2, max(1, len(text) // 40)):
        gpath.write_text(text[:cut])
        assert "graph.json" in load_error(build_dir)
    gpath.write_text(text.replace("tree_ensemble", "tree_ensemblf", 1))  # one byte, sha256 as recorded
    assert "sha256" in load_error(build_dir)
    # an attacker who also fixes the recorded sha256: the structure is still checked, never a traceback
    original = json.loads(text)
    refused = loaded = 0
    for where, value in list(leaves(original)):
        if not where:
            continue
        for v in [*(v for v in OTHER_TYPES if type(v) is not type(value)), same_type_change(value)]:
            doc = json.dumps(replaced(original, where, v))
            gpath.write_text(doc)
            mpath.write_text(json.dumps({**manifest, "graph_sha256": hashlib.sha256(doc.encode()).hexdigest()}))
            if load_error(build_dir) is None:
                loaded += 1  # only descriptive fields, such as a node's name
            else:
                refused += 1
    print(f"graph.json mutations with a matching sha256: {refused} refused, {loaded} harmless")
    assert refused > 10 * max(loaded, 1)


def test_a_damaged_tensor_or_elf_stops_every_backend(build_dir, tmp_path):
    x, _ = iris()
    np.save(tmp_path / "x.npy", x[:1])
    runner = CliRunner()
    elf = build_dir / "model.elf"
    good_elf = elf.read_bytes()
    elf.write_bytes(good_elf[:-1] + bytes([good_elf[-1] ^ 1]))
    for backend in ("interp", "native", "vm"):
        r = runner.invoke(app, ["run", str(build_dir), "-i", str(tmp_path / "x.npy"), "--backend", backend])
        assert r.exit_code == 2 and "model.elf" in r.stderr and "sha256" in r.stderr, (backend, r.output)
        assert "\n" not in r.stderr.strip()
    elf.write_bytes(good_elf)
    tensor = sorted((build_dir / "tensors").iterdir())[0]
    data = tensor.read_bytes()
    tensor.write_bytes(bytes([data[0] ^ 1]) + data[1:])
    assert "does not hash to its root" in load_error(build_dir)
    tensor.unlink()
    assert "not in the store" in load_error(build_dir)


@pytest.mark.parametrize("command", ["run", "inspect"])
def test_the_cli_on_a_manifest_of_a_list_or_without_outputs_is_exit_2(build_dir, tmp_path, command):
    x, _ = iris()
    np.save(tmp_path / "x.npy", x[:1])
    manifest = json.loads((build_dir / "manifest.json").read_text())
    args = [command, str(build_dir)] + (["-i", str(tmp_path / "x.npy")] if command == "run" else [])
    for doc, words in (([], "not a manifest"), ({k: v for k, v in manifest.items() if k != "outputs"}, "outputs is missing")):
        (build_dir / "manifest.json").write_text(json.dumps(doc))
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2 and words in r.stderr and r.stderr.count("\n") == 1, r.output
