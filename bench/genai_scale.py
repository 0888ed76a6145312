"""TinyLlama-1.1B's layer shape exported by onnxruntime-genai's builder (random weights, int4):
opmlc's native generation against onnxruntime-genai on the same file at the same thread
counts, and the wall time of an on-chain dispute (`opmlc demo`'s game) with a lie at one
decoding step.

    python bench/genai_scale.py [--cache ~/.cache/opmlc/genai] [--layers 22] [--context 64]
        [--tokens 32] [--threads 1,2] [--lie-step 20] [--no-dispute]

One command makes or reuses everything under --cache: the builder's export (models/
make_genai.py: hidden 2048, 32 heads / 4 KV heads, MLP 5632, the test tokenizer's 512-token
vocabulary; ≈ 6 min and 4.4 GB of float32 safetensors, deleted after the export) and its
build (`opmlc compile --max-context`; ≈ 15 min; compiled again if opmlc no longer accepts it).
Both runtimes generate --tokens tokens greedily after the same prompt, ignoring the
end-of-sequence token; opmlc reads the prompt token by token, onnxruntime-genai in one pass,
so the per-step figure (a decoding step after the prompt) is the like-for-like one. The
dispute runs in a child process (its peak RSS is the dispute's alone): the server lies about
the greedy token of decoding step --lie-step; all three parties share the process.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT = "def fibonacci(n):\n    "


def model_folder(cache: Path, layers: int) -> Path:
    """The builder's export, made once."""
    folder = cache / f"llama_h2048_l{layers}_a32_kv4_m5632_v512_s0"
    if not (folder / "genai_config.json").is_file():
        from models.make_genai import make_genai

        t = time.perf_counter()
        make_genai(folder, "llama", hidden=2048, layers=layers, heads=32, kv_heads=4, mlp=5632, context=2048)
        shutil.rmtree(folder.parent / (folder.name + ".hf"), ignore_errors=True)  # the float32 safetensors
        print(f"made {folder} in {time.perf_counter() - t:.0f} s", flush=True)
    return folder


def step_build(folder: Path, context: int):
    """The compiled decoding step, made once (again when this opmlc refuses the cached one)."""
    from opmlc.artifact import Build, compile_model
    from opmlc.errors import OpmlcError

    out = folder.parent / f"{folder.name}.build-c{context}"
    if (out / "manifest.json").is_file():
        try:
            return Build.load(out)
        except OpmlcError as exc:
            print(f"the cached build is refused ({exc}); compiling again", flush=True)
            shutil.rmtree(out)
    t = time.perf_counter()
    compile_model(folder, out, max_context=context)
    print(f"compiled {out} in {time.perf_counter() - t:.0f} s", flush=True)
    return Build.load(out)  # as a user's run sees it: weights mapped


def opmlc_generate(build, ids: list[int], tokens: int, threads: int) -> tuple[list[int], float, list[float]]:
    """(tokens, seconds in all, seconds of each decoding step after the prompt)."""
    from opmlc.genai.generate import generate_ids

    out, per_step = [], []
    start = last = time.perf_counter()
    for tok, _ in generate_ids(build, ids, tokens, "native", stop_at_eos=False, threads=threads):
        now = time.perf_counter()
        if tok >= 0:
            out.append(tok)
            if len(out) > 1:
                per_step.append(now - last)
        last = now
    return out, time.perf_counter() - start, per_step


def ort_generate(folder: Path, ids: list[int], tokens: int, threads: int) -> tuple[list[int], float, list[float]]:
    import numpy as np
    import onnxruntime_genai as og

    config = og.Config(str(folder))
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {
        "intra_op_num_threads": threads, "inter_op_num_threads": 1}}}}))
    model = og.Model(config)
    params = og.GeneratorParams(model)
    n = len(ids) + tokens
    params.set_search_options(max_length=n, min_length=n, do_sample=False)
    out, per_step = [], []
    start = time.perf_counter()
    g = og.Generator(model, params)
    g.append_tokens(np.asarray(ids, dtype=np.int32))
    last = time.perf_counter()
    while not g.is_done():
        g.generate_next_token()
        out.append(int(g.get_next_tokens()[0]))
        now = time.perf_counter()
        if len(out) > 1:
            per_step.append(now - last)
        last = now
    return out, time.perf_counter() - start, per_step


