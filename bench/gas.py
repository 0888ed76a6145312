"""Execution gas of `MIPS.step` per step: min/median/max overall and per opcode class.

Where it sits: the cost of phase 3 of a dispute (one on-chain step). It deploys the committed
MIPS.sol artifact on the embedded chain (or `--rpc URL`), takes steps from two sources, checks
for each that the contract's post-state hash is the VM's, and measures its execution gas:

- random pre-states for every instruction (the differential tests' generator,
  tests/contracts/sol_cases.py), so every opcode class is present;
- real steps of the digits MLP (models/digits_mlp.onnx compiled by opmlc, whole-graph task on
  models/digit_sample.npy): a random sample of the trace's steps plus the first step of every distinct
  instruction. Skip with `--no-digits`.

Execution gas = the gas spent inside `step`, measured in the EVM by contracts/src/GasMeter.sol:
what a Cancun transaction calling `step` uses beyond its intrinsic gas (21,000 plus calldata at
4/16 gas per zero/non-zero byte), and the same figure on every chain and fork (a Prague
transaction may pay EIP-7623's calldata floor instead; toolchain/chain.py says why).
References: Cannon's MIPS.sol ≈ 58,500 gas per step, ORA's opml ≈ 3.3M gas per step.

    python bench/gas.py [--per-mnemonic N] [--digits-sample N] [--no-digits] [--rpc URL] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The differential tests' case generator: the benchmark measures the very mix they check.
sys.path.insert(0, str(ROOT / "tests" / "contracts"))

from sol_cases import CLASS_OF, MNEMONICS, random_case  # noqa: E402

from toolchain.chain import Chain, call, connect, deploy, execution_gas  # noqa: E402
from vm import asm  # noqa: E402
from vm.state import State  # noqa: E402
from vm.witness import StepWitness, step_with_proof  # noqa: E402

CANNON_GAS_PER_STEP = 58_500
ORA_OPML_GAS_PER_STEP = 3_300_000
TARGET_MEDIAN_GAS = 50_000
CLASS_ORDER = ("alu", "shift", "branch/jump", "load", "store", "mult/div/madd", "syscall")

_SPECIAL = {v: k for k, v in asm.SPECIAL_FUNCT.items()}
_SPECIAL2 = {v: k for k, v in asm.SPECIAL2_FUNCT.items()}
_REGIMM = {v: k for k, v in asm.REGIMM_RT.items()}
_OPCODE = {v: k for k, v in {**asm.I_OPCODE, **asm.J_OPCODE}.items()}


def mnemonic(insn: int) -> str | None:
    """The mnemonic of an instruction word, None for an encoding the VM does not know."""
    op = insn >> 26
    if op == 0:
        return _SPECIAL.get(insn & 0x3F)
    if op == 0x1C:
        return _SPECIAL2.get(insn & 0x3F)
    if op == 1:
        return _REGIMM.get((insn >> 16) & 31)
    return _OPCODE.get(op)


def instruction_of(w: StepWitness) -> int:
    """The instruction a witness executes, read from its fetch proof's leaf."""
    pc = int.from_bytes(w.pre_state[32:36], "big")
    o = pc & 28
    return int.from_bytes(w.proof[o : o + 4], "big")


def random_witnesses(per_mnemonic: int, seed: int = 0) -> Iterator[tuple[str, StepWitness]]:
    """(mnemonic, witness) for `per_mnemonic` random pre-states of every instruction."""
    rng = random.Random(seed)
    for name in MNEMONICS:
        for _ in range(per_mnemonic):
            yield name, step_with_proof(random_case(name, rng))


def digits_task(build_dir: Path) -> State:
    """The digits MLP's whole-graph task on the sample digit, ready to run."""
    import numpy as np

    from opmlc.api import quantize_inputs
    from opmlc.artifact import compile_model
    from opmlc.tasks import honest_values, initial_state

    build = compile_model(ROOT / "models" / "digits_mlp.onnx", build_dir)
    q = quantize_inputs(build, [np.load(ROOT / "models" / "digit_sample.npy")])
    return initial_state(build, honest_values(build, q, upto=0), None)


def digits_witnesses(
    sample: int, build_dir: Path, seed: int = 0
) -> Iterator[tuple[str, StepWitness]]:
    """(mnemonic, witness) for `sample` random steps of the digits MLP's trace,
    plus the first step of every distinct instruction word kind (mnemonic) it executes."""
    from vm.run import run
    from vm.step import step

    probe = digits_task(build_dir)
    total = run(probe, 10**9)
    # Random, not strided: a stride would alias with the period of the kernels' loops.
    picked = set(random.Random(seed).sample(range(total), min(sample, total)))
    state = digits_task(build_dir)
    seen: set[str] = set()
    for i in range(total):
        insn = state.memory.read_u32(state.pc & ~3)
        name = mnemonic(insn) or "invalid"
        if i in picked or name not in seen:
            seen.add(name)
            yield name, step_with_proof(state)
        else:
            step(state)


