"""The native conv kernel (opmlc/backend/kernels/native/conv.py: patches gathered chunk by chunk,
multiplied by the weight's s16 planes) against the interpreter, bit for bit and count for
count, on 1 and 2 threads: 1-, 2- and 3-D windows with strides, dilations and asymmetric
padding, batches, several chunks a node, int32 extremes (matmul_vnni16's fallback and
saturation on both sides); and its portable body, for a weight that is not an initializer."""

from __future__ import annotations

import numpy as np
import pytest

from opmlc.backend.kernels.native import (
    SPLIT_MIN_WORK,
    conv,
    host_kernel_for,
    matmul_vnni16,
    node_facts,
    split_worth,
)
from opmlc.ir import fixedpoint as fp
from opmlc.ir.graph import GraphBuilder
from opmlc.ir.types import DType, TensorType
from tests.kernels.harness import int_array, threads_equal_interpreter

pytestmark = pytest.mark.skipif(not matmul_vnni16.has_vnni(), reason="the host has no AVX-512 VNNI")


def _fx(shape, frac):
    return TensorType(DType.FX32, tuple(shape), frac)


def _graph(x_shape, w, bias=None, fracs=(20, 20, 16), weight_input=False, **attrs):
    r = len(x_shape) - 2
    b = GraphBuilder("t_conv")
    x = b.add_input("x", _fx(x_shape, fracs[0]))
    wt = _fx(w.shape, fracs[1])
    refs = [x, b.add_input("w", wt) if weight_input else b.add_initializer("w", w, wt)]
    if bias is not None:
        refs.append(b.add_initializer("c", bias, _fx(bias.shape, 18)))
    attrs = {"strides": [1] * r, "dilations": [1] * r, "pads": [0] * (2 * r), "group": 1, "frac": fracs[2], **attrs}
    b.mark_output(b.add_node("conv", refs, attrs, "y"))
    return b.build()


