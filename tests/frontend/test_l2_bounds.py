"""L2 bounds in the range analysis (opmlc/frontend/l2bounds.py): attention scores at LLM width.

Interval arithmetic alone bounds q·kᵀ by K × the corner products and leaves a wide model's
scores few or no fractional bits; Cauchy–Schwarz on the L2 norms of q's and k's rows (from the
RMSNorm, the head's projection block and the rotary embedding) keeps them precise. The bound must
stay a proof: no element saturates on inputs in range.
"""

from __future__ import annotations

import numpy as np
import pytest

from opmlc.frontend.l2bounds import lam_upper, pair_sigma, sigma_max
from opmlc.frontend.lower import lower_model
from opmlc.ir.fixedpoint import dequantize
from opmlc.ir.interpreter import run_outputs


def test_sigma_max_is_an_upper_bound():
    rng = np.random.default_rng(0)
    for shape, slack in [((64, 512), 1e-6), ((300, 40), 1e-6), ((1, 7), 1e-6), ((700, 300), 0.03)]:
        w = rng.normal(0, 0.02, shape)  # the last: Gram of order 300, the Cholesky-verified path
        s = np.linalg.svd(w, compute_uv=False)[0]
        assert s <= sigma_max(w) <= s * (1 + slack)
    w = np.diag(np.linspace(1, 2, 400))  # a known spectrum: λ_max(WᵀW) = 4
    assert 4 <= lam_upper(w.T @ w) <= 4 * 1.1  # sound always; sharp within the 5% steps
    t = np.linspace(0, 3, 16)
    c, s = np.cos(np.tile(t, 2)), np.sin(np.tile(t, 2))
    assert abs(pair_sigma(c[None], s[None]) - 1) < 1e-6  # a rotation keeps norms
    assert pair_sigma(2 * c[None], 0 * s[None]) == pytest.approx(2)


@pytest.mark.slow
def test_wide_llama_scores_keep_their_bits_and_never_saturate(tmp_path):
    pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    from models.make_llama import LlamaShape, write_model

    shape = LlamaShape(hidden=512, layers=2, heads=8, kv_heads=2, mlp=1024, vocab=1000, context=16)
    path = write_model(shape, tmp_path / "llama", log=lambda *_: None)
    fe = lower_model(path)
    g = fe.graph
    scores = [n for n in g.nodes if n.op == "matmul" and not any(v in g.initializers for v in n.inputs)
              and g.values[n.output].type.shape[-1] == shape.context]
    assert len(scores) == shape.layers
    for n in scores:  # q·kᵀ: interval arithmetic alone gives these ~10 bits at this width
        assert g.values[n.output].type.frac >= 16
        assert fe.analysis.l2.dot_bound(n) < 2**14
    sess = ort.InferenceSession(str(path))
    rng = np.random.default_rng(1)
    for _ in range(3):
        tokens = rng.integers(0, shape.vocab, (1, shape.context)).astype(np.int64)
        saturated: dict[int, int] = {}
        (out,) = run_outputs(g, [tokens], saturated)
        assert saturated == {}
        ref = sess.run(None, {"tokens": tokens})[0]
        got = dequantize(out, g.values[g.outputs[0]].type.frac)
        assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-3
        assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.9
