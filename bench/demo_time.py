"""Wall time of the digits-MLP demo (`opmlc demo`: the default model, a lying server, the whole
dispute on the embedded chain) against a reference commit, measured side by side.

    python bench/demo_time.py [--ref REV] [--runs N]

The reference is `git archive REV` (default: main) unpacked into a temporary directory; each
round runs `python -m opmlc.cli demo --json` once in that tree and once in this one (alternating,
so both see the same load on a shared machine), and the figure of each is the minimum over the
rounds. Issue 13 asks that the demo not get slower: the last line prints the ratio now / ref.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def demo_once(tree: Path) -> float:
    """Seconds of one `opmlc demo --json` run with `tree`'s opmlc (python -m puts the cwd first)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "opmlc.cli", "demo", "--json"], check=True, cwd=tree,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="main", help="the reference commit (default: main)")
    parser.add_argument("--runs", type=int, default=3, help="rounds (default 3); each figure is the minimum")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="opmlc-demo-ref-") as d:
        ref = Path(d)
        archive = subprocess.run(["git", "archive", args.ref], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(ref)], input=archive, check=True)
        times: dict[str, list[float]] = {"ref": [], "now": []}
        for i in range(args.runs):
            for name, tree in (("ref", ref), ("now", ROOT)):
                times[name].append(demo_once(tree))
                print(f"round {i + 1}: {name} {times[name][-1]:.2f} s", flush=True)
    best = {k: min(v) for k, v in times.items()}
    print(f"digits-MLP demo wall time, min of {args.runs}: {args.ref} {best['ref']:.2f} s, "
          f"this tree {best['now']:.2f} s, ratio {best['now'] / best['ref']:.2f}")


if __name__ == "__main__":
    main()