def _chunks(g) -> int:
    node = g.nodes[0]
    rows0 = conv._plan(g.input_types(node), node.attrs, g.values[node.output].type)
    return -(-g.values[node.output].type.shape[2] // rows0)


@pytest.mark.parametrize("x_shape, w_shape, attrs", [
    ((1, 16, 9, 9), (32, 16, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 3, 11, 7), (16, 3, 3, 2), {"pads": [2, 0, 1, 1], "strides": [2, 1], "dilations": [1, 2]}),
    ((1, 5, 20), (17, 5, 4), {"pads": [3, 1], "strides": [3]}),
    ((1, 4, 5, 6, 7), (16, 4, 2, 3, 2), {"pads": [1, 0, 1, 1, 1, 0]}),
    ((1, 40, 33, 30), (64, 40, 3, 3), {"pads": [1, 1, 1, 1]}),  # three chunks, split over threads
    ((1, 16, 5, 5), (16, 16, 2, 2), {"pads": [3, 3, 3, 2], "strides": [2, 3], "dilations": [2, 1]}),  # whole windows
    # in the padding (outputs = bias), a stride past the kernel, dilation along the chunked dimension
])
def test_equals_interpreter_on_random_shapes(x_shape, w_shape, attrs):
    rng = np.random.default_rng(sum(x_shape) + sum(w_shape))
    w, bias = int_array(rng, 21, w_shape), int_array(rng, 20, (w_shape[0],))
    g = _graph(x_shape, w, bias if x_shape[0] == 1 else None, **attrs)
    assert node_facts(g, 0).get("derived"), "the planes' path did not take the node"
    threads_equal_interpreter(g, [int_array(rng, 23, x_shape)])
    if x_shape[2] == 33:
        assert _chunks(g) > 1 and split_worth(g, 0)


@pytest.mark.parametrize("x_shape, w_shape, groups", [
    ((1, 32, 9, 9), (64, 16, 3, 3), 2),  # 16 channels a group: the band's vector copies
    ((2, 15, 7, 8), (48, 5, 3, 2), 3),  # 5: element by element
])
def test_groups_equal_interpreter(x_shape, w_shape, groups):
    """Grouped convolutions: each group's patches from its channels of the band, its own planes
    (at a multiple of `_group_bytes` in one derived buffer), its own columns of the output."""
    rng = np.random.default_rng(groups)
    w = int_array(rng, 21, w_shape)
    g = _graph(x_shape, w, int_array(rng, 20, (w_shape[0],)), group=groups, pads=[1, 0, 1, 1])
    assert node_facts(g, 0).get("groups") == groups
    threads_equal_interpreter(g, [int_array(rng, 23, x_shape)])


def test_groups_of_other_plane_counts_take_the_portable_body():
    """Groups whose weights need different numbers of planes (one kernel serves every group) run
    the portable body; fewer than MIN_CHANNELS outputs a group of several inputs, the portable
    kernel itself."""
    rng = np.random.default_rng(4)
    w = np.concatenate([int_array(rng, 12, (16, 4, 3, 3)), int_array(rng, 21, (16, 4, 3, 3))])
    g = _graph((1, 8, 6, 6), w, group=2)
    assert host_kernel_for(g, 0) is not None and not node_facts(g, 0)
    threads_equal_interpreter(g, [int_array(rng, 23, (1, 8, 6, 6))])
    assert host_kernel_for(_graph((1, 16, 6, 6), int_array(rng, 21, (16, 2, 3, 3)), group=8), 0) is None


@pytest.mark.parametrize("x_shape, w_shape, attrs", [
    ((1, 64, 48, 48), (64, 1, 3, 3), {"pads": [1, 1, 1, 1]}),  # split over threads
    ((2, 6, 11, 13), (12, 1, 3, 5), {"pads": [2, 0, 1, 3], "strides": [2, 3], "dilations": [1, 2]}),  # 2 a channel
    ((1, 5, 21), (5, 1, 4), {"pads": [3, 1], "strides": [2]}),
    ((1, 3, 4, 5, 9), (3, 1, 2, 2, 3), {"pads": [1, 0, 1, 1, 0, 2], "dilations": [1, 2, 1]}),
])
def test_depthwise_equals_interpreter(x_shape, w_shape, attrs):
    """Depthwise convolutions (one input channel a group): eight outputs along the last
    dimension a vector, per tap a masked gather (0 in the padding and past the row)."""
    rng = np.random.default_rng(sum(x_shape))
    w = int_array(rng, 21, w_shape)
    g = _graph(x_shape, w, int_array(rng, 20, (w_shape[0],)) if x_shape[0] == 1 else None, group=x_shape[1],
               **attrs)
    assert host_kernel_for(g, 0) is not None and not node_facts(g, 0)
    threads_equal_interpreter(g, [int_array(rng, 23, x_shape)])
    if x_shape[1] == 64:
        assert split_worth(g, 0)


def test_depthwise_saturates_and_wraps_as_the_interpreter():
    """int32 extremes in x and w: products to 2^62, sums wrapping in i64, outputs saturating on
    both sides (a rounding shift of 8)."""
    rng = np.random.default_rng(8)
    pick = np.array([fp.INT32_MIN, fp.INT32_MAX, 0, -1, 1 << 30], np.int64)
    w = rng.choice(pick, size=(4, 1, 3, 3)).astype(np.int32)
    g = _graph((1, 4, 7, 9), w, fracs=(4, 4, 0), group=4, pads=[1, 1, 1, 1])
    x = rng.choice(pick, size=(1, 4, 7, 9)).astype(np.int32)
    _, sat = threads_equal_interpreter(g, [x])
    assert sat.get(0)


def test_int32_extremes_fallback_and_saturation():
    """x at ±2^31 (no plane scheme: matmul_vnni16's i64 fallback), weights at ±2^15 (split
    planes), a rounding shift of 8 only, so that outputs saturate on both sides; a second x of moderate range in the
    same session takes a plane scheme."""
    rng = np.random.default_rng(5)
    w = rng.choice(np.array([1 << 15, -(1 << 15) - 1, 3, -7], np.int64), size=(24, 6, 3, 3)).astype(np.int32)
    g = _graph((1, 6, 8, 8), w, fracs=(4, 4, 0), pads=[1, 1, 1, 1])
    assert node_facts(g, 0).get("derived")
    x = rng.choice(np.array([fp.INT32_MIN, fp.INT32_MAX, 0, 1 << 20], np.int64), size=(1, 6, 8, 8)).astype(np.int32)
    _, sat = threads_equal_interpreter(g, [x])
    assert sat.get(0), "the case meant to saturate did not"
    threads_equal_interpreter(g, [int_array(rng, 14, (1, 6, 8, 8))])


def test_portable_body_without_planes():
    """A weight that is a graph input has no facts: the host kernel runs the portable body,
    whole on one thread and over the parts' flat elements on two. Fewer than MIN_CHANNELS
    output channels leave the node to the portable kernel itself."""
    rng = np.random.default_rng(9)
    xs, ws = (1, 16, 24, 24), (32, 16, 3, 3)
    g = _graph(xs, np.zeros(ws, np.int32), weight_input=True, pads=[1, 1, 1, 1])
    assert host_kernel_for(g, 0) is not None and not node_facts(g, 0) and split_worth(g, 0)
    assert 32 * 24 * 24 * 16 * 9 >= SPLIT_MIN_WORK
    threads_equal_interpreter(g, [int_array(rng, 23, xs), int_array(rng, 21, ws)])
    narrow = _graph((1, 4, 6, 6), int_array(rng, 21, (conv.MIN_CHANNELS - 1, 4, 3, 3)))
    assert host_kernel_for(narrow, 0) is None


@pytest.mark.parametrize("zero_point, groups", [(False, 1), (True, 1), (True, 2)])
def test_qconv_8_bit_weights_equal_interpreter(zero_point, groups):
    """qconv (Conv under --weights int8) through the same path on one plane of q − zp, each
    channel's sum times its scale in the finish: a zero point, a bias, per-channel scales of
    either sign up to 2^22; then x at the int32 extremes (matmul_vnni16's fallback, scaled too)."""
    rng = np.random.default_rng(11 + zero_point + groups)
    m, xs = 24 * groups, (1, 8, 10, 9)
    b = GraphBuilder("t_qconv")
    refs = [b.add_input("x", _fx(xs, 20)),
            b.add_initializer("q", rng.integers(-128, 128, (m, 8 // groups, 3, 3)).astype(np.int8),
                              TensorType(DType.I8, (m, 8 // groups, 3, 3))),
            b.add_initializer("s", rng.integers(-(1 << 22), 1 << 22, (m, 1)).astype(np.int32), _fx((m, 1), 24))]
    if zero_point:
        refs.append(b.add_initializer("z", rng.integers(-5, 5, (m, 1)).astype(np.int8), TensorType(DType.I8, (m, 1))))
    refs.append(b.add_initializer("c", int_array(rng, 20, (m,)), _fx((m,), 18)))
    attrs = {"strides": [2, 1], "dilations": [1, 1], "pads": [1, 1, 0, 1], "group": groups, "frac": 16,
             "block_size": 72 // groups}
    b.mark_output(b.add_node("qconv", refs, attrs, "y"))
    g = b.build()
    facts = node_facts(g, 0)
    assert facts.get("derived") and facts["planes"] == 1 and facts["scaled"], facts
    threads_equal_interpreter(g, [int_array(rng, 23, xs)])
    x = rng.choice(np.array([fp.INT32_MIN, fp.INT32_MAX, 0, -1], np.int64), size=xs).astype(np.int32)
    threads_equal_interpreter(g, [x])
