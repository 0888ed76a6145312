"""A generation as one disputable task: the decoding steps of a build unrolled into one graph
whose trace is the concatenation of the steps' traces (docs/DESIGN.md "Generation").

For a prompt of P token ids and M new tokens there are N = P + M − 1 decoding steps of the
step graph (K nodes). The generation graph has
- inputs: the P prompt ids (values 0 … P − 1, each [1, 1] of input_ids' type);
- constants: the step's initializers (the weights, shared by every step), each step's
  attention mask (ones at positions 0 … s) and one all-zero tensor per cache input (the
  cache before step 0): their roots are the trace template, fixed by the model commitment;
- nodes: step s's node k is generation node s·K + k, the same op on the same operands, except
  that the step's graph inputs are bound to the token (a prompt input for s < P, else step
  s − 1's next_token output), the step's mask constant and step s − 1's present cache (the
  zeros for s = 0).
Generation node s·K + k is the step ELF's task k, with its operands spliced into the same
regions: `task_map` gives it step node k's map (tasks.task_map consults it), the manifest's
task records step node k's base root, so the contract's NodeInfo carries those of step node k,
and every trace position of the chained values follows from the graph. So the
contracts are unchanged: phase 1 bisects over (step, node) pairs as over nodes, the hand-off
binds one step's node to its operands in the agreed trace, phase 2 is that node's VM run. The
model commitment depends on (P, M): one registered model per generation shape, its output the
last generated token, its final trace committing to every step's values (prompt ids, caches,
logits, generated ids).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from opmlc.artifact import Build
from opmlc.backend.regions import Region, TaskMap
from opmlc.errors import OpmlcError
from opmlc.genai.config import NEXT_TOKEN
from opmlc.genai.generate import check_lengths, genai_record
from opmlc.ir.graph import Graph, Node, Value
from opmlc.ir.initializers import Initializers, PackedI4, held


@dataclass(frozen=True)
class GenerationTaskMap(TaskMap):
    """A step's task map with its regions named by generation values; the descriptor's table
    stays the step's (the program addresses operands by the step's value indices)."""

    step_table: tuple[tuple[int, int], ...] = ()

    def table(self) -> dict[int, int]:
        return dict(self.step_table)


@dataclass
class GenerationBuild:
    """A Build-like view of `step` unrolled over a generation of `n_prompt` + `max_new_tokens` − 1
    steps: what the dispute code reads of a build (graph, manifest, store, directory) plus the
    per-node ELF task, operand regions and base roots of the step."""

    step: Build
    n_prompt: int
    max_new_tokens: int  # the tokens this generation made: its shape
    limit: int | None = None  # --max-new-tokens as asked (default: max_new_tokens)
    stop_at_eos: bool = True  # whether the generation stops at an end-of-sequence token

    def __post_init__(self) -> None:
        rec = genai_record(self.step)
        check_lengths(self.n_prompt, self.max_new_tokens, int(rec["context"]))
        if self.limit is None:
            self.limit = self.max_new_tokens
        if self.max_new_tokens > self.limit:
            raise OpmlcError(f"a generation of {self.max_new_tokens} tokens is longer than --max-new-tokens {self.limit}")
        self.rec = rec
        self.eos = frozenset(int(t) for t in rec.get("eos_token_ids", []))
        # commitment.node_infos/node_leaves, computed once: N·K nodes, each leaf an ABI encoding
        # and a hash, asked for by every party and move that needs the node list
        self.commitment_memo: dict = {}
        self.n_steps = self.n_prompt + self.max_new_tokens - 1
        self.analysis = None
        self._build()

    # -- what the dispute code reads of a Build ------------------------------------------
    @property
    def directory(self) -> Path:
        return self.step.directory

    @property
    def store(self):
        return self.step.store

    def task_map(self, node: int | None):
        """Generation node `node`'s task: the step ELF's task k with the step's map (its
        descriptor table keyed by the step's values), its regions named by generation values."""
        from opmlc.tasks import task_map

        if node is None:
            raise OpmlcError("a generation is disputed node by node; it has no whole-graph task")
        s, k = divmod(node, self.k)
        m = task_map(self.step, k)
        by_step = {r.value: r for r in m.regions}
        regions = tuple(Region(v, by_step[sv].addr, by_step[sv].size)
                        for v, sv in self._operands(node))
        return GenerationTaskMap(k, regions, tuple(sorted(m.table().items())))

    def _operands(self, node: int) -> list[tuple[int, int]]:
        """(generation value, step value) of node `node`'s operands and output."""
        s = node // self.k
        n = self.graph.nodes[node]
        return [(v, self._step_value(s, v)) for v in dict.fromkeys([*n.inputs, n.output])]

    # -- construction ---------------------------------------------------------------------
    def _build(self) -> None:
        sg = self.step.graph
        self.k = len(sg.nodes)
        names = [r["name"] for r in self.step.manifest["inputs"]]
        by_name = dict(zip(names, sg.inputs, strict=True))
        out_names = [r["name"] for r in self.step.manifest["outputs"]]
        out_by_name = dict(zip(out_names, sg.outputs, strict=True))
        rec = self.rec
        ids_v, mask_v = by_name[rec["input_ids"]], by_name[rec["attention_mask"]]
        cache_in = [by_name[n] for n in rec["cache_inputs"]]
        cache_out = [out_by_name[n] for n in rec["cache_outputs"]]
        next_v = out_by_name[NEXT_TOKEN]
        for a, b in [*zip(cache_in, cache_out, strict=True), (ids_v, next_v)]:
            if sg.values[a].type != sg.values[b].type:
                raise OpmlcError(f"{self.step.directory}: step input {sg.values[a].name!r} has type "
                                 f"{sg.values[a].type}, the output it is fed from {sg.values[b].type}; "
                                 "compile the model again")
        values: list[Value] = []
        # the step's weights as the step holds them (a loaded build's i4 weights stay packed
        # and mapped: ir/initializers.py), the generation's own constants as arrays
        inits: dict[int, np.ndarray | PackedI4] = {}

        def add(name: str, t, kind: str, data: np.ndarray | None = None) -> int:
            v = len(values)
            values.append(Value(v, name, t, kind))
            if data is not None:
                inits[v] = data
            return v

        ids_t = sg.values[ids_v].type
        prompt = [add(f"prompt[{i}]", ids_t, "input") for i in range(self.n_prompt)]
        shared = {v: add(sg.values[v].name, sg.values[v].type, "init", held(sg.initializers, v)) for v in sg.initializers}
        mask_t = sg.values[mask_v].type
        masks = []
        for s in range(self.n_steps):
            m = np.zeros(mask_t.shape, dtype=mask_t.dtype.numpy)
            m[..., : s + 1] = 1
            masks.append(add(f"attention_mask[{s}]", mask_t, "init", m))
        zeros = {v: add(f"{sg.values[v].name}[initial]", sg.values[v].type, "init",
                        np.zeros(sg.values[v].type.shape, dtype=sg.values[v].type.dtype.numpy)) for v in cache_in}
        first = len(values) + 0
        n_nodes = self.n_steps * self.k
        step_first = sg.first_node_value

        def out_of(s: int, sv: int) -> int:  # generation value of step s's node output sv
            return first + s * self.k + (sv - step_first)

        nodes: list[Node] = []
        # step value behind each generation value read as an operand, per step: for regions
        self._bound: list[dict[int, int]] = []
        for s in range(self.n_steps):
            bind: dict[int, int] = dict(shared)
            bind[ids_v] = prompt[s] if s < self.n_prompt else out_of(s - 1, next_v)
            bind[mask_v] = masks[s]
            for ci, co in zip(cache_in, cache_out, strict=True):
                bind[ci] = zeros[ci] if s == 0 else out_of(s - 1, co)
            self._bound.append({g: sv for sv, g in bind.items()})
            for k, node in enumerate(sg.nodes):
                ins = [bind.get(i, out_of(s, i) if i >= step_first else None) for i in node.inputs]
                assert None not in ins
                nodes.append(Node(node.op, ins, first + s * self.k + k, node.attrs, f"step {s}: {node.name}"))
        for s in range(self.n_steps):
            for k in range(self.k):
                sv = sg.nodes[k].output
                add(f"step {s}: {sg.values[sv].name}", sg.values[sv].type, "node")
        assert len(values) == first + n_nodes
        self.graph = Graph(f"{sg.name} generation {self.n_prompt}+{self.max_new_tokens}", values, nodes, prompt,
                           [out_of(self.n_steps - 1, next_v)], Initializers(inits))
        self.generated_values = [out_of(s, next_v) for s in range(self.n_prompt - 1, self.n_steps)]
        step_prog = self.step.manifest["program"]
        step_tasks = step_prog["tasks"]["nodes"]
        split = [k for k, t in enumerate(step_tasks) if t.get("parts") is not None]
        if split:  # a generation node is one whole step node (its map, its ELF task)
            raise OpmlcError(f"{self.step.directory}: step node {split[0]} is split into parts under the build's step "
                             "budget; compile the model without --step-budget (a genai step's default splits no node)")
        self.manifest = {
            "program": {**{k: step_prog[k] for k in ("elf", "sha256", "entry", "log2_step_budget")},
                        "tasks": {"whole": None, "nodes": [step_tasks[i % self.k] for i in range(n_nodes)]}},
            "inputs": [{"name": values[v].name, "value": v, **values[v].type.to_json()} for v in prompt],
            "outputs": [{"name": NEXT_TOKEN, "value": self.graph.outputs[0]}],
            "initializers": self._initializer_records(),
            "genai": self.rec,
        }

    def _step_value(self, s: int, v: int) -> int:
        """The step graph's value that generation value `v` plays in step `s`."""
        sv = self._bound[s].get(v)
        if sv is not None:
            return sv
        return self.step.graph.first_node_value + (v - self.graph.first_node_value - s * self.k)

    def _initializer_records(self) -> list[dict]:
        from opmlc.commit import tensor_root

        step_roots = {r["name"]: r["root"] for r in self.step.manifest["initializers"]}
        recs = []
        for v in self.graph.initializers:  # the step's weights by their recorded roots, never read
            val = self.graph.values[v]
            root = step_roots.get(val.name) if "[" not in val.name else None
            recs.append({"name": val.name, "value": v,
                         "root": root or "0x" + tensor_root(self.graph.initializers[v], val.type).hex()})
        return recs

    # -- where the generation stops -------------------------------------------------------
    def stopped(self, generated_ids: list[int]) -> str:
        """Why a generation of these ids ends: "eos" or "max_new_tokens"."""
        return "eos" if self.stop_at_eos and generated_ids and generated_ids[-1] in self.eos else "max_new_tokens"

    def stop_error(self, generated_ids: list[int]) -> str | None:
        """What is wrong with ending a generation after these (honest) ids, or None: with
        stop_at_eos it ends at its first end-of-sequence token, else after `limit` tokens."""
        if self.stop_at_eos:
            early = [i for i, t in enumerate(generated_ids[:-1]) if t in self.eos]
            if early:
                return (f"generated token {early[0]} is the end-of-sequence token {generated_ids[early[0]]}: "
                        f"the generation stops there, not after {len(generated_ids)} tokens")
            if len(generated_ids) < self.limit and (not generated_ids or generated_ids[-1] not in self.eos):
                return (f"the generation ends after {len(generated_ids)} of {self.limit} tokens at token "
                        f"{generated_ids[-1] if generated_ids else None}, which is not an end-of-sequence token")
        elif len(generated_ids) != self.limit:
            return f"the generation ends after {len(generated_ids)} tokens, not --max-new-tokens {self.limit}"
        return None

    # -- what a generation claim shows ----------------------------------------------------
    def step_of(self, node: int) -> tuple[int, int]:
        """(decoding step, node of the step graph) of generation node `node`."""
        return divmod(node, self.k)

    def node_of(self, step: int, k: int) -> int:
        if not 0 <= step < self.n_steps:
            raise OpmlcError(f"decoding step {step}: the generation has steps 0..{self.n_steps - 1}")
        if not 0 <= k < self.k:
            raise OpmlcError(f"node {k}: a decoding step has nodes 0..{self.k - 1}")
        return step * self.k + k

    @cached_property
    def step_node_names(self) -> list[str]:
        sg = self.step.graph
        return [sg.values[n.output].name for n in sg.nodes]

    def step_node(self, output_name: str) -> int:
        """The step graph's node whose output is named `output_name` (a graph output's name, as
        present.0.key, or an IR value name)."""
        try:
            return self.step_node_names.index(output_name)
        except ValueError:
            raise OpmlcError(f"no node of the decoding step outputs {output_name!r}") from None


