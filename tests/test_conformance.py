"""The ONNX conformance harness on a fast subset (the full run is `opmlc conformance`): each
listed op's node test cases pass, natively too, and the CLI reports the counts as JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from opmlc import conformance
from opmlc.cli import app

SUBSET = ["Conv", "MaxPool", "Relu", "Gemm", "Sigmoid", "Tanh", "Transpose", "Concat", "Slice", "Div",
          "ReduceMean", "ArgMax", "Where", "Cast"]


@pytest.fixture(scope="module")
def subset_report():
    return conformance.run(SUBSET, native=True)


def test_the_subset_passes_on_the_interpreter_and_natively(subset_report):
    failed = [(r.name, r.detail) for r in subset_report.results if r.status == "failed"]
    assert not failed
    per_op = subset_report.per_op()
    for op in ("Conv", "MaxPool", "Sigmoid", "Tanh", "Transpose", "Slice", "ArgMax"):
        assert per_op[op]["passed"] >= 2, op


def test_every_case_is_counted(subset_report):
    t = subset_report.totals()
    assert t["passed"] + t["failed"] + t["unsupported"] == t["total"] == len(conformance.collect(SUBSET))


def test_unsupported_cases_say_why(subset_report):
    for r in subset_report.results:
        if r.status == "unsupported":
            assert r.detail


def test_tolerance_scales_with_fractional_bits():
    want = np.array([0.0, 1.0, -3.0])
    assert np.allclose(conformance.tolerance(want, 24), 2.0**-16 * (1 + np.abs(want)))
    assert np.all(conformance.tolerance(want, 16) > conformance.tolerance(want, 24))


def test_cli_json_counts():
    r = CliRunner().invoke(app, ["conformance", "--op", "Relu", "--op", "LeakyRelu", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["passed"] == doc["total"] > 0 and set(doc["ops"]) == {"Relu", "LeakyRelu"}


# Ops added for issue 16 (recurrent layers, LRN, the log family, attention, losses): their
# node cases on the interpreter (the native build of their IR ops is checked bit for bit by
# tests/kernels and tests/frontend/test_recurrent_and_lrn.py).
NEW_OPS = {"LSTM": 6, "GRU": 6, "RNN": 6, "LRN": 2, "Log": 2, "Softplus": 4, "Hardmax": 7, "BatchNormalization": 4,
           "InstanceNormalization": 2, "GroupNormalization": 4, "BitwiseNot": 3, "CumSum": 9}
NAMED_CASES = ["test_logsoftmax_axis_1", "test_reduce_log_sum_exp_do_not_keepdims_random", "test_pow",
               "test_nllloss_NCd1d2d3_none_no_weight_negative_ii", "test_sce_mean_weight_ii_4d_log_prob",
               "test_lpnormalization_default", "test_gemm_transposeA", "test_center_crop_pad_crop_and_pad",
               "test_onehot_negative_indices", "test_cumsum_1d_reverse_exclusive", "test_cumsum_2d_int32",
               "test_resize_downsample_scales_cubic_antialias", "test_resize_tf_crop_and_resize_extrapolation_value",
               "test_resize_upsample_sizes_nearest_axes_3_2", "test_attention_3d_gqa_causal", "test_attention_4d_with_past_and_present_qk_matmul_bias",
                   "test_attention_4d_diff_heads_sizes_softcap", "test_attention_4d_attn_mask_bool_4d",
                   "test_attention_4d_causal_nonpad_attn_mask_composition", "test_attention_local_window_with_past",
                   "test_attention_23_fullymasked_qk_matmul_output_mode3_zero"]


def test_the_added_ops_pass_every_node_case():
    report = conformance.run(list(NEW_OPS))
    per_op = report.per_op()
    for op, n in NEW_OPS.items():
        assert per_op[op] == {"passed": n, "failed": 0, "unsupported": 0}, (op, per_op[op])


def test_attention_losses_and_log_variants_pass():
    ops = ["Attention", "LogSoftmax", "ReduceLogSumExp", "Pow", "NegativeLogLikelihoodLoss",
           "SoftmaxCrossEntropyLoss", "LpNormalization", "Gemm", "CenterCropPad", "OneHot", "CumSum",
           "Resize"]
    cases = {c.name: c for c in conformance.collect(ops)}
    for name in NAMED_CASES:
        r = conformance.run_case(cases[name])
        assert r.status == "passed", (name, r.detail)


def test_resize_leaves_onnxs_reference_as_it_was():
    from onnx.reference.ops import op_resize

    before = op_resize._interpolate_1d_along_axis
    cases = {c.name: c for c in conformance.collect(["Resize"])}
    assert conformance.run_case(cases["test_resize_upsample_scales_linear"]).status == "passed"
    assert op_resize._interpolate_1d_along_axis is before


# Issue 12: ONNX's quantized ops (frontend/rules/quantized.py), natively too. Unsupported: the
# float8/float4 types; failed: test_dynamicquantizelinear (an exact float tie, docs/CONFORMANCE.md).
QUANTIZED = {"QuantizeLinear": (10, 0, 3), "DequantizeLinear": (9, 0, 5), "QLinearMatMul": (8, 0, 0),
             "QLinearConv": (1, 0, 0), "MatMulInteger": (1, 0, 0), "ConvInteger": (2, 0, 0),
             "DynamicQuantizeLinear": (2, 1, 3)}


def test_the_quantized_ops_node_cases():
    per_op = conformance.run(list(QUANTIZED), native=True).per_op()
    for op, (p, f, u) in QUANTIZED.items():
        assert per_op[op] == {"passed": p, "failed": f, "unsupported": u}, (op, per_op[op])
