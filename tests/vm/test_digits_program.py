"""The VM runs a real compiled model (the digits MLP) exactly as unicorn does.

Whole-graph and per-node tasks: exit code, instruction count and output bytes equal unicorn's
(toolchain/unicorn_ref.py), the output region's root is the tensor root of those bytes, and the
fast path reaches the same final state hash as stepping. Inputs and weights are spliced lazily
from the build's tensor store.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from vm.loader import WHOLE_GRAPH, base_root, load_task
from vm.merkle import subtree_root
from vm.run import run
from vm.step import step

MODEL = Path(__file__).resolve().parents[2] / "models" / "digits_mlp.onnx"


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    artifact = pytest.importorskip("opmlc.artifact")
    pytest.importorskip("opmlc.backend.program")
    unicorn_ref = pytest.importorskip("toolchain.unicorn_ref")
    out = tmp_path_factory.mktemp("digits")
    artifact.compile_model(MODEL, out)
    manifest = json.loads((out / "manifest.json").read_text())
    return out, manifest, unicorn_ref


def task_map(manifest: dict, node: int) -> dict[int, tuple[int, int]]:
    """value → (addr, size) in the task's map, parsed from the manifest's text."""
    tasks = manifest["program"]["tasks"]
    text = (tasks["whole"] if node == WHOLE_GRAPH else tasks["nodes"][node])["map"]
    out = {}
    for item in text.split():
        value, rest = item.split("@")
        addr, size = rest.split("+")
        out[int(value)] = (int(addr, 16), int(size, 16))
    return out


def task_inputs(build_dir: Path, manifest: dict, node: int, rng: random.Random):
    """(addr, size, root) per region with data, the store, and the same as bytes for unicorn."""
    regions = task_map(manifest, node)
    roots = {i["value"]: bytes.fromhex(i["root"][2:]) for i in manifest["initializers"]}
    store: dict[bytes, bytes] = {}
    for root in roots.values():
        store[root] = (build_dir / "tensors" / f"{root.hex()}.bin").read_bytes()
    outputs = {o["value"] for o in manifest["outputs"]}
    spliced, raw = [], []
    for value, (addr, size) in sorted(regions.items()):
        if value in roots:
            root = roots[value]
        elif node == WHOLE_GRAPH and value not in {i["value"] for i in manifest["inputs"]}:
            continue  # computed by the task itself
        elif node != WHOLE_GRAPH and value in outputs:
            continue
        else:  # a graph input, or any intermediate a single node might read
            n = min(size, 4 * 64)
            data = b"".join(
                (rng.randrange(-(1 << 17), 1 << 17) & 0xFFFFFFFF).to_bytes(4, "big")
                for _ in range(n // 4)
            ) + bytes(size - n)
            root = subtree_root(data)
            store[root] = data
        spliced.append((addr, size, root))
        raw.append((addr, store[root]))
    return spliced, store, raw


@pytest.mark.parametrize("node", [WHOLE_GRAPH, 0, 1, 2])
def test_vm_matches_unicorn_on_the_digits_mlp(build, node):
    build_dir, manifest, unicorn_ref = build
    elf = (build_dir / manifest["program"]["elf"]).read_bytes()
    spliced, store, raw = task_inputs(build_dir, manifest, node, random.Random(node))
    regions = task_map(manifest, node)
    table = {v: addr for v, (addr, _) in regions.items()}
    out_v = manifest["outputs"][0]["value"]
    out = dict(zip(("addr", "size"), regions.get(out_v, (0, 32)), strict=True))

    fast = load_task(elf, node, spliced, store, table)
    slow = load_task(elf, node, spliced, store, table)
    n = run(fast, 10_000_000)
    while not slow.exited:
        step(slow)
    ref = unicorn_ref.run_elf(elf, node, raw, [(out["addr"], out["size"])],
                              table=[table.get(v, 0) for v in range(manifest["n_values"])])

    assert fast.exited and fast.exit_code == 0 == ref.exit_code
    assert n == slow.step == ref.instructions
    assert fast.hash() == slow.hash()
    if node in (WHOLE_GRAPH, 2):  # tasks that compute the graph output
        got = fast.memory.read_region(out["addr"], out["size"])
        assert got == ref.outputs[0]
        assert fast.memory.region_root(out["addr"], out["size"]) == subtree_root(got)


def test_base_roots_differ_per_node_and_ignore_inputs(build):
    build_dir, manifest, _ = build
    elf = (build_dir / manifest["program"]["elf"]).read_bytes()
    roots = {base_root(elf, k, {v: a for v, (a, _) in task_map(manifest, k).items()})
             for k in (WHOLE_GRAPH, 0, 1, 2)}
    assert len(roots) == 4
    tasks = manifest["program"]["tasks"]
    recorded = [tasks["whole"]["base_root"], *(tasks["nodes"][k]["base_root"] for k in (0, 1, 2))]
    assert roots == {bytes.fromhex(r[2:]) for r in recorded}  # the manifest's roots: image + descriptor
