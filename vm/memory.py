"""The VM's 4 GiB memory: sparse pages under the Merkle tree of DESIGN "Commitments".

Pipeline: vm/loader.py fills a Memory from model.elf and splices the task's input tensors into
it; vm/step.py and the fast path (vm/run.py) read and write words; vm/state.py puts `root()` in
the state encoding; vm/witness.py asks for `proof(addr)`, which `MIPS.sol` checks.

Layout of the tree (depth 27, 32-byte leaves, vm.merkle rules). A node is named by its
generalised index: the root is 1, the children of g are 2g and 2g+1, so the node of height h
(2^h leaves) that covers address a is (1 << (27 - h)) | (a >> (5 + h)). Bytes live in 4 KiB
pages (height 7); above the pages, the node hashes are cached in `_nodes`, where an absent
entry means an all-zero subtree. Writes only mark their page dirty; `root()` rehashes the
dirty pages and the paths above them, nothing else. Hashing goes by batches — all dirty
pages in one call, then each level's dirty nodes in one call — so that vm.merkle can give it to
native code (vm/native_hash.py) where the process has it.

Lazy regions. `splice` puts a subtree root (a tensor root) at an aligned region of ≥ 4 KiB and
records it in `_lazy` without fetching the bytes: the cached node *is* the spliced root, so the
memory root is right at once. Regions under 4 KiB share a page with other data, so they are
fetched at splice time. The first access to a page inside a lazy region materialises it:

- from a store that offers the tensor's page roots (`page_roots(root)`: the 32-byte roots of its
  4 KiB pages) and slices of its bytes (`read(root, offset, size)`), only that page: the page
  roots are checked once against the tensor root, the page's bytes against its page root, and
  the region is split along the page's path: each sibling subtree on the way down becomes a
  lazy region of its own, with its root from the page roots. A task that reads a few rows of a
  gigabyte table reads and hashes a few pages of it, never the table;
- from any other store (a dict), the whole region at once: its bytes are fetched, checked
  against the root, and become pages and inner nodes.

Either way the root is unchanged by construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from vm.errors import RegionError, StoreError
from vm.merkle import (
    EMPTY_MEMORY_ROOT,
    LEAF_BYTES,
    LEAF_SHIFT,
    MEMORY_DEPTH,
    ZERO_HASHES,
    chunk_roots,
    hash_pairs,
    height_of,
    subtree_root,
    tree_levels,
)

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = PAGE_SIZE - 1
PAGE_HEIGHT = PAGE_SHIFT - 5  # 128 leaves per page
PAGE_GINDEX = 1 << (MEMORY_DEPTH - PAGE_HEIGHT)  # generalised index of page 0's root
ADDRESS_MASK = 0xFFFFFFFF
PROOF_BYTES = (MEMORY_DEPTH + 1) * LEAF_BYTES  # 28 × 32: the leaf, then 27 siblings

_ZERO_PAGE = bytes(PAGE_SIZE)


class TensorStore(Protocol):
    """A content-addressed store: tensor root → the tensor's bytes (padding may be omitted).

    A store may also offer `page_roots(root) -> bytes | None` and `read(root, offset, size) ->
    bytes` (the module docstring says what they buy)."""

    def get(self, root: bytes, /) -> bytes | None: ...


class _Source:
    """A spliced tensor: its root and store, where it lies, and (once read) the Merkle levels
    over its page roots (`levels[j]`: nodes of height 7 + j, left to right)."""

    __slots__ = ("root", "store", "addr", "size", "levels")

    def __init__(self, root: bytes, store, addr: int, size: int) -> None:  # noqa: ANN001
        self.root, self.store, self.addr, self.size = root, store, addr, size
        self.levels: list[list[bytes]] | None | bool = None  # None: not read; False: store cannot page

    def paged_levels(self) -> list[list[bytes]] | None:
        if self.levels is None:
            self.levels = False
            get = getattr(self.store, "page_roots", None)
            pages = get(self.root) if get is not None and hasattr(self.store, "read") else None
            if pages is not None:
                if len(pages) != (self.size >> PAGE_SHIFT) * LEAF_BYTES:
                    raise StoreError(f"tensor 0x{self.root.hex()}: the store's page roots do not cover its region")
                levels = tree_levels(pages)
                if levels[-1][0] != self.root:
                    raise StoreError(f"tensor 0x{self.root.hex()}: the store's page roots hash to another root")
                self.levels = levels
        return self.levels or None

    def node(self, g: int) -> bytes:
        """The root of node g (height ≥ 7) inside this tensor's region, from its page roots."""
        h = _height_of_gindex(g)
        top_h = height_of(self.size)
        first = gindex(self.addr, self.size) << (top_h - h)
        return self.paged_levels()[h - PAGE_HEIGHT][g - first]

    def read(self, offset: int, size: int) -> bytes:
        """`size` bytes of the padded tensor from `offset`."""
        if self.levels:  # a paging store: a slice
            data = bytes(self.store.read(self.root, offset, size))
            return data + bytes(size - len(data))
        return _fetch(self.store, self.root, self.size)[offset : offset + size]


