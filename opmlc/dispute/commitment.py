"""The model commitment a TaskRegistry stores, derived from a build's manifest.

Mirrors the Solidity structs of docs/DESIGN.md "The dispute protocol": a `NodeInfo` leaf per
node (its task's base root and the regions of its operands and output in the node's own task
map, which the base root commits to through the descriptor) and the
`ModelCommitment` that names the node list, the trace template and the graph's shape.
Encodings are eth_abi's, the same as Solidity's `abi.encode`.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

from eth_abi import encode as abi_encode

from opmlc.artifact import Build
from opmlc.backend.regions import TaskMap
from opmlc.tasks import task_map
from vm.merkle import ZERO_LEAF, chunk_roots, hash_pair, height_of, keccak256, list_proof, list_root

NODE_INFO_TYPE = "(bytes32,uint32[],uint32[],uint8[],uint32,uint32,uint8,uint8)"
MODEL_COMMITMENT_TYPE = "(bytes32,bytes32,uint32,uint32,uint32,uint32,uint32,uint32,uint8)"


@dataclass(frozen=True)
class NodeInfo:
    base_root: bytes
    input_values: tuple[int, ...]
    input_addrs: tuple[int, ...]
    input_heights: tuple[int, ...]
    output_value: int
    output_addr: int
    output_height: int
    parts_log2: int = 0  # a split node: base_root is the list root of its parts' base roots

    def as_tuple(self) -> tuple:
        return tuple(list(x) if isinstance(x, tuple) else x for x in astuple(self))

    def leaf(self) -> bytes:
        return keccak256(abi_encode([NODE_INFO_TYPE], [self.as_tuple()]))


@dataclass(frozen=True)
class ModelCommitment:
    nodes_root: bytes
    trace_template: bytes
    n_nodes: int
    n_values: int
    n_inputs: int
    first_node_value: int
    output_value: int
    entry: int
    log2_step_budget: int

    def as_tuple(self) -> tuple:
        return astuple(self)

    def model_id(self) -> bytes:
        return keccak256(abi_encode([MODEL_COMMITMENT_TYPE], [self.as_tuple()]))


def node_infos(build: Build) -> list[NodeInfo]:
    memo = getattr(build, "commitment_memo", None)  # a generation view keeps its own (it never changes)
    if memo is not None and "infos" in memo:
        return memo["infos"]
    g = build.graph
    tasks = build.manifest["program"]["tasks"]["nodes"]
    infos = []
    for k, node in enumerate(g.nodes):
        ins = sorted(set(node.inputs))
        out = node.output
        parts = tasks[k].get("parts")
        m = task_map(build, k) if parts is None else TaskMap.from_text(k, parts["map"])
        base = (bytes.fromhex(tasks[k]["base_root"][2:]) if parts is None
                else list_root([bytes.fromhex(r[2:]) for r in parts["base_roots"]]))
        infos.append(NodeInfo(
            base_root=base,
            input_values=tuple(ins),
            input_addrs=tuple(m.region(v).addr for v in ins),
            input_heights=tuple(height_of(m.region(v).size) for v in ins),
            output_value=out,
            output_addr=m.region(out).addr,
            output_height=height_of(m.region(out).size),
            parts_log2=0 if parts is None else parts["log2"],
        ))
    if memo is not None:
        memo["infos"] = infos
    return infos


def node_leaves(build: Build) -> list[bytes]:
    """The node list's leaves (NodeInfo.leaf of every node), kept by a generation view."""
    memo = getattr(build, "commitment_memo", None)
    if memo is not None and "leaves" in memo:
        return memo["leaves"]
    leaves = [n.leaf() for n in node_infos(build)]
    if memo is not None:
        memo["leaves"] = leaves
    return leaves


def initializer_leaves(build: Build) -> list[bytes]:
    """The trace template's leaves: initializer roots at their positions, zero elsewhere."""
    leaves = [ZERO_LEAF] * len(build.graph.values)
    for rec in build.manifest["initializers"]:
        leaves[rec["value"]] = bytes.fromhex(rec["root"][2:])
    return leaves


def model_commitment(build: Build) -> ModelCommitment:
    g = build.graph
    return ModelCommitment(
        nodes_root=list_root(node_leaves(build)),
        trace_template=list_root(initializer_leaves(build)),
        n_nodes=len(g.nodes),
        n_values=len(g.values),
        n_inputs=len(g.inputs),
        first_node_value=g.first_node_value,
        output_value=g.outputs[0],
        entry=int(build.manifest["program"]["entry"], 16),
        log2_step_budget=build.manifest["program"]["log2_step_budget"],
    )


def part_base_proof(build: Build, k: int, j: int) -> tuple[bytes, list[bytes]]:
    """Part j of split node k: its task's base root and list proof in the node's part list."""
    roots = [bytes.fromhex(r[2:]) for r in build.manifest["program"]["tasks"]["nodes"][k]["parts"]["base_roots"]]
    return roots[j], list_proof(roots, j)


def part_levels(padded: bytes, parts_log2: int) -> list[list[bytes]]:
    """The output tree above its parts: levels[0] the 2^parts_log2 part roots, the last [root]."""
    roots = chunk_roots(padded, len(padded) >> parts_log2)
    level = [roots[i:i + 32] for i in range(0, len(roots), 32)]
    levels = [level]
    while len(level) > 1:
        level = [hash_pair(level[i], level[i + 1]) for i in range(0, len(level), 2)]
        levels.append(level)
    return levels


def node_proof(build: Build, k: int) -> list[bytes]:
    return list_proof(node_leaves(build), k)


def input_proofs(build: Build, input_roots: list[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """Trace state 0 and the proofs requestInference checks: input i's leaf replaced in order."""
    leaves = initializer_leaves(build)
    proofs = []
    for i, root in enumerate(input_roots):
        proofs.append(list_proof(leaves, i))
        leaves[i] = root
    return list_root(leaves), proofs
