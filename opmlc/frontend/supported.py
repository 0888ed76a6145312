"""What the frontend accepts: every ONNX op with a lowering rule, its domain and opset versions.

Where it sits: read-only over the rule registry (opmlc/frontend/rules, RULES) and onnx's op
schemas; `opmlc ops` prints it. An op with a rule is supported in every opset the loader accepts
(opmlc/frontend/load.py); its schema versions in that range say which of its definitions the
rule has to handle. Ops without a rule still compile where all their inputs are constants:
they are folded by onnx's reference evaluator before any rule is consulted.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from opmlc.frontend.load import MAX_OPSET, MIN_OPSET
from opmlc.frontend.rules import RULES

ML_DOMAIN = "ai.onnx.ml"


@dataclass(frozen=True)
class SupportedOp:
    domain: str          # "ai.onnx", "ai.onnx.ml" or "com.microsoft" (onnxruntime's contrib ops)
    op: str
    versions: tuple[int, ...]  # the op's schema versions (since_version) that apply in the range
    opsets: tuple[int, int] | None  # the domain's opsets the loader accepts; None: not checked

    def to_json(self) -> dict:
        return {"domain": self.domain, "op": self.op, "versions": list(self.versions),
                "opsets": list(self.opsets) if self.opsets else None}


def _schema_versions() -> dict[tuple[str, str], list[int]]:
    out: dict[tuple[str, str], list[int]] = {}
    for s in onnx.defs.get_all_schemas_with_history():
        out.setdefault((s.domain or "ai.onnx", s.name), []).append(s.since_version)
    return {k: sorted(v) for k, v in out.items()}


def supported_ops() -> list[SupportedOp]:
    """Every op with a lowering rule, sorted by domain then name."""
    history = _schema_versions()
    ops = []
    for key in RULES:
        domain, _, op = key.rpartition(":")
        domain = domain or "ai.onnx"
        versions = history.get((domain, op), [])
        if domain == "ai.onnx":
            opsets = (MIN_OPSET, MAX_OPSET)
            # the definition in force at MIN_OPSET, and every later one up to MAX_OPSET
            first = max((v for v in versions if v <= MIN_OPSET), default=None)
            versions = [v for v in versions if (first is not None and v == first) or MIN_OPSET < v <= MAX_OPSET]
        else:
            opsets = None
        ops.append(SupportedOp(domain, op, tuple(versions), opsets))
    return sorted(ops, key=lambda s: (s.domain != "ai.onnx", s.domain, s.op))