def gindex(addr: int, size: int) -> int:
    """Generalised index of the aligned region [addr, addr + size) in the memory tree."""
    h = height_of(size)
    return (1 << (MEMORY_DEPTH - h)) | (addr >> (LEAF_SHIFT + h))


def _under(n: int, g: int) -> bool:
    """Whether node n is g or lies in g's subtree."""
    d = n.bit_length() - g.bit_length()
    return d >= 0 and n >> d == g


def _height_of_gindex(g: int) -> int:
    return MEMORY_DEPTH + 1 - g.bit_length()


def _check_region(addr: int, size: int) -> None:
    if size < LEAF_BYTES or size & (size - 1) or size > 1 << 32:
        raise RegionError(f"region size {size:#x} is not a power of two between 32 bytes and 4 GiB")
    if addr % size or addr < 0 or addr + size > 1 << 32:
        raise RegionError(f"region at {addr:#x} is not aligned to its size {size:#x}")


def page_root(page: bytes | bytearray) -> bytes:
    """Merkle root of one 4 KiB page."""
    if page == _ZERO_PAGE:  # most pages a program creates (stack, .bss) stay zero
        return ZERO_HASHES[PAGE_HEIGHT]
    return subtree_root(page)


def _fetch(store: TensorStore | Mapping[bytes, bytes], root: bytes, size: int) -> bytes:
    try:
        data = store.get(root)
    except KeyError:  # stores that raise rather than return None (opmlc.store.TensorStore)
        data = None
    if data is None:
        raise StoreError(f"tensor root 0x{root.hex()} is not in the tensor store")
    data = bytes(data)
    if len(data) > size:
        raise StoreError(
            f"tensor 0x{root.hex()} has {len(data)} bytes, more than its {size}-byte region"
        )
    return data + bytes(size - len(data))


