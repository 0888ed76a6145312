"""An onnxruntime-genai model folder as the compiler sees it: genai_config.json's decoder
section (file, input/output names, layers, heads) and the static shapes of one decoding step.

A decoding step reads one token: `input_ids` [1, 1], `attention_mask` [1, C] (ones at the
positions written so far and the new one, zeros after), and per layer the key/value cache
[1, kv_heads, C, head] as graph inputs; it writes `logits` [1, 1, vocab] and the present cache
of the same shape (onnxruntime's shared-buffer layout). C, the context, is chosen at compile
time: `--max-context N`, else genai_config.json's context_length capped at DEFAULT_CONTEXT_CAP.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from opmlc.errors import ModelError

CONFIG = "genai_config.json"
DEFAULT_CONTEXT_CAP = 256  # a default context that keeps a tiny model's VM tasks small; --max-context for more
KV_BOUND = 64.0  # the declared range ±KV_BOUND of every cache entry (keys after rotary, values)


@dataclass(frozen=True)
class GenaiConfig:
    folder: Path
    filename: str
    context_length: int
    layers: int
    kv_heads: int
    head_size: int
    vocab_size: int
    input_ids: str
    attention_mask: str
    past_key: str  # with %d for the layer
    past_value: str
    logits: str
    present_key: str
    present_value: str
    eos_token_ids: tuple[int, ...]
    model_type: str

    @property
    def model_path(self) -> Path:
        return self.folder / self.filename

    def cache_inputs(self) -> list[str]:
        return [n % i for i in range(self.layers) for n in (self.past_key, self.past_value)]

    def cache_outputs(self) -> list[str]:
        return [n % i for i in range(self.layers) for n in (self.present_key, self.present_value)]

    def context(self, max_context: int | None) -> int:
        if max_context is None:
            return min(self.context_length, DEFAULT_CONTEXT_CAP)
        if not 2 <= max_context <= self.context_length:
            raise ModelError(f"--max-context {max_context}: choose 2..{self.context_length} "
                             f"(the context_length of {self.folder / CONFIG})")
        return max_context

    def input_shapes(self, context: int) -> dict[str, tuple[int, ...]]:
        shapes = {self.input_ids: (1, 1), self.attention_mask: (1, context)}
        for name in self.cache_inputs():
            shapes[name] = (1, self.kv_heads, context, self.head_size)
        return shapes

    def input_ranges(self) -> dict[str, tuple[float, float]]:
        return {name: (-KV_BOUND, KV_BOUND) for name in self.cache_inputs()}

    def record(self, context: int) -> dict:
        """What a build's manifest keeps ("genai"): enough to run generation without the folder's
        config, and the folder itself for the tokenizer."""
        return {"folder": str(self.folder.resolve()), "context": context, "layers": self.layers,
                "input_ids": self.input_ids, "attention_mask": self.attention_mask,
                "cache_inputs": self.cache_inputs(), "logits": self.logits,
                "cache_outputs": self.cache_outputs(), "eos_token_ids": list(self.eos_token_ids),
                "vocab_size": self.vocab_size, "model_type": self.model_type}


def find_config(model: str | Path) -> GenaiConfig | None:
    """The onnxruntime-genai configuration of `model` (a folder, or a file in one) when its folder
    has genai_config.json naming that file as the decoder; else None."""
    model = Path(model)
    folder = model if model.is_dir() else model.parent
    path = folder / CONFIG
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        m = doc["model"]
        dec = m["decoder"]
        ins, outs = dec["inputs"], dec["outputs"]
        eos = m.get("eos_token_id", [])
        cfg = GenaiConfig(
            folder=folder, filename=dec["filename"], context_length=int(m["context_length"]),
            layers=int(dec["num_hidden_layers"]), kv_heads=int(dec["num_key_value_heads"]),
            head_size=int(dec["head_size"]), vocab_size=int(m["vocab_size"]),
            input_ids=ins["input_ids"], attention_mask=ins["attention_mask"],
            past_key=ins["past_key_names"], past_value=ins["past_value_names"], logits=outs["logits"],
            present_key=outs["present_key_names"], present_value=outs["present_value_names"],
            eos_token_ids=tuple(int(e) for e in (eos if isinstance(eos, list) else [eos])),
            model_type=str(m.get("type", "")))
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{path}: not an onnxruntime-genai configuration ({type(exc).__name__}: {exc}); "
                         "re-export the model with onnxruntime_genai.models.builder") from None
    if not model.is_dir() and model.name != cfg.filename:
        return None
    return cfg


def model_file(model: str | Path) -> Path:
    """The ONNX file to compile: `model` itself, or a genai folder's decoder file."""
    model = Path(model)
    if model.is_dir():
        cfg = find_config(model)
        if cfg is None:
            raise ModelError(f"{model}: a folder without {CONFIG}; pass the .onnx file")
        return cfg.model_path
    return model


NEXT_TOKEN = "next_token"  # the output opmlc adds: the greedy choice, part of every step's trace


def add_next_token(model, cfg: GenaiConfig) -> None:
    """Append ArgMax(logits of the last position) as graph output NEXT_TOKEN (int64 [1, 1]), so
    that a decoding step computes the token the next step reads, and a dispute covers it (first
    index among equal logits, as onnxruntime-genai's greedy search)."""
    import onnx
    from onnx import helper

    g = model.graph
    if any(o.name == NEXT_TOKEN for o in g.output):
        return
    if not any(o.name == cfg.logits for o in g.output):
        raise ModelError(f"{cfg.model_path}: no output {cfg.logits!r} (genai_config.json's logits)")
    g.node.append(helper.make_node("ArgMax", [cfg.logits], [NEXT_TOKEN], name="opmlc/next_token", axis=-1,
                                   keepdims=0))
    g.output.append(helper.make_tensor_value_info(NEXT_TOKEN, onnx.TensorProto.INT64, [1, 1]))