def dispute(build_dir: Path, ids: list[int], tokens: int, lie_step: int) -> dict:
    """`opmlc demo`'s game on the embedded chain over the generation of `tokens` tokens, the
    server lying about decoding step `lie_step`'s greedy token (this process's peak RSS, VmHWM, added)."""
    from opmlc.artifact import Build
    from opmlc.dispute.demo import run_demo

    build = Build.load(build_dir)
    r = run_demo(build=build, prompt=ids, max_new_tokens=tokens, lie_step=lie_step, ignore_eos=True)
    # VmHWM, this process's own peak: ru_maxrss would include the parent's RSS at the fork (Linux
    # carries it across fork and exec), the bench's generating session with its weights
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
    r["peak_rss_mb"] = int(hwm.split()[1]) / 1024
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "opmlc" / "genai"))
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    ap.add_argument("--lie-step", type=int, default=20)
    ap.add_argument("--no-dispute", action="store_true")
    ap.add_argument("--dispute-only", help=argparse.SUPPRESS)  # the child process: a build directory
    a = ap.parse_args()
    if a.dispute_only:
        ids = json.loads(sys.stdin.read())
        print(json.dumps(dispute(Path(a.dispute_only), ids, a.tokens, a.lie_step)))
        return
    cache = Path(a.cache).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    folder = model_folder(cache, a.layers)
    build = step_build(folder, a.context)
    from opmlc.genai.tokenizer import load_tokenizer

    ids = load_tokenizer(folder).encode(PROMPT)
    print(f"{folder.name}: {a.layers} layers, prompt {len(ids)} tokens, {a.tokens} new tokens, "
          f"context {a.context}", flush=True)
    opmlc_generate(build, ids, 1, 1)  # the program loaded and the weights mapped once, not timed
    for threads in [int(t) for t in a.threads.split(",")]:
        ours, t_ours, step_ours = opmlc_generate(build, ids, a.tokens, threads)
        ref, t_ref, step_ref = ort_generate(folder, ids, a.tokens, threads)
        same = next((i for i, (x, y) in enumerate(zip(ours, ref, strict=True)) if x != y), len(ref))
        d_ours, d_ref = sum(step_ours) / len(step_ours), sum(step_ref) / len(step_ref)
        print(f"{threads} thread(s): opmlc native {a.tokens / t_ours:.2f} tokens/s ({t_ours:.1f} s, "
              f"{len(ids) + a.tokens - 1} steps; {d_ours:.3f} s per decoding step); onnxruntime-genai "
              f"{a.tokens / t_ref:.2f} tokens/s ({t_ref:.1f} s; {d_ref:.3f} s per token after the first); "
              f"ratio {t_ours / t_ref:.1f}x in all, {d_ours / d_ref:.1f}x per decoding step; "
              f"the first {same}/{len(ref)} tokens agree", flush=True)
    if a.no_dispute:
        return
    cmd = [sys.executable, __file__, "--dispute-only", str(build.directory), "--tokens", str(a.tokens),
           "--lie-step", str(a.lie_step)]
    t = time.perf_counter()
    child = subprocess.run(cmd, input=json.dumps(ids), capture_output=True, text=True, check=False)
    if child.returncode != 0:
        raise SystemExit(f"the dispute failed:\n{child.stderr[-3000:]}")
    r = json.loads(child.stdout.strip().splitlines()[-1])
    gen = r["generation"]
    print(f"dispute over {gen['generated']} tokens ({gen['steps']} steps x {gen['nodes_per_step']} nodes), "
          f"a lie in decoding step {gen['lie']['step']}'s greedy token (generated token "
          f"{gen['lie']['step'] - len(ids) + 2}): winner {r['winner']} ({r.get('reason')}), "
          f"{r['rounds_phase1']} + {r['rounds_phase2']} rounds, {r['gas_total']:,} gas, {r['vm_steps']:,} VM steps, "
          f"wall {r['seconds']:.0f} s ({time.perf_counter() - t:.0f} s with the process start), "
          f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)


if __name__ == "__main__":
    main()
