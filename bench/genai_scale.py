"""TinyLlama-1.1B's shape exported by onnxruntime-genai's builder (random weights, int4): opmlc's
native generation against onnxruntime-genai on the same file (one thread each), and the wall
time of a dispute over generated token 20 (computed off chain, as `opmlc prove --claim`).

    python bench/genai_scale.py [--dir /tmp/opmlc-genai-1.1b] [--layers 22] [--tokens 32]

The model is made once (models/make_genai.py, ≈ 4.4 GB of float32 safetensors, then the
builder's int4 export) and reused from --dir.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT = "def fibonacci(n):\n    "


def one_thread(folder: Path) -> None:
    """onnxruntime-genai on one thread, as opmlc's native build runs."""
    path = folder / "genai_config.json"
    cfg = json.loads(path.read_text())
    cfg["model"]["decoder"]["session_options"]["intra_op_num_threads"] = 1
    cfg["model"]["decoder"]["session_options"]["inter_op_num_threads"] = 1
    path.write_text(json.dumps(cfg, indent=4))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/tmp/opmlc-genai-1.1b")
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--dispute-token", type=int, default=20)
    a = ap.parse_args()
    root = Path(a.dir)
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"llama-{a.layers}"
    if not (folder / "genai_config.json").is_file():
        from models.make_genai import make_genai

        t = time.perf_counter()
        make_genai(folder, "llama", hidden=2048, layers=a.layers, heads=32, kv_heads=4, mlp=5632, context=2048)
        print(f"made {folder} in {time.perf_counter() - t:.0f} s", flush=True)
    one_thread(folder)

    from opmlc.artifact import Build, compile_model
    from opmlc.genai.generate import generate
    from opmlc.genai.tokenizer import load_tokenizer

    build_dir = root / f"build-{a.layers}-{a.context}"
    if (build_dir / "manifest.json").is_file():
        build = Build.load(build_dir)
    else:
        t = time.perf_counter()
        build = compile_model(folder, build_dir, max_context=a.context)
        print(f"compiled in {time.perf_counter() - t:.0f} s", flush=True)
    ids = load_tokenizer(folder).encode(PROMPT)
    generate(build, ids, 1, "native", stop_at_eos=False)  # the native program made once, not timed
    t = time.perf_counter()
    gen = generate(build, ids, a.tokens, "native", stop_at_eos=False)
    ours = time.perf_counter() - t
    steps = gen.n_steps

    import numpy as np
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + a.tokens, do_sample=False, min_length=len(ids) + a.tokens)
    t = time.perf_counter()
    g = og.Generator(model, params)
    g.append_tokens(np.asarray(ids, dtype=np.int32))
    ref = []
    while not g.is_done():
        g.generate_next_token()
        ref.append(int(g.get_next_tokens()[0]))
    theirs = time.perf_counter() - t
    same = sum(x == y for x, y in zip(gen.generated_ids, ref, strict=False))
    print(f"opmlc native: {a.tokens} tokens after a {len(ids)}-token prompt ({steps} decoding steps) in {ours:.2f} s "
          f"= {a.tokens / ours:.2f} tokens/s; onnxruntime-genai (1 thread): {theirs:.2f} s = {a.tokens / theirs:.2f} "
          f"tokens/s; ratio {ours / theirs:.1f}×; same tokens {same}/{len(ref)}", flush=True)

    from opmlc.dispute.generation import GenerationBuild, prompt_inputs
    from opmlc.dispute.graph_trace import Tamper
    from opmlc.dispute.offchain import play
    from opmlc.dispute.roles import Claimant, Verifier

    t = time.perf_counter()
    n_new = a.dispute_token
    gb = GenerationBuild(build, len(ids), n_new)
    inputs = prompt_inputs(gb, ids)
    lie = gb.node_of(gb.n_steps - 1, gb.k - 1)  # the server alters generated token 20
    rec = play(Claimant(gb, inputs, Tamper(lie)), Verifier(gb, inputs))
    print(f"dispute over token {n_new} ({gb.n_steps} steps × {gb.k} nodes): winner {rec.winner}, "
          f"{len(rec.phase1)} + {len(rec.phase2)} rounds, {time.perf_counter() - t:.0f} s wall time", flush=True)


if __name__ == "__main__":
    main()