def prompt_inputs(gb: GenerationBuild, prompt_ids: list[int]) -> list[np.ndarray]:
    """The generation's inputs: one [1, 1] array per prompt token."""
    if len(prompt_ids) != gb.n_prompt:
        raise OpmlcError(f"the generation was built for {gb.n_prompt} prompt tokens, got {len(prompt_ids)}")
    t = gb.graph.values[gb.graph.inputs[0]].type
    return [np.full(t.shape, int(i), dtype=t.dtype.numpy) for i in prompt_ids]


def generation_length(step: Build, prompt_ids: list[int], max_new_tokens: int, stop_at_eos: bool = True) -> int:
    """The tokens the honest greedy generation makes (natively): `max_new_tokens`, or fewer when
    it emits an end-of-sequence token first (which it then ends with)."""
    from opmlc.genai.generate import generate_ids

    if not stop_at_eos:
        return max_new_tokens
    return sum(t >= 0 for t, _ in generate_ids(step, prompt_ids, max_new_tokens, "native", stop_at_eos=True))


def generation_of(step: Build, prompt_ids: list[int], max_new_tokens: int, stop_at_eos: bool = True,
                  made: int | None = None) -> GenerationBuild:
    """The generation view for `prompt_ids` and --max-new-tokens: over the tokens the generation
    made (`made`, e.g. a claim's, else the honest generation's length), so that its trace and
    its model commitment fix where it stopped."""
    check_lengths(len(prompt_ids), max_new_tokens, int(genai_record(step)["context"]))
    if made is None:
        made = generation_length(step, prompt_ids, max_new_tokens, stop_at_eos)
    return GenerationBuild(step, len(prompt_ids), made, limit=max_new_tokens, stop_at_eos=stop_at_eos)