def measure(
    chain: Chain, steps: Iterator[tuple[str, StepWitness]], source: str
) -> list[dict[str, object]]:
    """Checks and measures each step; returns one record per step."""
    mips = deploy(chain, "MIPS", reuse=True)
    out = []
    for name, w in steps:
        fn = mips.functions.step(w.pre_state, w.proof)
        got = call(fn)
        if got != w.post_hash:
            raise SystemExit(
                f"MISMATCH ({source}, {name}, insn 0x{instruction_of(w):08x}): "
                f"contract 0x{got.hex()} != VM 0x{w.post_hash.hex()}"
            )
        gas = execution_gas(chain, fn)
        out.append(
            {
                "source": source,
                "mnemonic": name,
                "class": CLASS_OF.get(name, "other"),
                "status": w.post_hash[0],
                "execution_gas": gas.execution,
                "cancun_transaction_gas": gas.cancun_transaction,
                "prague_transaction_gas": gas.prague_transaction,
            }
        )
    return out


def summarise(records: list[dict[str, object]]) -> dict[str, dict[str, float]]:
    """min/median/max/count of execution gas, overall and per class."""
    groups: dict[str, list[int]] = {"all": []}
    for r in records:
        gas = int(r["execution_gas"])  # type: ignore[arg-type]
        groups["all"].append(gas)
        groups.setdefault(str(r["class"]), []).append(gas)
    out = {
        k: {"n": len(v), "min": min(v), "median": statistics.median(v), "max": max(v)}
        for k, v in groups.items()
        if v
    }
    # What a whole step transaction costs (base + calldata + execution), for comparisons made
    # on that basis: under Cancun, and under Prague's calldata floor.
    for fork in ("cancun", "prague"):
        out["all"][f"median_{fork}_tx_gas"] = statistics.median(
            int(r[f"{fork}_transaction_gas"])  # type: ignore[arg-type]
            for r in records
        )
    return out


def print_table(title: str, summary: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}")
    print(f"  {'class':<15}{'steps':>7}{'min':>9}{'median':>9}{'max':>9}")
    for k in ("all", *CLASS_ORDER, "other"):
        if k in summary:
            s = summary[k]
            print(f"  {k:<15}{s['n']:>7}{s['min']:>9,}{s['median']:>9,.0f}{s['max']:>9,}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-mnemonic", type=int, default=10, help="random steps per instruction")
    parser.add_argument("--digits-sample", type=int, default=500, help="digits MLP steps to sample")
    parser.add_argument("--no-digits", action="store_true", help="skip the digits MLP's real steps")
    parser.add_argument("--rpc", default=None, help="JSON-RPC URL (default: embedded py-evm chain)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args()

    chain = connect(args.rpc)
    t0 = time.monotonic()
    results: dict[str, list[dict[str, object]]] = {
        "random": measure(chain, random_witnesses(args.per_mnemonic), "random")
    }
    if not args.no_digits:
        with tempfile.TemporaryDirectory(prefix="opmlc-gas-") as tmp:
            results["digits"] = measure(
                chain, digits_witnesses(args.digits_sample, Path(tmp)), "digits"
            )
    summaries = {k: summarise(v) for k, v in results.items()}
    elapsed = time.monotonic() - t0

    if args.json:
        print(json.dumps({"chain": chain.describe(), "summaries": summaries}, indent=2))
        return 0
    print(f"MIPS.step execution gas on the {chain.describe()} ({elapsed:.0f} s): gas spent inside")
    print("step, the same on every chain and fork; every step's post-state hash was checked")
    print("equal to the Python VM's.")
    titles = {
        "random": f"Random pre-states ({args.per_mnemonic} per instruction, panics included)",
        "digits": "Digits MLP, real steps (sampled trace + first step of each instruction)",
    }
    for key, summary in summaries.items():
        print_table(titles[key], summary)
    main_summary = summaries.get("digits", summaries["random"])["all"]
    headline = main_summary["median"]
    print(
        f"\nMedian {headline:,.0f} execution gas per step "
        f"({'digits' if 'digits' in summaries else 'random'} steps); target ≤ {TARGET_MEDIAN_GAS:,}."
    )
    print(
        f"  (a whole step transaction, with its 21,000 base and ~1-2 KB of proof calldata: "
        f"median {main_summary['median_cancun_tx_gas']:,.0f} gas under Cancun, "
        f"{main_summary['median_prague_tx_gas']:,.0f} under Prague's calldata floor)"
    )
    print(
        f"  vs Cannon MIPS.sol ≈ {CANNON_GAS_PER_STEP:,}: {headline / CANNON_GAS_PER_STEP:.3f}×"
        f"   vs ORA opml ≈ {ORA_OPML_GAS_PER_STEP:,}: {headline / ORA_OPML_GAS_PER_STEP:.4f}×"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
