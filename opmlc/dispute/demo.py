"""`opmlc demo`: compile a model, deploy the contracts, request an inference, post a result
(lying as asked), dispute it and settle it, on the embedded chain or any JSON-RPC node.

This is opML end to end in one process: a Requester, a Server and a Challenger, each with its
own account, playing through the same API a real deployment uses.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from opmlc.artifact import Build, compile_model
from opmlc.dispute.graph_trace import Tamper
from opmlc.dispute.onchain import Deployment, GameView, Phase
from opmlc.dispute.parties import Challenger, Requester, Server
from opmlc.dispute.session import settle
from opmlc.errors import OpmlcError
from opmlc.tasks import check_part
from toolchain.chain import connect

MODELS = Path(__file__).resolve().parents[2] / "models"
DEFAULT_MODEL = MODELS / "digits_mlp.onnx"
LIARS = ("server", "challenger", "none")


DEFAULT_TEXT = "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + "


def default_input(build: Build) -> list[np.ndarray]:
    """The digit sample for the digits models; for an integer input (a byte-level decoder's token
    ids) the bytes of DEFAULT_TEXT; otherwise values in [0, 1) from a fixed seed."""
    from opmlc.api import encode_text
    from opmlc.ir.types import DType

    sample = MODELS / "digit_sample.npy"
    arrays = []
    rng = np.random.default_rng(0)
    for rec in build.manifest["inputs"]:
        shape = tuple(rec["shape"])
        t = build.graph.values[rec["value"]].type
        if t.dtype in (DType.I32, DType.I64):
            arrays.append(encode_text(DEFAULT_TEXT, t) if all(d == 1 for d in shape[:-1])
                          else rng.integers(0, 2, shape).astype(t.dtype.numpy))
        elif sample.exists() and np.load(sample).size == int(np.prod(shape)):
            arrays.append(np.load(sample).reshape(shape).astype(np.float32))
        else:
            arrays.append(rng.random(shape, dtype=np.float32))
    return arrays


def run_demo(model: str | Path | None = None, liar: str = "server", rpc: str | None = None,
             lie_node: int | None = None, inputs: list[np.ndarray] | None = None,
             say: Callable[[str], None] = lambda _: None, record: Path | None = None,
             weights: str | None = None, block_size: int | None = None, prompt: str | list[int] | None = None,
             max_new_tokens: int = 8, lie_step: int | None = None, max_context: int | None = None,
             lie_part: int | None = None, step_budget: int | None = None, build: Build | None = None,
             ignore_eos: bool = False) -> dict:
    """Play opML end to end; returns the summary `opmlc demo --json` prints.

    `build`: a build to play on instead of compiling `model` (benchmarks of large models).
    With `prompt` (an onnxruntime-genai model), the task is a generation of `max_new_tokens`
    tokens (opmlc/dispute/generation.py): a lying server alters node `lie_node` (default: the
    step's last, the greedy token) of decoding step `lie_step` (default: the last step). The
    generation, and so the registered task, ends at the model's end-of-sequence token if the
    honest generation emits one first, unless `ignore_eos`.

    `record`: where to write the game's record (every move with its gas and the clocks, read
    from the chain: opmlc/dispute/game_record.py), the input of `opmlc report`.
    `lie_part`: the lie goes in that part of the (split) lying node, its first element;
    `step_budget`: compile with that step budget (opmlc compile --step-budget).
    """
    if liar not in LIARS:
        raise OpmlcError(f"--liar {liar!r}: choose one of {', '.join(LIARS)}")
    start = time.perf_counter()
    model = Path(model) if model else DEFAULT_MODEL
    if build is not None:
        model = Path(build.manifest["model"]["file"])
    with tempfile.TemporaryDirectory(prefix="opmlc-demo-") as tmp:
        if build is None:
            say(f"compiling {model.name}")
            build = compile_model(model, Path(tmp) / "build", weights=weights, block_size=block_size,
                                  max_context=max_context, step_budget=step_budget)
        generation = None
        if prompt is not None:
            build, inputs, generation = _generation(build, prompt, max_new_tokens, not ignore_eos)
            step = generation.n_steps - 1 if lie_step is None else lie_step
            node = build.node_of(step, build.k - 1 if lie_node is None else lie_node)
        elif lie_step is not None:
            raise OpmlcError("--lie-step is for a generation (--prompt)")
        else:
            node = None
        n_nodes = len(build.graph.nodes)
        if node is None:
            node = n_nodes - 1 if lie_node is None else lie_node
        if not 0 <= node < n_nodes:
            raise OpmlcError(f"--lie-node {node}: the model has nodes 0..{n_nodes - 1}")
        element = 0
        if lie_part is not None:
            parts = check_part(build, node, lie_part, "--lie-part")
            element = parts.element_range(lie_part)[0]
            if element >= parts.numel:
                raise OpmlcError(f"--lie-part {lie_part}: part {lie_part} of node {node} holds only padding")
        lie = Tamper(node, element=element)
        inputs = inputs if inputs is not None else default_input(build)
        chain = connect(rpc)
        if len(chain.accounts) < 3:
            raise OpmlcError(f"the {chain.describe()} has {len(chain.accounts)} unlocked accounts; the demo needs 3")
        say(f"deploying MIPS.sol and TaskRegistry on the {chain.describe()}")
        d = Deployment.create(chain)
        a = chain.accounts
        requester = Requester(d, a[0], build)
        requester.register()
        task = requester.request(inputs)
        server = Server(d, a[1], build, tamper=lie if liar == "server" else None)
        say(f"task {task}: the server posts {'a wrong' if liar == 'server' else 'its'} result"
            + (f" (node {node}{'' if lie_part is None else f' part {lie_part}'} altered)" if liar == "server" else "")
            + f", backed by {d.backing / 1e18:g} ETH of game stakes")
        server.submit(task, inputs)
        gas_before = sum(d.gas_by.values())
        challenger = Challenger(d, a[2], build, tamper=lie if liar == "challenger" else None)
        game = challenger.check(task, inputs)
        result = {"model": model.name, "chain": chain.describe(), "liar": liar, "task": task}
        if generation is not None:
            result["generation"] = {"prompt_ids": generation.prompt_ids, "max_new_tokens": max_new_tokens,
                                    "generated": build.max_new_tokens, "stop_at_eos": not ignore_eos,
                                    "steps": generation.n_steps, "nodes_per_step": build.k,
                                    "lie": dict(zip(("step", "node"), build.step_of(node), strict=True))
                                    if liar != "none" else None}
        if game is None:
            say("the challenger agrees with the result; waiting out the challenge window")
            d.advance_time(int(d.registry.functions.challengeWindow().call()) + 1)
            d.send("server", a[1], d.registry.functions.finalize(task))
            result.update(winner="none", finalized=True, rounds_phase1=0, rounds_phase2=0, gas_total=0,
                          vm_steps=0, vm_steps_server=0, node=None, step=None)
        else:
            phases = {Phase.BISECT_TRACE: "phase 1: bisecting the graph trace",
                      Phase.START_NODE: "hand-off: binding the disputed node",
                      Phase.BISECT_PART: "split node: descending its output tree to one part",
                      Phase.START_PART: "hand-off: binding the disputed part",
                      Phase.BISECT_STEP: "phase 2: bisecting the node's VM steps",
                      Phase.PROVE_STEP: "phase 3: executing one MIPS step on chain"}
            seen: set[Phase] = set()

            def on_move(g: GameView) -> None:
                if g.phase in phases and g.phase not in seen:
                    seen.add(g.phase)
                    say(phases[g.phase] + (f" (node {g.node}, {g.hi} steps)" if g.phase is Phase.BISECT_STEP else ""))

            say(f"the challenger disputes it: game {game}")
            g = settle(d, server, challenger, game, on_move)
            result.update(
                winner=g.winner,
                reason={1: "step proven", 2: "timeout"}.get(g.reason, str(g.reason)),
                rounds_phase1=len(d.events("TraceResponded", gameId=game)),
                rounds_phase2=len(d.events("StepResponded", gameId=game)),
                gas_total=sum(d.gas_by.values()) - gas_before,
                vm_steps=challenger.verifier(task).vm_steps,
                vm_steps_server=server.claimant(task).vm_steps,
                node=int(g.node), step=int(g.lo),
                part=g.task_part, rounds_parts=len(d.events("PartResponded", gameId=game)),
            )
            if generation is not None:
                result["decoding_step"], result["step_node"] = build.step_of(int(g.node))
            say(f"the {g.winner} wins ({result['reason']}) and is credited both stakes of the game, "
                f"{2 * d.stake / 1e18:g} ETH")
            if record is not None:
                _write_record(record, d, game, n_nodes, model=model.name, chain=chain.describe(), liar=liar,
                              vm_steps=result["vm_steps"])
        credit = d.registry.functions.credit
        # Wei each party can withdraw now: stakes won, and the backing no game holds once the
        # result is rejected or final.
        result["credited"] = {"server": int(credit(a[1]).call()), "challenger": int(credit(a[2]).call())}
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


@dataclass
class _Gen:
    prompt_ids: list[int]
    n_steps: int


def _generation(step_build: Build, prompt: str | list[int], max_new_tokens: int, stop_at_eos: bool = True):
    """The generation view of a compiled decoding step (over the tokens the honest generation
    makes) and its inputs (the prompt's ids)."""
    from opmlc.dispute.generation import generation_of, prompt_inputs
    from opmlc.genai.generate import genai_record
    from opmlc.genai.tokenizer import load_tokenizer

    ids = load_tokenizer(genai_record(step_build)["folder"]).encode(prompt) if isinstance(prompt, str) \
        else [int(t) for t in prompt]
    gb = generation_of(step_build, ids, max_new_tokens, stop_at_eos)
    return gb, prompt_inputs(gb, ids), _Gen(ids, gb.n_steps)


def _write_record(path: Path, d: Deployment, game: int, n_nodes: int, **about) -> None:
    import json

    from opmlc.dispute.game_record import game_record

    Path(path).write_text(json.dumps(game_record(d, game, n_nodes, **about), indent=1) + "\n")
