"""Native Merkle hashing (vm/native_hash.py, vm/keccak_ir.py) gives the bytes of the pure-Python
reference (vm.merkle.python_*) — on random, all-zero and mixed buffers of many sizes, any
thread count and every vector width — and known keccak256 answers; memory roots and an example
build's tensor and base roots are the same either way."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from eth_hash.auto import keccak as other_keccak  # another implementation than the kernel's

from vm import merkle, native_hash
from vm.memory import PAGE_SIZE, Memory

K = native_hash.kernels()
needs_native = pytest.mark.skipif(
    K is None, reason="no native keccak here (no JIT for this host, or OPMLC_PURE_PYTHON_HASH set)"
)

SIZES = [32, 64, 128, 256, 512, 4096, 1 << 15, 1 << 16, 1 << 17, 1 << 20, 1 << 22]


def buffers(size: int, rng: random.Random) -> list[tuple[str, bytes]]:
    dense = rng.randbytes(size)
    mixed = bytearray(rng.randbytes(size))
    for _ in range(6):  # zero runs of every length, some aligned to whole chunks, some not
        a = rng.randrange(size)
        b = min(size, a + rng.choice([32, 100, 4096, merkle.NATIVE_CHUNK, size]))
        mixed[a:b] = bytes(b - a)
    sparse = bytearray(size)  # mostly empty, like memory: a few nonzero bytes
    for _ in range(3):
        sparse[rng.randrange(size)] = rng.randrange(1, 256)
    tail = bytearray(dense)  # a tensor in its region: data, then zero padding
    tail[size // 2 + 7 :] = bytes(size - size // 2 - 7)
    return [("dense", dense), ("zero", bytes(size)), ("mixed", bytes(mixed)),
            ("sparse", bytes(sparse)), ("padded", bytes(tail))]


def test_known_keccak256_answers():
    assert merkle.keccak256(b"").hex() == (
        "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470")
    # keccak256 of 64 zero bytes: the zero hash of height 1, a well-known Ethereum constant
    want = bytes.fromhex("ad3228b676f7d3cd4284a5443f17f1962b36e491b30a40b2405849e597ba5fb5")
    assert merkle.hash_pairs(bytes(64 * 9)) == want * 9
    assert merkle.ZERO_HASHES[1] == want


@needs_native
@pytest.mark.parametrize("width", [1, 2, 4, 8])
def test_every_vector_width_hashes_like_keccak256(width):
    k = native_hash.Kernels(width)
    rng = random.Random(width)
    for n in [*range(1, 19), 64, 1000]:  # whole groups and every remainder
        blocks = rng.randbytes(64 * n)
        want = b"".join(other_keccak(blocks[i : i + 64]) for i in range(0, len(blocks), 64))
        assert k.keccak_blocks(blocks) == want, n


@needs_native
@pytest.mark.parametrize("size", SIZES)
def test_subtree_roots_equal_the_python_reference(size):
    rng = random.Random(size)
    for name, data in buffers(size, rng):
        want = merkle.python_subtree_root(data)
        for threads in (1, 2, 3, 5):
            assert merkle.subtree_root(data, threads) == want, (name, threads)
        assert merkle.subtree_root(bytearray(data)) == want
        assert merkle.subtree_root(memoryview(data)) == want
        if size <= 1 << 17:
            assert merkle.tree_levels(data) == merkle.python_tree_levels(data), name


@needs_native
def test_chunk_roots_and_pairs_equal_the_python_reference():
    rng = random.Random(7)
    _, data = buffers(1 << 20, rng)[2]
    for chunk in (32, 64, 4096, merkle.NATIVE_CHUNK, 1 << 18, 1 << 20):
        want = b"".join(merkle.python_subtree_root(data[i : i + chunk])
                        for i in range(0, len(data), chunk))
        assert merkle.chunk_roots(data, chunk, threads=3) == want, chunk
    pairs = data[: 64 * 40]
    want = b"".join(other_keccak(pairs[i : i + 64]) for i in range(0, len(pairs), 64))
    assert merkle.hash_pairs(pairs) == want


def test_the_python_path_skips_zero_pairs_with_the_same_bytes():
    level = merkle.ZERO_HASHES[3] * 2 + bytes(range(64))
    assert merkle.python_subtree_root(bytes(256)) == merkle.ZERO_HASHES[3]
    want = merkle.ZERO_HASHES[4] + other_keccak(bytes(range(64)))
    assert merkle.hash_pairs(level, height=3) == merkle.hash_pairs(level) == want


@pytest.fixture
def python_only(monkeypatch):
    """vm.merkle as if this process had no native kernels."""
    monkeypatch.setattr(native_hash, "kernels", lambda: None)


def _busy_memory(rng: random.Random) -> Memory:
    m = Memory()
    for _ in range(300):  # scattered words and a few whole regions
        m.write_u32(rng.randrange(0, 1 << 32, 4), rng.getrandbits(32))
    m.write_bytes(0x10_0000, rng.randbytes(3 * PAGE_SIZE + 100))
    store = {}
    data = rng.randbytes(1 << 20) + bytes(1 << 19)
    root = merkle.python_subtree_root(data + bytes((1 << 21) - len(data)))
    store[root] = data
    m.splice(0x40_0000, 1 << 21, root, store)
    m.read_u32(0x40_0000)  # materialised: pages and inner nodes hashed in batches
    return m


@needs_native
def test_memory_roots_and_proofs_are_the_same_without_native_code(monkeypatch):
    native = _busy_memory(random.Random(3))
    with monkeypatch.context() as mp:
        mp.setattr(native_hash, "kernels", lambda: None)
        python = _busy_memory(random.Random(3))
        assert python.root() == native.root()
        want_proof = python.proof(0x40_1000)
    assert native.proof(0x40_1000) == want_proof
    assert native.region_root(0x40_0000, 1 << 21) == merkle.python_subtree_root(
        native.read_region(0x40_0000, 1 << 21))


@needs_native
def test_an_example_builds_roots_are_unchanged(digits_build, python_only):
    """Built with native hashing (the session's fixture); every root checks in Python."""
    manifest = json.loads((digits_build.directory / "manifest.json").read_text())
    store = digits_build.store
    for rec in manifest["initializers"]:
        root = bytes.fromhex(rec["root"][2:])
        assert merkle.python_subtree_root(store.get(root)) == root, rec["name"]
    from opmlc.backend.program import tasks_record
    from opmlc.backend.regions import node_maps, whole_graph_map

    elf = (digits_build.directory / "model.elf").read_bytes()
    g = digits_build.graph
    assert tasks_record(elf, whole_graph_map(g), node_maps(g)) == manifest["program"]["tasks"]


def test_the_environment_can_force_the_python_path():
    code = "from vm import native_hash as n; print(n.kernels() is None, n.backend())"
    env = {**os.environ, native_hash.ENV_PURE_PYTHON: "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith("True pure Python"), out


@needs_native
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_still_hashes_on_threads():
    data = random.Random(5).randbytes(1 << 23)
    want = merkle.subtree_root(data, 2)  # the parent's pool exists now
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        os._exit(0 if merkle.subtree_root(data, 2) == want else 1)
    deadline = time.monotonic() + 60  # a child stuck on the parent's dead pool would hang
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child did not finish hashing")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(done[1]) == 0


def _swap_words(data: bytes) -> bytes:
    return b"".join(data[i : i + 8][::-1] for i in range(0, len(data), 8))


@needs_native
def test_the_big_endian_variant_swaps_every_word():
    """A big-endian host's kernel, run here: it sees every 64-bit word byte-swapped."""
    k = native_hash.Kernels(4, big_endian=True)
    blocks = random.Random(9).randbytes(64 * 7)
    assert k.keccak_blocks(_swap_words(blocks)) == _swap_words(merkle.hash_pairs(blocks))