class Memory:
    """Sparse, Merkle-committed 4 GiB of byte memory.

    `pages` (page number → 4 KiB bytearray) and `dirty` (page numbers written since the last
    `root()`) are read and written directly by the fast path in vm/run.py; everything else goes
    through methods. A page absent from `pages` is all zero, unless it lies in a lazy region.
    """

    __slots__ = (
        "pages",
        "dirty",
        "code_pages",
        "code_written",
        "jit",
        "_nodes",
        "_dirty_nodes",
        "_lazy",
    )

    def __init__(self) -> None:
        self.pages: dict[int, bytearray] = {}
        self.dirty: set[int] = set()
        # Owned by vm/run.py: pages holding translated code, the ones of them written through
        # this class's methods since (so stale translations get dropped), and the translations.
        self.code_pages: set[int] = set()
        self.code_written: set[int] = set()
        self.jit: object | None = None
        self._nodes: dict[int, bytes] = {}  # gindex (height ≥ 7) → hash; absent = zero subtree
        self._dirty_nodes: set[int] = set()  # nodes set by splice whose ancestors are stale
        # gindex → the tensor it belongs to, for spliced subtrees not yet materialised.
        self._lazy: dict[int, _Source] = {}

    # ---------------------------------------------------------------- pages

    def page(self, pi: int) -> bytearray:
        """Page number `pi`, created (zero) or materialised from a lazy region if needed."""
        p = self.pages.get(pi)
        if p is None:
            p = self._new_page(pi)
        return p

    def _lazy_above(self, g: int) -> int | None:
        """The lazy region holding node g (g itself or an ancestor), if any."""
        while g:
            if g in self._lazy:
                return g
            g >>= 1
        return None

    def _new_page(self, pi: int) -> bytearray:
        if self._lazy:
            lg = self._lazy_above(PAGE_GINDEX | pi)
            if lg is not None:
                self._materialise_page(lg, pi)
                p = self.pages.get(pi)
                if p is not None:
                    return p
        p = bytearray(PAGE_SIZE)  # a zero page hashes to the zero hash: nothing to mark dirty
        self.pages[pi] = p
        return p

    # ---------------------------------------------------------------- words and bytes

    def read_u32(self, addr: int) -> int:
        """The big-endian word at `addr` (which must be 4-aligned)."""
        p = self.pages.get(addr >> PAGE_SHIFT)
        if p is None:
            p = self._new_page(addr >> PAGE_SHIFT)
        o = addr & PAGE_MASK
        return int.from_bytes(p[o : o + 4], "big")

    def write_u32(self, addr: int, value: int) -> None:
        """Write the big-endian word `value` at `addr` (which must be 4-aligned)."""
        pi = addr >> PAGE_SHIFT
        p = self.pages.get(pi)
        if p is None:
            p = self._new_page(pi)
        o = addr & PAGE_MASK
        p[o : o + 4] = (value & 0xFFFFFFFF).to_bytes(4, "big")
        self.dirty.add(pi)
        if pi in self.code_pages:
            self.code_written.add(pi)

    def read_bytes(self, addr: int, n: int) -> bytes:
        """`n` bytes from `addr` (any alignment, may span pages)."""
        out = bytearray()
        while n > 0:
            o = addr & PAGE_MASK
            k = min(n, PAGE_SIZE - o)
            out += self.page(addr >> PAGE_SHIFT)[o : o + k]
            addr, n = (addr + k) & ADDRESS_MASK, n - k
        return bytes(out)

    def write_bytes(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        """Write `data` at `addr` (any alignment, may span pages)."""
        data = memoryview(data).cast("B")
        i = 0
        while i < len(data):
            o = addr & PAGE_MASK
            k = min(len(data) - i, PAGE_SIZE - o)
            pi = addr >> PAGE_SHIFT
            self.page(pi)[o : o + k] = data[i : i + k]
            self.dirty.add(pi)
            if pi in self.code_pages:
                self.code_written.add(pi)
            addr, i = (addr + k) & ADDRESS_MASK, i + k

    # ---------------------------------------------------------------- commitments

    def root(self) -> bytes:
        """The memory root: rehashes dirty pages and the paths above them, nothing else."""
        if not self.dirty and not self._dirty_nodes:
            return self._nodes.get(1, EMPTY_MEMORY_ROOT)
        nodes = self._nodes
        pending: list[set[int]] = [set() for _ in range(MEMORY_DEPTH + 2)]
        live = []
        for pi in self.dirty:
            g = PAGE_GINDEX | pi
            if pi in self.pages:
                live.append(pi)
            else:
                nodes[g] = ZERO_HASHES[PAGE_HEIGHT]
            pending[PAGE_HEIGHT + 1].add(g >> 1)
        self.dirty.clear()
        if live:
            roots = chunk_roots(b"".join(self.pages[pi] for pi in live), PAGE_SIZE)
            for i, pi in enumerate(live):
                nodes[PAGE_GINDEX | pi] = roots[32 * i : 32 * i + 32]
        for g in self._dirty_nodes:
            h = _height_of_gindex(g)
            if h < MEMORY_DEPTH:
                pending[h + 1].add(g >> 1)
        self._dirty_nodes.clear()
        for h in range(PAGE_HEIGHT + 1, MEMORY_DEPTH + 1):
            zero = ZERO_HASHES[h - 1]
            up = pending[h + 1]
            todo: list[int] = []
            pairs: list[bytes] = []
            for g in pending[h]:
                left = nodes.get(2 * g, zero)
                right = nodes.get(2 * g + 1, zero)
                if left == zero and right == zero:
                    nodes[g] = ZERO_HASHES[h]
                else:
                    todo.append(g)
                    pairs += (left, right)
                up.add(g >> 1)
            if todo:
                digests = hash_pairs(b"".join(pairs))
                for i, g in enumerate(todo):
                    nodes[g] = digests[32 * i : 32 * i + 32]
        return nodes.get(1, EMPTY_MEMORY_ROOT)

    def proof(self, addr: int) -> bytes:
        """Memory proof of the 4-aligned word at `addr`: its 32-byte leaf, then 27 siblings.

        Bit i of (addr >> 5) says whether the node at level i is a right child (DESIGN).
        Materialises the page if it lies in a lazy region (the program touches it anyway).
        """
        addr &= ADDRESS_MASK & ~3
        pi = addr >> PAGE_SHIFT
        levels = tree_levels(self.page(pi))
        self.root()
        index = (addr & PAGE_MASK) >> 5
        parts = [levels[0][index]]
        for h in range(PAGE_HEIGHT):
            parts.append(levels[h][index ^ 1])
            index >>= 1
        g = PAGE_GINDEX | pi
        for h in range(PAGE_HEIGHT, MEMORY_DEPTH):
            parts.append(self._nodes.get(g ^ 1, ZERO_HASHES[h]))
            g >>= 1
        return b"".join(parts)

    # ---------------------------------------------------------------- regions

    def splice(
        self, addr: int, size: int, root: bytes, store: TensorStore | Mapping[bytes, bytes]
    ) -> None:
        """Place the subtree `root` at the aligned region [addr, addr + size).

        Whatever the region held is replaced. Its bytes are fetched from `store` (root → bytes)
        only when the program first touches a page of it; the memory root is right before and
        after that. Raises RegionError for a bad region, StoreError for a bad store entry.
        """
        _check_region(addr, size)
        if len(root) != 32:
            raise ValueError(f"a subtree root has 32 bytes, not {len(root)}")
        g = gindex(addr, size)
        lg = self._lazy_above(g >> 1)
        if lg is not None:  # a lazy region around this one must become bytes first
            self._materialise(lg)
        if size < PAGE_SIZE:
            data = _fetch(store, root, size)
            if subtree_root(data) != root:
                raise StoreError(f"the stored bytes of tensor 0x{root.hex()} hash to another root")
            self.write_bytes(addr, data)
            return
        h = height_of(size)
        first, last = addr >> PAGE_SHIFT, (addr + size - 1) >> PAGE_SHIFT
        for pi in [pi for pi in self.pages if first <= pi <= last]:
            del self.pages[pi]
            self.dirty.discard(pi)
            if pi in self.code_pages:
                self.code_written.add(pi)
        for n in [n for n in self._nodes if n != g and _under(n, g)]:
            del self._nodes[n]
        for lg in [lg for lg in self._lazy if _under(lg, g)]:
            del self._lazy[lg]
        self._dirty_nodes = {n for n in self._dirty_nodes if not _under(n, g)}
        self._nodes[g] = root
        self._dirty_nodes.add(g)
        if root != ZERO_HASHES[h]:
            self._lazy[g] = _Source(root, store, addr, size)

    def _materialise_page(self, lg: int, pi: int) -> None:
        """Materialise page pi of the lazy region lg: the page alone when its store pages
        (splitting lg along the page's path), else the whole region."""
        src = self._lazy[lg]
        if src.paged_levels() is None:
            self._materialise(lg)
            return
        del self._lazy[lg]
        page_g = PAGE_GINDEX | pi
        nodes = self._nodes
        for h in range(_height_of_gindex(lg) - 1, PAGE_HEIGHT - 1, -1):
            child = page_g >> (h - PAGE_HEIGHT)
            for n in (child ^ 1, child):
                r = src.node(n)
                if r == ZERO_HASHES[h]:
                    nodes.pop(n, None)
                else:
                    nodes[n] = r
                    if n != child:
                        self._lazy[n] = src
            if r == ZERO_HASHES[h]:  # the page lies in a zero subtree: nothing to read
                return
        offset = (pi << PAGE_SHIFT) - src.addr
        data = src.read(offset, PAGE_SIZE)
        if page_root(data) != src.node(page_g):
            raise StoreError(f"tensor 0x{src.root.hex()}: the stored bytes of page {pi:#x} hash to another root")
        if data != _ZERO_PAGE:
            self.pages[pi] = bytearray(data)

    def _materialise(self, g: int) -> None:
        """Fetch a lazy region's bytes, check them against its root, and make them pages."""
        src = self._lazy[g]
        root = self._nodes[g]
        h = _height_of_gindex(g)
        size = 1 << (h + 5)
        addr = (g ^ (1 << (MEMORY_DEPTH - h))) << (h + 5)
        data = src.read(addr - src.addr, size)
        pages: dict[int, bytearray] = {}
        nodes: dict[int, bytes] = {}
        # Every page root in one batch; an absent node is a zero subtree, so only nonzero pages
        # and the nodes above them are kept (a nonzero page cannot hash to a zero hash).
        level = chunk_roots(data, PAGE_SIZE)
        zero = ZERO_HASHES[PAGE_HEIGHT]
        first = PAGE_GINDEX | (addr >> PAGE_SHIFT)
        for i in range(size >> PAGE_SHIFT):
            r = level[32 * i : 32 * i + 32]
            if r != zero:
                pages[(addr >> PAGE_SHIFT) + i] = bytearray(data[i << PAGE_SHIFT : (i + 1) << PAGE_SHIFT])
                nodes[first + i] = r
        for hh in range(PAGE_HEIGHT + 1, h + 1):
            level = hash_pairs(level, height=hh - 1)
            zero = ZERO_HASHES[hh]
            first >>= 1
            for i in range(len(level) // 32):
                r = level[32 * i : 32 * i + 32]
                if r != zero:
                    nodes[first + i] = r
        if nodes.get(g, ZERO_HASHES[h]) != root:
            raise StoreError(f"the stored bytes of tensor 0x{root.hex()} hash to another root")
        del self._lazy[g]
        self.pages.update(pages)
        self._nodes.update(nodes)

    def region_root(self, addr: int, size: int) -> bytes:
        """Subtree root of the aligned region [addr, addr + size): the tensor root of its bytes."""
        _check_region(addr, size)
        if size < PAGE_SIZE:
            p = self.page(addr >> PAGE_SHIFT)
            o = addr & PAGE_MASK
            return subtree_root(p[o : o + size])
        g = gindex(addr, size)
        if g in self._lazy:
            return self._nodes[g]
        lg = self._lazy_above(g >> 1)
        if lg is not None:  # inside a lazy region: its inner nodes need its bytes
            self._materialise(lg)
        self.root()
        return self._nodes.get(g, ZERO_HASHES[height_of(size)])

    def read_region(self, addr: int, size: int) -> bytes:
        """The bytes of the aligned region [addr, addr + size) (materialised if lazy)."""
        _check_region(addr, size)
        return self.read_bytes(addr, size)

    # ---------------------------------------------------------------- copies

    def copy(self) -> Memory:
        """An independent copy (checkpoints): pages are copied, lazy regions stay lazy."""
        m = Memory()
        m.pages = {pi: bytearray(p) for pi, p in self.pages.items()}
        m.dirty = set(self.dirty)
        m._nodes = dict(self._nodes)
        m._dirty_nodes = set(self._dirty_nodes)
        m._lazy = dict(self._lazy)
        return m
