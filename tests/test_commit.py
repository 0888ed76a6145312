"""Tensor commitments: known answers of DESIGN "Commitments" (zero hashes, big-endian bytes,
padding, sensitivity to one leaf) and the graph trace."""

from __future__ import annotations

import numpy as np
from eth_hash.auto import keccak

from opmlc.commit import padded_bytes, region_size, tensor_root, trace_state
from opmlc.ir.types import DType, TensorType
from vm.merkle import ZERO_HASHES, ZERO_LEAF, list_root, subtree_root


def test_zero_hashes_follow_the_keccak_pair_rule():
    # computed here with another keccak implementation (eth_hash), not vm.merkle's
    z = bytes(32)
    for h in range(28):
        assert ZERO_HASHES[h] == z
        z = keccak(z + z)


def test_an_all_zero_tensor_has_the_zero_hash_of_its_level():
    for n, level in [(8, 0), (9, 1), (256, 5), (1000, 7)]:  # 4-byte elements → 2^(level+5) bytes
        t = TensorType(DType.FX32, (n,), 16)
        assert tensor_root(np.zeros(n, np.int32), t) == ZERO_HASHES[level]


def test_roots_are_over_big_endian_bytes_padded_with_zeros():
    t = TensorType(DType.FX32, (3,), 16)
    data = np.array([1, -2, 0x01020304], np.int32)
    raw = bytes.fromhex("00000001" "fffffffe" "01020304") + bytes(20)
    assert padded_bytes(data, t) == raw
    assert tensor_root(data, t) == raw  # one leaf: the root is the leaf itself
    t64 = TensorType(DType.I64, (9,))
    arr = np.arange(9, dtype=np.int64)
    assert region_size(t64) == 128
    assert tensor_root(arr, t64) == subtree_root(arr.astype(">i8").tobytes() + bytes(128 - 72))


def test_changing_one_leaf_changes_the_root():
    t = TensorType(DType.FX32, (64,), 16)
    base = np.arange(64, dtype=np.int32)
    roots = {tensor_root(base, t)}
    for i in (0, 7, 8, 63):
        changed = base.copy()
        changed[i] += 1
        roots.add(tensor_root(changed, t))
    assert len(roots) == 5


def test_trace_state_zeroes_the_outputs_not_yet_computed(digits_build):
    g = digits_build.graph
    roots = [bytes([i + 1]) * 32 for i in range(len(g.values))]
    assert trace_state(g, roots, len(g.nodes)) == list_root(roots)
    first = g.first_node_value
    assert trace_state(g, roots, 0) == list_root(roots[:first] + [ZERO_LEAF] * len(g.nodes))
    assert len({trace_state(g, roots, i) for i in range(len(g.nodes) + 1)}) == len(g.nodes) + 1


def test_the_one_copy_encoding_of_a_weight_equals_padded_bytes_for_every_dtype():
    from opmlc.commit import padded_buffer

    rng = np.random.default_rng(9)
    for dtype in DType:
        for shape in [(), (3,), (5, 7), (2, 3, 33)]:
            t = TensorType(dtype, shape, 0)
            nt = np.dtype(dtype.numpy)
            if nt == np.bool_:
                data = rng.integers(0, 2, size=shape).astype(bool)
            else:
                info = np.iinfo(nt) if nt.kind in "iu" else None
                lo, hi = (-8, 8) if info is None else (max(info.min, -8), min(info.max, 7))
                data = rng.integers(lo, hi, size=shape, endpoint=True).astype(nt)
            assert bytes(padded_buffer(data, t)) == padded_bytes(data, t), (dtype, shape)
