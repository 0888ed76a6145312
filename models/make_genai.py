"""Make an onnxruntime-genai model offline: a randomly initialised `transformers` decoder and a
small byte-level BPE tokenizer, exported by onnxruntime-genai's model builder (int4, CPU).

Test-only tools (torch, transformers, tokenizers, onnxruntime-genai); opmlc itself reads only
what the builder writes (`model.onnx`, `model.onnx.data`, `genai_config.json`, the tokenizer).
The tokenizer is trained on the top-level `*.py` files of Python's standard library, so
nothing is downloaded.

    python -m models.make_genai OUT [--arch llama|qwen2|mistral|phi3] [--hidden 128 ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ARCHS = ("llama", "qwen2", "mistral", "phi3", "gemma", "phi")
VOCAB = 512
SLIDING_WINDOW = 16
# builder options per architecture: Mistral's window over a full-length cache (the builder's
# default for sliding layers is a ring-buffer cache, GroupQueryAttention sliding_window_cache=1,
# which opmlc refuses)
EXTRA_OPTIONS = {"mistral": ["windowed_kv_cache=false"]}


def stdlib_texts(limit: int = 60) -> list[str]:
    """The first `limit` top-level stdlib sources, sorted by name (a fixed corpus)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return [str(p) for p in sorted(root.glob("*.py"))[:limit]]


def make_tokenizer(folder: Path, vocab: int = VOCAB) -> None:
    """A byte-level BPE (GPT-2 style) trained on stdlib sources, saved as tokenizer.json with the
    config files transformers and onnxruntime-genai read."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train(stdlib_texts(), trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
        "add_bos_token": False, "add_eos_token": False, "model_max_length": 4096}, indent=1))
    (folder / "special_tokens_map.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))


def make_hf_model(folder: Path, arch: str, hidden: int, layers: int, heads: int, kv_heads: int,
                  mlp: int, context: int, seed: int) -> None:
    """A random-init decoder of `arch` saved with save_pretrained (float32 safetensors)."""
    import torch
    import transformers as tf

    common = dict(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=context,
                  bos_token_id=0, eos_token_id=1, tie_word_embeddings=False, torch_dtype="float32")
    config, cls = {
        "llama": (lambda: tf.LlamaConfig(**common), tf.LlamaForCausalLM),
        "qwen2": (lambda: tf.Qwen2Config(**common), tf.Qwen2ForCausalLM),
        # Mistral's sliding window (GroupQueryAttention's local_window_size), short enough that a
        # prompt and its 16 new tokens run past it
        "mistral": (lambda: tf.MistralConfig(**common, sliding_window=SLIDING_WINDOW,
                                               layer_types=["sliding_attention"] * layers), tf.MistralForCausalLM),
        # the short-context Phi-3 (the builder's Phi3MiniModel): original_max_position_embeddings equal
        # to max_position_embeddings, no LongRoPE scaling
        "phi3": (lambda: tf.Phi3Config(**common, pad_token_id=0, original_max_position_embeddings=context),
                 tf.Phi3ForCausalLM),
        "gemma": (lambda: tf.GemmaConfig(**common, head_dim=hidden // heads), tf.GemmaForCausalLM),
        # Phi-2's layout: LayerNorm, parallel attention and MLP, biases, partial rotary (0.5 here)
        "phi": (lambda: tf.PhiConfig(**common, partial_rotary_factor=0.5), tf.PhiForCausalLM),
    }[arch]
    torch.manual_seed(seed)
    model = cls(config()).eval()
    with torch.no_grad():  # random init gives near-uniform logits; wider weights give decisive ones
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.08)
            elif name.endswith(".bias") and "norm" not in name:  # zero at init: the export would drop them
                p.normal_(0.0, 0.02)
    model.save_pretrained(folder)


def make_genai(out: str | Path, arch: str = "llama", hidden: int = 256, layers: int = 2, heads: int = 4,
               kv_heads: int = 2, mlp: int = 512, context: int = 128, seed: int = 0,
               precision: str = "int4") -> Path:
    """Build the onnxruntime-genai folder `out` (model.onnx, model.onnx.data, genai_config.json,
    tokenizer files); returns it."""
    if arch not in ARCHS:
        raise SystemExit(f"--arch {arch!r}: choose one of {', '.join(ARCHS)}")
    out = Path(out)
    src = out.parent / (out.name + ".hf")
    shutil.rmtree(src, ignore_errors=True)
    make_tokenizer(src)
    make_hf_model(src, arch, hidden, layers, heads, kv_heads, mlp, context, seed)
    cache = out.parent / (out.name + ".cache")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    extra = ["--extra_options", *EXTRA_OPTIONS[arch]] if arch in EXTRA_OPTIONS else []
    subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(src), "-o", str(out),
                    "-p", precision, "-e", "cpu", "-c", str(cache), *extra], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.rmtree(cache, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--arch", default="llama", choices=ARCHS)
    for name, default in (("hidden", 256), ("layers", 2), ("heads", 4), ("kv-heads", 2), ("mlp", 512),
                          ("context", 128), ("seed", 0)):
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--precision", default="int4", choices=("int4", "fp32"))
    a = ap.parse_args()
    print(make_genai(a.out, a.arch, a.hidden, a.layers, a.heads, a.kv_heads, a.mlp, a.context, a.seed, a.precision))


if __name__ == "__main__":
    main()
