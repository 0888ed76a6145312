"""Host kernel of opmlc/ir/ops/matmul.py for a constant weight on AVX-512 VNNI (`vpdpwssd`: two
s16 × s16 products added to each i32 lane, 32 multiply-adds an instruction against 8 for a
double FMA): the weight is split into s16 planes once, when the region table is made, the
activations at run time, and the plane products are recombined exactly in i64.

Taken by matmul.py's kernel for a node whose b is an initializer without batch dimensions
(leading batch dimensions of a are folded into rows: x [rows, K] against w [N, K]; a plain
b [K, N] is transposed when the planes are made), on a host with avx512vnni (the native object
is keyed by the CPU description). When the range check below finds no exact scheme for the
run's x, the kernel's own fallback computes the outputs (below): such a node carries no other
matmul kernel.

Planes. For a split point s ≥ 1, every integer v is v = h·2^s + l with h = (v + 2^(s−1)) >> s
(arithmetic) and l = v − h·2^s ∈ [−2^(s−1), 2^(s−1)). If |v| ≤ 2^e, then |h| ≤ 2^max(e−s, 0)
((v + 2^(s−1))/2^s < 2^(e−s) + 1/2, and ≥ −2^(e−s) for e ≥ s; h = 0 for e < s), and the sum
plane σ = h + l lies in [−2^(s−1) − 2^(e−s), 2^(s−1) + 2^(e−s) − 1].

- The weight (`weight_planes`, from the initializer): with |w| < 2^15 one plane, w itself;
  else s_w = ceil((e_w + 1)/2) and the planes w_l, w_h, and w_σ when it fits s16 (a weight
  with a plane outside s16, or with ceil(K/2) > MAX_PAIRS, has none). The kernel is specialised
  on the number of planes (`weight_facts`, when the module is generated) and K; `derive` (once per
  region table) writes a header (s_w, the plane count, e_w, per plane W_q ≥ max |w_q|, rounded
  up to four significant bits, per plane Q_q = max_j Σ_k w_q[j, k]², an i64, and for a split
  weight scheme W's squares by parity), the planes, an i64 per column (for one plane its sums:
  A1o; for a split weight W's η), and refuses a weight whose plane count is not the kernel's.
  So the bounds the kernel uses are always those of the weight it reads.
- x (at run time, per part): e_x from one pass over x (matmul_fma's magnitude bits, |x| ≤
  2^e_x). Then one of the schemes, each a list of plane products (p, q) with an i32
  accumulator each, recombined in wrap-around i64 (the op's ring: exact for any true sum):
  A1 (w one plane, e_x ≤ 15): x·w.  A1o (w one plane, max − min of x < 2^16; "Offset"):
  (x − c)·w + c·Σ w.  A2 (w one plane, e_x ≤ 30, s = ceil((e_x + 1)/2)):
  l·w + 2^s·(h·w).  C (w split, e_x ≤ 30, s as A2): l·w_l + 2^s_w·l·w_h + 2^s·h·w_l +
  2^(s+s_w)·h·w_h.  B (Karatsuba, w_σ present, x split at s_w, |σ_x| ≤ 2^15): with P_ll,
  P_hh, P_σσ the three sums, Σ x·w = P_ll + 2^s_w·(P_σσ − P_ll − P_hh) + 2^(2 s_w)·P_hh
  (three products where C has four). For e_x ≤ 30, s ≤ 16: l and h fit s16 (|h| ≤ 2^14).
  W (w split, x split at s_w, sums in s16; "Winograd" below): C's four products of sums
  x + w over pairs of k pairs, minus a row's ξ and a column's η; tried first, before B and C.

Offset (scheme A1o, a one-plane weight; x's min m and max M from one more pass): when
M − m ≤ 2^16 − 1, c = ceil((m + M)/2) (between m and M, so an i32) makes x' = x − c lie in
[m − c, M − c] with c − m = ceil((M − m)/2) ≤ 2^15 and M − c = floor((M − m)/2) ≤ 2^15 − 1:
one s16 plane, X = ceil((M − m)/2). Then Σ_k x·w = Σ_k x'·w + c·Σ_k w, the column sums
Σ_k w[j, k] (|Σ| < 2^15·K, i64) laid out by `derive` after the plane; c·Σ w and the total are
wrap-around i64, the op's ring, so exact. A padded k of an odd K has w = 0 (its x' = −c is
multiplied by zero). Taken after A1 (|x| < 2^15 needs no offset) and before A2 (one product
against two). With X up to 2^15 it needs W ≤ (2^31 − 2^16)/(2^16·MIN_FLUSH), about 2^13, to
reach F ≥ MIN_FLUSH.

Bound (i32 lanes). x's planes are bounded from M = max |x| (a second pass over x): X_l =
2^(s−1); X_h = (M + 2^(s−1)) >> s, since h = floor((x + 2^(s−1))/2^s) for |x| ≤ M lies
between −ceil((M − 2^(s−1))/2^s) and floor((M + 2^(s−1))/2^s), and the former's magnitude is
at most the latter; X_σ = X_l + X_h; A1: X = M. With W_q the weight's, one `vpdpwssd` adds two products to a
lane: |Δ| ≤ Δmax = max over the scheme's products of 2·X_p·W_q. A lane starts a chunk of the
reduction at its low part L ∈ [0, 2^16) and takes at most F = floor((2^31 − 2^16) / Δmax)
instructions: it stays in [−2^31, 2^31 − 1], exact in i32 (no `vpdpwssd` wraps; the
saturating form `vpdpwssds` is not used). After the chunk, acc = (acc >> 16)·2^16 + (acc &
0xFFFF): the lane's carry C (i32) takes acc >> 16 ∈ [−2^15, 2^15) and L the rest, so the sum
so far is C·2^16 + L. At most ceil(K/2) < 2^16 chunks: |C| < 2^16·2^15 = 2^31, exact. At
the end C·2^16 + L is formed in i64. The run computes F; a scheme with F < MIN_FLUSH is not
taken (then the next, or the fallback).

Row sums (a longer chunk, per row group). One `vpdpwssd` adds x_p[2k]·w_q[2k] + x_p[2k+1]·w_q[2k+1]
to a lane, at most W_q·(|x_p[2k]| + |x_p[2k+1]|); over any run of pairs, at most W_q·S_p with S_p
a row's Σ_k |x_p[k]| over the whole reduction. So when max over the group's rows and the
scheme's products of S_p·W_q ≤ 2^31 − 2^16, a lane that starts a chunk at L ∈ [0, 2^16) stays
in [−2^31, 2^31 − 1] for any chunk length, and the group takes chunks of the L1 cap (below)
instead of F's: F bounds every element by max |x|, so a few wide elements in activations that
are mostly small (a decoder's projections) shorten every chunk; the row sums do not. S_p is
summed while the planes are made (≤ 2^15 an element, so < 2^32 a row, i64; S_p·W_q < 2^48).
A padded k of an odd K counts with its plane value (A1o's −c: a larger sum, still a bound).

Squares (the same choice, by Cauchy–Schwarz). A lane's change over any run of pairs is a sum
Σ_k x_p[k]·w_q[j, k] over a subset of k, at most sqrt(Σ_k x_p[k]²)·sqrt(Σ_k w_q[j, k]²) ≤
sqrt(Sq_p·Q_q), with Sq_p a row's Σ_k x_p[k]² over the whole reduction. So when max over the
group's rows and the scheme's products of Sq_p·Q_q ≤ (2^31 − 2^16)² (compared in i128), the
group also takes whole chunks. For activations and weights of a similar spread this is the
tighter bound (the row sums multiply by the largest weight, the squares by a column's norm):
tiny_gpt2's lm head (K = 64) needs Σ|x|·W ≈ 1.7 × the budget but Sq·Q ≈ 0.88²: one chunk
instead of F's four, 24 → 14 µs. Sq_p is summed while the planes are made: `vpmaddwd` of a
plane's s16 pairs with themselves (x0² + x1² ≤ 2^31, exact as an unsigned i32) widened to i64
lanes (< 2^47 a row); Q_q < 2^47 (|w_q| ≤ 2^15, K < 2^17). Tested where the two bounds
disagree, with a row equal to a weight column (Cauchy–Schwarz an equality) at the budget and
past 2^31 (`test_squares_*`). Row sums and squares (and the chunks of blocks below) can only
lengthen F's chunks up to the L1 cap: when F's chunk reaches it they are not summed.

Chunks of blocks (the squares, chunk by chunk). When neither whole-reduction bound holds, the
reduction is cut into chunks of `top` whole blocks of 16 k pairs (BLOCK_PAIRS: one x vector;
top = min(L1 cap / 16, blocks − 1), a compile-time number), chunk c the pairs [16·top·c,
16·top·(c + 1)). A run of pairs inside chunk c changes a lane by at most
sqrt(Σ_{k in c} x_p[k]² · Σ_{k in c} w_q[j, k]²) ≤ sqrt(X_p[c] · Σ_{b in c} Q_q[b]), with X_p[c]
the group's max over rows of the row's Σ_{k in c} x_p[k]², and Q_q[b] = max_j Σ_{k in b}
w_q[j, k]² per block (`block_norms`, laid out by `derive` after the planes, [plane, block] i64,
its place in the header; the sum of the blocks' maxima bounds every column's sum). So when
max over chunks and products of X_p[c]·Σ_b Q_q[b] ≤ (2^31 − 2^16)² (i128), and these chunks are
fewer than F's, the group runs them (each from its low part, as any chunk): tiny_gpt2's K = 256
projections need Sq·Q ≈ 1.15² budgets² for the whole reduction and ≈ 0.7² for each half, two
chunks instead of F's thirteen. X_p[c] costs nothing more while the planes are made: a row's
squares (vpmaddwd, above) are reduced at each chunk's last vector block instead of once a row,
the last chunk's with the scalar tail. `BLOCK_CHUNKS = False` turns it off (measurements).
Tested with a row equal to a weight column, chunk by chunk at the budget and past 2^31, with
and without a tail (`test_squares_of_chunks_of_blocks`).

One chunk (the epilogue from registers). When a group's reduction is one chunk (its chunk,
F's or the row sums', covers all ceil(K/2) pairs: tiny_llama's K = 64 and 128 projections), a
tile's accumulators start at 0 instead of a low part (0 ∈ [0, 2^16), so the bound above holds
for the whole reduction), each lane ends at the product's exact sum in [−2^31, 2^31 − 1], and the
outputs are finished from the registers: sext(acc) is the product's sum (C = 0, L = acc; no
split into carry and low part, no state zeroed, stored or read back). Several chunks (n ≥ 2,
balanced: chunk = ceil(k2/n) with n = ceil(k2/c) for the cap c, so chunk ≤ c and
(n − 1)·chunk ≤ (n − 1)·c < k2 ≤ n·chunk: the last chunk has 1..chunk pairs) keep the carries
and low parts between chunks, and the last one ends from its registers too: it starts at the
low part L of a sum C·2^16 + L and, by the bound, ends at acc = L + Δ in i32, so the sum is
C·2^16 + sext(acc) in i64 (no final split, store and reload). `ONE_CHUNK = False`: a one-chunk
reduction goes through the carries' path (its one chunk the last), to measure the difference.
A one-chunk sum is recombined by multiplication (`multiplied`): Σ x·w = Σ_t coef_t·sum_t with
each product's weight in the recombination (B: 1 − 2^s_w, 2^(2 s_w) − 2^s_w, 2^s_w), one
`vpmuldq` a product on the even and on the odd columns (sum and coefficient both i32: checked
once a call, else the shifts of `combine`; `MULTIPLIED = False` forces those), 13 µops a 16
outputs against 21 (tiny_llama's task 1.5 µs faster, tiny_gpt2's 1 µs). Scheme W's weights are
powers of two (1, 2^s_w, 2^s_w, 2^(2 s_w)): its sums are recombined by shifts, nested as
((hh·2^s_w + lh + hl)·2^s_w) + ll. The bias, the rounding half and a scheme's per-column term
(A1o's c·Σ w, W's −η) are summed once per column block of a tile (`_finisher`'s `column`),
not once per output vector.
Tested per scheme with bias, ties and saturation on both sides
(`test_outputs_from_the_last_chunk_s_accumulators`) and at the budget (`test_row_sums_*`).

Layout and loop. The weight: after the 128-byte header, s16 [blocks, ceil(K/2), planes, 16, 2],
N padded with zero columns to whole blocks of 16 (a part starts on a block, GRAIN = 16
columns; it runs column tiles of its scheme's width, then the blocks left over one at a time,
so a 16- or 32-column weight does no padded tile's work) and K with a zero to a multiple of 2: one 64-byte
vector holds a k pair of 16 output columns, a k pair's planes are adjacent (the loop reads a
block's vectors at constant offsets from one pointer; a block's stride depends on K only, so
not on N). x: a part copies a group
of its rows into a stack scratch, per row and plane ceil(K/2) dwords (k pairs, zero past K),
once per group, 16 pairs a vector (a <32 x i32> of x → its planes → truncated to i16, which in
little-endian order is the pair's dword), the last K mod 32 elements in one masked step of the
same (zeros past K; the stored pairs, sums and squares are those of the pairs up to ceil(K/2),
as one pair at a time gave them: a 3 → 32-channel 3×3 conv, K = 27 all tail, 83–99 → 62 µs).
Per column tile (C blocks of 16 columns) and chunk of the reduction (at most F
pairs, and few enough that the vectors of the planes the tile's products read stay in L1:
`_l1_cap`), every row tile of R rows broadcasts
each row's pair against the tile's weight vectors into R·C·products accumulators, which start
from and end in the tile's low parts and carries (a stack scratch). After the last chunk the
products' sums are recombined, and each output gets bias, rounding and saturation (counted)
as in matmul.py, 16 at a time (a lane mask leaves out the padding columns: not stored, not
counted). A scheme's body is generated only when its planes exist; the
choice between B and C (both exact) is by an estimate of their cost (instructions per chunk,
WIDEN_COST more per widening).

Parts (threads): ranges of output columns on whole blocks of 16 (GRAIN), so that two parts of
64 or 192 columns are even (on multiples of 64 they were 0 + 64 and 64 + 128: tiny_gpt2's
projections); each part splits the same x itself (rows·K work against its rows·K·N_part/16
instructions).

One function per module and (plane count, K) (`_shared`, `mm16.p<planes>.k<K>`, internal and
not inlined): rows, N, the part's columns, the rounding shift, the bias (or null) and its shift
are its arguments, so the nodes of a model share it (tiny_llama's six constant-weight kernels
call two). K stays a constant: the x scratch's row and plane strides are ceil(K/2), and with them
constant the loop's x loads are constant offsets from one pointer (a version with a run-time K,
x laid out [pair, row, plane] to keep those offsets constant, ran the MLP's layers 1.5–1.9×
slower). The saturation count goes to the caller's counter (`internal_function(counts=True)`).

Winograd pairs (scheme W, tried first for a split weight: Winograd's inner product, 1968). For
any pairing of the k's, Σ_k x_k·w_k = Σ_(a,b) (x_a + w_b)·(x_b + w_a) − Σ_(a,b) x_a·x_b −
Σ_(a,b) w_a·w_b: each product of sums holds x_a·w_a + x_b·w_b, and what else it holds depends on
the row alone (ξ) or the column alone (η). The pairs here are (4m, 4m + 2) and (4m + 1, 4m + 3),
so that the operands come from the layouts above as they are: a step (a "k quad": k pairs 2m and
2m + 1) adds x's pair dword 2m to the weight's pair vector 2m + 1, and x's dword 2m + 1 to the
weight's vector 2m (`vpaddw`, 16-bit lanes), and one `vpdpwssd` of the two covers four k's of
16 columns where an x·w product covers two. ξ_r = Σ_m x[4m]·x[4m + 2] + x[4m + 1]·x[4m + 3]
is summed while x's planes are made (32 elements a step, zeros past K adding nothing), η_j the
same over a column of the weight by derive (`pair_products`, in the i64 per column after the
planes); both in wrap-around i64, the op's ring. Planes: x is split at s_w, the weight's split,
so a sum splits as its terms do: x + w = (x_h + w_h)·2^s_w + (x_l + w_l), and a product of two
sums is the four plane products of scheme C (ll, lh, hl, hh), recombined as C's with s = s_w.
Bound: |x_l + w_l| ≤ U_l = X_l + W_l, in s16 for s_w ≤ 15 (both l planes lie in [−2^(s−1),
2^(s−1)), their sum in [−2^s, 2^s − 2]); |x_h + w_h| ≤ U_h = X_h + W_h ≤ 2^15 − 1 (checked). A
step adds at most 2·U_p·U_q to a lane, so F = floor((2^31 − 2^16) / max 2·U_p·U_q) steps a
chunk, and chunks are whole steps (an even number of pairs, balanced, then rounded up to even:
still at most 2F). With an odd number of pairs the last one has no partner: it is paired with a
zero pair (x = w = 0 there), which leaves x·w itself, C's products of that one pair, run at the
end of the last chunk (an odd chunk of at most 2F pairs has at most F − 1 steps before it), and
ξ and η get nothing from it (its partner's elements are zeros, as in `pair_products`' padding).
A step is 4 `vpdpwssd` and 4 `vpaddw` per row and 16 columns, which this host's four vector
pipes (two of them multiply) issue in 2 cycles; B takes 6 `vpdpwssd`, 3 cycles, for the same
four k's (the MLP's batch-64 call 646 → 494 µs, the CIFAR CNN's 365 → 285 µs).
Squares (W's own, by Cauchy–Schwarz and Minkowski). The row sums and squares above bound x·w,
not products of sums. A lane's change over any run of steps is Σ a·b over a subset of its
first sums a (x's k's of even pairs, the weight's of odd ones) and second sums b (x's of odd
pairs, the weight's of even ones, and the unpartnered last pair's x in a, w in b: its k's are
of an even pair), so at most ‖a‖·‖b‖ ≤ (√X_{p,e} + √Q_{p,o})·(√X_{q,o} + √Q_{q,e}), with X the
largest row's Σ x_p² over the k's of even (e) or odd (o) pairs and Q the weight's largest
column's (`derive`: the header's PARITY_NORMS, and per block after B's blocks). When F is short
(fewer than W_STEPS steps, and less than the reduction), `_sum_squares_ok` makes one pass over
x for these sums (integer roots rounded up, through a double: exact below 2^53) and W runs the
L1 cap's chunks when they bound the whole reduction, else `_w_top(k)` blocks a chunk, aligned
on the chunks they were summed over, when each chunk's bound holds and the chunks are at least
W_STEPS steps; otherwise W is not taken (B or C, whose own squares may give long chunks: a
widening of W's four accumulators every few steps costs more than B's third product). The
tiny decoders' projections (x of 26–27 bits against weights of 23–24: F = 3) take W through
this: tiny_llama's task 87 → 79 µs, tiny_gpt2's 112 → 104 µs. `WINOGRAD = False` leaves W out
(measurements). Tested at F's limit with every sum at its bound, for odd pair counts, on 1 and
2 threads, refused below W_STEPS, and at the squares' limits (whole and by chunks) with x's
wide elements parallel in both sums (98.8 % of 2^31 reached), one past them refused.

Fallback (no scheme is exact for the run's x: some |x| > 2^30, or F < MIN_FLUSH): the weight
read back from its planes (w = l + 2^s_w·h, or the one plane), a k pair of 16 columns decoded
once for FALLBACK_ROWS rows, products sext(i32)·sext(i32) (|p| ≤ 2^62, exact in i64) summed in
<16 x i64> lanes in wrap-around i64 as the op: exact for every int32 x, about the speed of
matmul.py's i64 kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from opmlc.backend.kernels._ir import (
    I32,
    I64,
    PTR,
    c32,
    c64,
    call_helper,
    counter_slot,
    counting,
    entry_alloca,
    internal_function,
    load,
    loop,
)
from opmlc.backend.kernels.native._vec import V16
from opmlc.backend.kernels.native.qmatmul_vnni import has_vnni
from opmlc.ir import fixedpoint as fp

V16I64 = ir.VectorType(I64, 16)
V8I64 = ir.VectorType(I64, 8)
V32 = ir.VectorType(I32, 32)
V32I16 = ir.VectorType(ir.IntType(16), 32)
V32I64 = ir.VectorType(I64, 32)
V1x16 = ir.VectorType(ir.IntType(1), 16)
V1x32 = ir.VectorType(ir.IntType(1), 32)
LANES16 = 16  # output columns of one weight vector
TILE_COLS = 64  # every scheme's column tile (C blocks of 16) divides it
GRAIN = LANES16  # part boundaries: whole blocks (a part's tiles, then its blocks one at a time)
# fewer output columns: a matmul's double kernel is as fast (x 25 bits, K = 512: N = 10, 16, 24
# took 25, 32, 44 µs there against 37, 37, 57; even from N = 32)
MIN_COLS = TILE_COLS
BUDGET = (1 << 31) - (1 << 16)  # a lane's change over a chunk that starts at a low part in [0, 2^16)
MIN_FLUSH = 4  # fewer instructions between widenings: the double / i64 kernels are faster
SCRATCH = 384 << 10  # bytes of stack for a row group's x planes (all 64 rows of K = 784 in three planes:
# the weights are then read once per run; one scratch shared by the schemes, the frame stays < 1 MiB)
MAX_PAIRS = SCRATCH // (3 * 4)  # k pairs of one row's three x planes in the scratch (< 2^16: the carries' bound)
GROUP_MAX = 128  # rows: their carries and low parts take ≤ 128 KiB of stack (≤ 8 accumulators a tile row)
L1_WEIGHTS = 24 << 10  # bytes of a column tile's weights per chunk
WIDEN_COST = 3  # instructions a widening costs, per accumulator (the B/C choice)
FALLBACK_ROWS = 4  # rows sharing one decoded k pair of weights (the fallback)
MIN_ROWS = 2  # one row reads the weights once: memory-bound, the i64 kernel's (fewer bytes than B's planes)

ENABLED: bool | None = None  # None: when the host has VNNI; tests set False for the other kernels
ONLY = False  # tests: no other kernel behind this one (a run it refuses leaves the output unwritten)
FORCE: str | None = None  # tests: only the scheme of this name (when the weight has its planes)
ONE_CHUNK = True  # False: a one-chunk reduction goes through the carries too (measurements)
BLOCK_CHUNKS = True  # False: no chunks of whole blocks (measurements)
MULTIPLIED = True  # False: one chunk's sums recombined by shifts as the others' (tests, measurements)
WINOGRAD = True  # False: no scheme W (measurements)
W_STEPS = 16  # scheme W's fewest k quads a chunk, unless one chunk covers the reduction


def available() -> bool:
    return has_vnni() if ENABLED is None else ENABLED


# ---------------------------------------------------------------- weights (numpy, not per run)

def _bits(v: np.ndarray) -> int:
    """e with |v| ≤ 2^e for every element (0 for none)."""
    if v.size == 0:
        return 0
    v = v.astype(np.int64, copy=False)
    return int(np.bitwise_or.reduce((v ^ (v >> 63)).ravel())).bit_length()


def _split(w: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray]:
    w = w.astype(np.int64)
    h = (w + (1 << (s - 1))) >> s
    return w - (h << s), h


HEADER = 32  # i32 fields before the planes (128 bytes): split, planes, wbits, W_q; from NORMS the Q_q (i64)
NORMS = 4  # i64 index of Q_0 in the header
PARITY_NORMS = 8  # i64 index of scheme W's Q_{q, parity}: [l, h][even pairs, odd pairs]
BLOCKS_AT = 6  # i32 field: where the blocks' Q_q[b] start, in i64 from the header (derive)
BLOCK_PAIRS = 16  # k pairs of a block (one x vector): the unit of the chunks' squares bound


def _block_squares(plane: np.ndarray) -> np.ndarray:
    """Σ w_q[j, k]² of one plane [N, K] per column j, block (2·BLOCK_PAIRS k; the last one padded
    with zeros) and pair parity (the k's of the block's even, of its odd pairs): [N, blocks, 2],
    i64. Q_q[b] = max_j of the block's two (`block_norms`); scheme W's parity squares, whole and
    per block, follow from the same (`derive`)."""
    n, k = plane.shape
    width = 2 * BLOCK_PAIRS
    padded = np.zeros((n, -(-k // width) * width), np.int64)
    padded[:, :k] = plane
    return np.square(padded).reshape(n, -1, BLOCK_PAIRS // 2, 2, 2).sum(axis=(2, 4))


def block_norms(plane: np.ndarray) -> np.ndarray:
    """Q_q[b] = max_j Σ_{k in block b} w_q[j, k]² of one plane [N, K] (blocks of 2·BLOCK_PAIRS k;
    the last one padded with zeros), i64."""
    return _block_squares(plane).sum(axis=2).max(axis=0, initial=0)


def _planes(w2: np.ndarray, s: int, n: int) -> list[np.ndarray]:
    if s == 0:
        return [w2.astype(np.int64)]
    lo, hi = _split(w2, s)
    return [lo, hi, lo + hi][:n]


def pair_products(v: np.ndarray) -> np.ndarray:
    """Per row of v [rows, K]: Σ_m v[4m]·v[4m + 2] + v[4m + 1]·v[4m + 3] (K padded with zeros to
    a multiple of 4) in wrap-around i64: scheme W's ξ of x and η of the weight (module docstring,
    "Winograd"); rows a few at a time, so a large weight's temporaries stay small."""
    rows, k = v.shape
    out = np.zeros(rows, np.int64)
    step = max(1, (1 << 20) // max(1, k))
    for r0 in range(0, rows, step):
        q = np.zeros((len(v[r0:r0 + step]), -(-k // 4) * 4), np.int64)
        q[:, :k] = v[r0:r0 + step]
        q = q.reshape(len(q), -1, 2, 2)
        with np.errstate(over="ignore"):
            out[r0:r0 + step] = (q[:, :, 0] * q[:, :, 1]).sum(axis=(1, 2))
    return out


def _ceil4(v: int) -> int:
    """v rounded up to four significant bits (a bound that does not name the weight exactly)."""
    e = max(0, v.bit_length() - 4)
    return -(-v >> e) << e


def weight_planes(w2: np.ndarray, min_cols: int | None = None) -> tuple[int, int, list[int]] | None:
    """(split s, 0 for one plane; number of planes; their bounds W_q) of a weight w2 [N, K], or
    None when it has no s16 planes (module docstring) or fewer than `min_cols` columns (default
    MIN_COLS)."""
    e = _bits(w2)
    if -(-w2.shape[1] // 2) > MAX_PAIRS:  # one row's planes in the scratch (module docstring)
        return None
    if w2.shape[0] < (MIN_COLS if min_cols is None else min_cols):
        return None
    if e <= 15:
        return 0, 1, [_ceil4(int(np.abs(w2.astype(np.int64)).max(initial=0)))]
    s = (e + 2) // 2  # ceil((e + 1) / 2)
    if s > 16:
        return None
    rows = max(1, (1 << 20) // max(1, w2.shape[1]))  # bounded temporaries for a large weight
    bits, peaks = [0, 0, 0], [0, 0, 0]
    for r0 in range(0, w2.shape[0], rows):
        planes = _split(w2[r0:r0 + rows], s)
        planes = (*planes, planes[0] + planes[1])
        bits = [max(a, _bits(p)) for a, p in zip(bits, planes, strict=True)]
        peaks = [max(a, int(np.abs(p).max(initial=0))) for a, p in zip(peaks, planes, strict=True)]
    if bits[0] > 15 or bits[1] > 15:  # cannot happen for e ≤ 30 (docstring); kept as the check
        return None
    n = 3 if bits[2] <= 15 else 2  # σ in s16 or not (no scheme B then)
    return s, n, [_ceil4(p) for p in peaks[:n]]


def weight_facts(w2: np.ndarray, min_cols: int | None = None) -> dict:
    """What the kernel is specialised on (module docstring): the number of planes when the
    weight has them ({"derived": True, "planes": n}), else nothing. The planes' split and
    bounds, and the weight's bits (the double kernel's bound), travel in the derived buffer's
    header, so weights of one shape and plane count share a kernel."""
    planes = weight_planes(w2, min_cols)
    return {} if planes is None else {"derived": True, "planes": planes[1]}


def _sizes(n: int, k: int, count: int) -> tuple[int, int]:
    """(where the blocks' Q_q[b] start, the whole size), in int16 elements, of `derive`'s buffer
    for w2 [n, k] with `count` planes: header, planes, an i64 per padded column (for one plane
    the column sums, for a split weight the pair products η), the blocks' squares (for a split
    weight then scheme W's, by parity)."""
    nb, k2 = -(-n // LANES16), -(-k // 2)
    blocks_at = 2 * HEADER + count * nb * k2 * LANES16 * 2 + 4 * nb * LANES16
    nblk = -(-k2 // BLOCK_PAIRS)
    return blocks_at, blocks_at + 4 * count * nblk + (4 * 4 * nblk if count > 1 else 0)


def derived_bytes(n: int, k: int, count: int) -> int:
    """The byte size of `derive`'s buffer for a weight [n, k] of `count` planes (a caller that
    appends its own data after it, 64-byte aligned: native/conv.py's column scales)."""
    return 2 * _sizes(n, k, count)[1]


def derive(facts: dict, w2: np.ndarray, min_cols: int | None = None) -> np.ndarray:
    """The header and the planes of w2 [N, K] in the kernel's layout (module docstring), as
    int16, 64-byte aligned; a weight whose planes differ from the facts' is refused."""
    n, k = w2.shape
    got = weight_planes(w2, min_cols)
    if got is None or got[1] != facts["planes"]:
        raise ValueError("matmul: the weight differs from the one the native module was generated for "
                         "(its s16 planes do not match the compiled kernel); regenerate the module")
    split, count, bounds = got
    nb, k2 = -(-n // LANES16), -(-k // 2)
    nblk = -(-k2 // BLOCK_PAIRS)
    blocks_at, size = _sizes(n, k, count)
    raw = np.zeros(size + 32, np.int16)
    off = (-raw.ctypes.data % 64) // 2
    buf = raw[off:off + size]
    buf[:2 * HEADER].view(np.int32)[:3 + count] = [split, count, _bits(w2), *bounds]
    end = 2 * HEADER + count * nb * k2 * LANES16 * 2
    out = buf[2 * HEADER:end].reshape(nb, k2, count, LANES16, 2)
    sums = np.zeros(nb * LANES16, np.int64)
    if count == 1:  # Σ_k w[j, k] per (padded) column, i64: scheme A1o's c·Σ w (exact: |Σ| < 2^15·K)
        sums[:n] = w2.astype(np.int64).sum(axis=1)
    else:  # scheme W's η_j (wrap-around i64, the op's ring)
        sums[:n] = pair_products(w2)
    buf[end:blocks_at].view(np.int64)[:] = sums
    # Q_q = max_j Σ_k w_q[j, k]² (≤ 2^30·K < 2^47, i64) and the blocks' Q_q[b]: the squares
    # bounds (module docstring); rows a few at a time, so a large weight's temporaries stay small
    norms, blocks = np.zeros(count, np.int64), np.zeros((count, nblk), np.int64)
    parity = np.zeros((2, 2), np.int64)  # scheme W: max_j Σ w_q[j, k]² over the k's of even, of odd pairs
    parity_blocks = np.zeros((2, 2, nblk), np.int64)  # … and per block
    step = max(1, (1 << 20) // max(1, k) // LANES16) * LANES16
    for r0 in range(0, n, step):
        for q, p in enumerate(_planes(w2[r0:r0 + step], split, count)):
            sq = _block_squares(p)  # [column, block, parity]
            norms[q] = max(norms[q], int(sq.sum(axis=(1, 2)).max(initial=0)))
            blocks[q] = np.maximum(blocks[q], sq.sum(axis=2).max(axis=0, initial=0))
            if q < 2 and count > 1:
                parity[q] = np.maximum(parity[q], sq.sum(axis=1).max(axis=0, initial=0))
                parity_blocks[q] = np.maximum(parity_blocks[q], sq.max(axis=0, initial=0).T)
            padded = np.zeros((-(-len(p) // LANES16) * LANES16, k2 * 2), np.int16)
            padded[:len(p), :k] = p
            out[r0 // LANES16:r0 // LANES16 + len(padded) // LANES16, :, q] = (
                padded.reshape(-1, LANES16, k2, 2).transpose(0, 2, 1, 3))  # [block, pair, column, k]
    buf[:2 * HEADER].view(np.int64)[NORMS:NORMS + count] = norms
    buf[:2 * HEADER].view(np.int64)[PARITY_NORMS:PARITY_NORMS + 4] = parity.ravel()
    buf[:2 * HEADER].view(np.int32)[BLOCKS_AT] = blocks_at // 4
    wide = buf[blocks_at:].view(np.int64)
    wide[:count * nblk] = blocks.ravel()  # [plane, block]
    if count > 1:
        wide[count * nblk:] = parity_blocks.ravel()  # [plane l/h, parity, block]
    return buf


# ---------------------------------------------------------------- schemes

@dataclass(frozen=True)
class Scheme:
    name: str
    xplanes: tuple[str, ...]  # "x", "l", "h", "s" (σ)
    products: tuple[tuple[int, int], ...]  # (x plane, w plane)
    rows: int  # R
    cols: int  # C blocks of 16 columns


A1 = Scheme("A1", ("x",), ((0, 0),), 6, 4)
A1O = Scheme("A1o", ("x",), ((0, 0),), 6, 4)  # x − c in one plane (module docstring, "Offset")
A2 = Scheme("A2", ("l", "h"), ((0, 0), (1, 0)), 3, 4)
C4 = Scheme("C", ("l", "h"), ((0, 0), (0, 1), (1, 0), (1, 1)), 3, 2)
B3 = Scheme("B", ("l", "h", "s"), ((0, 0), (1, 1), (2, 2)), 4, 2)
W4 = Scheme("W", ("l", "h"), ((0, 0), (0, 1), (1, 0), (1, 1)), 2, 2)  # pairs of k pairs (module docstring, "Winograd")


def schemes(facts: dict) -> list[Scheme]:
    split = [W4] if WINOGRAD else []
    out = {1: [A1, A1O, A2], 2: [*split, C4], 3: [*split, B3, C4]}[facts["planes"]]
    return [sc for sc in out if FORCE is None or sc.name == FORCE]


def _fn(b: ir.IRBuilder, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    return b.module.globals.get(name) or ir.Function(b.module, ir.FunctionType(ret, args), name)


def _splat(b: ir.IRBuilder, x: ir.Value, ty: ir.VectorType) -> ir.Value:
    v = b.insert_element(ir.Constant(ty, ir.Undefined), x, c32(0))
    return b.shuffle_vector(v, ir.Constant(ty, ir.Undefined), ir.Constant(ir.VectorType(I32, ty.count), [0] * ty.count))


def _max_abs(b: ir.IRBuilder, base: ir.Value, count: ir.Value) -> ir.Value:
    """max |v| (i64) over the i32 elements base[0 .. count) (|INT32_MIN| = 2^31 included)."""
    return _stats(b, base, count)[0]


def _stats(b: ir.IRBuilder, base: ir.Value, count: ir.Value) -> tuple[ir.Value, ir.Value, ir.Value, ir.Value]:
    """One pass over the i32 elements base[0 .. count): (M = max |v| as an i64 (|INT32_MIN| =
    2^31 included), e (i32) with v ∈ [−2^e, 2^e) for every v (matmul_fma.magnitude_bits: the
    bit length of the largest v ^ (v >> 31), which is v for v ≥ 0 and −v − 1 below, increasing
    in |v| on each side, so its maximum is at the least or the greatest element), the least and
    the greatest element (i32)); for count 0: (0, 0, 0, 0). Sixteen lanes a step."""
    least, most = _min_max(b, base, count)
    empty = b.icmp_unsigned("==", count, c32(0))
    least, most = b.select(empty, c32(0), least), b.select(empty, c32(0), most)
    top = b.sext(most, I64)
    neg = b.sub(c64(0), b.sext(least, I64))
    top = b.select(b.icmp_signed(">", neg, top), neg, top)

    def folded(v: ir.Value) -> ir.Value:
        return b.xor(v, b.ashr(v, c32(31)))

    ones = b.or_(folded(least), folded(most))
    ctlz = _fn(b, "llvm.ctlz.i32", I32, [I32, ir.IntType(1)])
    ex = b.sub(c32(32), b.call(ctlz, [ones, ir.Constant(ir.IntType(1), 0)]))
    return top, ex, least, most


def _min_max(b: ir.IRBuilder, base: ir.Value, count: ir.Value) -> tuple[ir.Value, ir.Value]:
    """(min, max) (i32) of the i32 elements base[0 .. count), count ≥ 1."""
    v16 = ir.VectorType(I32, 16)
    lo_acc, hi_acc = entry_alloca(b, v16, name="v16.minv"), entry_alloca(b, v16, name="v16.maxs")
    b.store(ir.Constant(v16, [fp.INT32_MAX] * 16), lo_acc)
    b.store(ir.Constant(v16, [fp.INT32_MIN] * 16), hi_acc)
    vecs = b.udiv(count, c32(16))
    with loop(b, vecs, "v16.mm") as i:
        v = b.load(b.gep(base, [b.mul(i, c32(16))], source_etype=I32), typ=v16, align=4)
        old = b.load(lo_acc, typ=v16)
        b.store(b.select(b.icmp_signed("<", v, old), v, old), lo_acc)
        old = b.load(hi_acc, typ=v16)
        b.store(b.select(b.icmp_signed(">", v, old), v, old), hi_acc)
    least, most = entry_alloca(b, I32, name="v16.least"), entry_alloca(b, I32, name="v16.most")
    b.store(b.call(_fn(b, "llvm.vector.reduce.smin.v16i32", I32, [v16]), [b.load(lo_acc, typ=v16)]), least)
    b.store(b.call(_fn(b, "llvm.vector.reduce.smax.v16i32", I32, [v16]), [b.load(hi_acc, typ=v16)]), most)
    with loop(b, b.sub(count, b.mul(vecs, c32(16))), "v16.mmt") as i:  # the tail (< 16 elements)
        v = load(b, base, b.add(b.mul(vecs, c32(16)), i))
        old = b.load(least, typ=I32)
        b.store(b.select(b.icmp_signed("<", v, old), v, old), least)
        old = b.load(most, typ=I32)
        b.store(b.select(b.icmp_signed(">", v, old), v, old), most)
    return b.load(least, typ=I32), b.load(most, typ=I32)


def _mul32(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    """<8 x i64>: the products of the low 32 bits of x's and y's lanes, each read as a signed
    i32 (`vpmuldq`, which LLVM selects for sign-extended halves). Unlike nonlinear.Lanes.mul32,
    whose lanes must hold i32 values, the high halves may hold anything: they are ignored."""
    k = ir.Constant(V8I64, [32] * 8)
    return b.mul(b.ashr(b.shl(x, k), k), b.ashr(b.shl(y, k), k))


def _pow2(b: ir.IRBuilder, e: ir.Value) -> ir.Value:
    return b.shl(c64(1), b.zext(e, I64))


def _flush_bound(b: ir.IRBuilder, scheme: Scheme, xb: list[ir.Value], wmax: list[ir.Value]) -> ir.Value:
    """F (i64) for the plane bounds xb (i64 X_p) and the weight planes' bounds W_q (i64)."""
    worst = c64(1)
    for p, q in scheme.products:
        v = b.mul(xb[p], b.shl(wmax[q], c64(1)))
        worst = b.select(b.icmp_unsigned(">", v, worst), v, worst)
    return b.udiv(c64((1 << 31) - (1 << 16)), worst)


def emit(b: ir.IRBuilder, a_arg: ir.Value, d_arg: ir.Value, out: ir.Value, bias: ir.Value | None,
         rows: int | ir.Value, k: int, n: int, facts: dict, lo: ir.Value, hi: ir.Value, shift: int,
         bias_shift: int, scales: ir.Value | None = None) -> None:
    """Outputs [0, rows) × [lo, hi) of x [rows, k] @ w[n, k]ᵀ (+ bias [n] << bias_shift, >> shift
    rounded, saturated and counted as matmul.py's finish) from the derived buffer at d_arg, by a
    call of the module's one function for the weight's plane count and K (`_shared`: rows,
    columns and fractional bits are its arguments, so nodes of other shapes share it; rows may
    be an i32 known at run time only: native/conv.py's chunks). With `scales` (i64 per column,
    padded to whole blocks of 16) each column's sum is multiplied by its scale before the bias:
    the product with the weight w[j, k]·scale[j] (wrap-around i64, the op's ring)."""
    fn = _shared(b.module, facts["planes"], k, scales is not None)
    call_helper(b, fn, [a_arg, d_arg, out, bias if bias is not None else ir.Constant(PTR, None),
                        c32(rows) if isinstance(rows, int) else rows, c32(n), lo, hi, c32(shift), c32(bias_shift)]
                + [scales] * (scales is not None))


def _shared(module: ir.Module, planes: int, k: int, scaled: bool = False) -> ir.Function:
    """void f(x, derived, out, bias or null, rows, n, lo, hi, shift, bias_shift[, scales]): the
    kernel (module docstring) for a weight of `planes` planes and a reduction of k: a scheme when
    one is exact for the run's x, else the i64 lanes of `_fallback` (with ONLY: nothing written);
    `scaled`: each column's sum times its i64 scale before the finish (`emit`)."""
    fn, b = internal_function(module, f"mm16.p{planes}.k{k}" + ".s" * scaled, ir.VoidType(),
                              [PTR] * 4 + [I32] * 6 + [PTR] * scaled, counts=True)
    if b is None:
        return fn
    fn.attributes.add("nounwind")
    fn.attributes.add("noinline")  # one copy, whatever the number of callers
    a_arg, d_arg, out, bias, rows, n, lo, hi, shift, bias_shift = fn.args[:10]
    scales = fn.args[10] if scaled else None
    fallback = b.append_basic_block("v16.other")
    count = b.mul(rows, c32(k))
    top, ex, x_least, x_most = _stats(b, a_arg, count)  # M = max |x|, e_x, and A1o's min and max

    def header(i: int) -> ir.Value:
        return b.load(b.gep(d_arg, [c32(i)], source_etype=I32), typ=I32)

    sw = header(0)  # the weight's split, its planes' bounds (derive)
    wmax = [b.zext(header(3 + q), I64) for q in range(planes)]
    norms = [b.load(b.gep(d_arg, [c32(NORMS + q)], source_etype=I64), typ=I64) for q in range(planes)]  # Q_q
    wblocks = b.gep(d_arg, [header(BLOCKS_AT)], source_etype=I64)  # the blocks' Q_q[b], [plane, block]
    planes_at = b.gep(d_arg, [c32(HEADER)], source_etype=I32)

    def runtime_split() -> ir.Value:  # s = ceil((e_x + 1) / 2), at least 1
        s = b.udiv(b.add(ex, c32(2)), c32(2))
        return b.select(b.icmp_unsigned("<", s, c32(1)), c32(1), s)

    def bounds(s: ir.Value) -> list[ir.Value]:  # X_l, X_h, X_σ (i64; module docstring)
        xl = _pow2(b, b.sub(s, c32(1)))
        xh = b.lshr(b.add(top, xl), b.zext(s, I64))
        return [xl, xh, b.add(xl, xh)]

    offset = None  # c (i32) of scheme A1o
    w_aligned = None  # i1: scheme W runs chunks of _w_top(k) blocks, as its squares were bounded
    choices = []  # (scheme, valid i1, F i64, s i32)
    for sc in schemes({"planes": planes}):
        if sc is A1:
            s = c32(0)
            ok = b.icmp_unsigned("<=", ex, c32(15))
            f = _flush_bound(b, sc, [top], wmax)
        elif sc is A1O:
            s = c32(0)
            least, most = b.sext(x_least, I64), b.sext(x_most, I64)
            span = b.sub(most, least)
            ok = b.icmp_signed("<=", span, c64((1 << 16) - 1))
            offset = b.trunc(b.ashr(b.add(b.add(least, most), c64(1)), c64(1)), I32)  # in [least, most]
            f = _flush_bound(b, sc, [b.ashr(b.add(span, c64(1)), c64(1))], wmax)
        elif sc is B3:
            s = sw
            xb = bounds(s)
            ok = b.icmp_unsigned("<=", xb[2], c64(1 << 15))
            f = _flush_bound(b, sc, xb, wmax)
        elif sc is W4:  # x split at s_w; each plane's sum x_p + w_p in s16 (module docstring, "Winograd")
            s = sw
            xl, xh, _ = bounds(s)
            ub = [b.add(xl, wmax[0]), b.add(xh, wmax[1])]  # U_p ≥ |x_p + w_p|
            ok = b.and_(b.icmp_unsigned("<=", sw, c32(15)), b.icmp_unsigned("<=", ub[1], c64((1 << 15) - 1)))
            f = _flush_bound(b, sc, ub, ub)  # a step (a k quad) adds ≤ 2·U_p·U_q to a lane
            # long chunks only: a widening of its four accumulators costs about as much as
            # W_STEPS steps save against scheme B, whose chunks the row sums may lengthen; F's,
            # or any length when the squares bound the whole reduction (module docstring)
            short = b.and_(ok, b.icmp_unsigned("<", f, c64(min(W_STEPS, -(-k // 4)))))
            flags = [entry_alloca(b, ir.IntType(1), name=f"v16.wsq{i}") for i in range(2)]
            for fl in flags:
                b.store(ir.Constant(ir.IntType(1), 0), fl)
            with b.if_then(short):
                for fl, v in zip(flags, _sum_squares_ok(b, a_arg, rows, k, s, d_arg, wblocks, planes, _w_top(k)),
                                 strict=True):
                    b.store(v, fl)
            whole, blocks = (b.load(fl, typ=ir.IntType(1)) for fl in flags)
            ok = b.and_(ok, b.or_(b.not_(short), b.or_(whole, blocks)))
            # the L1 cap's chunks (chunk_of), or chunks of _w_top(k) blocks aligned on them
            w_aligned = b.and_(short, b.and_(b.not_(whole), blocks))
            f = b.select(b.and_(short, whole), c64(1 << 20), b.select(w_aligned, c64(_w_top(k) * BLOCK_PAIRS // 2), f))
        else:
            s = runtime_split()
            ok = b.icmp_unsigned("<=", ex, c32(30))
            f = _flush_bound(b, sc, bounds(s), wmax)
        ok = b.and_(ok, b.icmp_unsigned(">=", f, c64(MIN_FLUSH)))
        choices.append((sc, ok, f, s))

    k2 = -(-k // 2)

    def chunk_of(sc: Scheme, f: ir.Value) -> ir.Value:
        """k pairs of a chunk: F's (W: two a step), at most the L1 cap (W: an even count)."""
        cap = _l1_cap(sc)
        if sc is W4:
            f = b.select(b.icmp_unsigned(">", f, c64(cap // 2)), c64(cap // 2), f)
            return b.trunc(b.shl(f, c64(1)), I32)
        f = b.select(b.icmp_unsigned(">", f, c64(cap)), c64(cap), f)
        return b.trunc(f, I32)

    fin = _finisher(b, out, bias, n, shift, bias_shift, scales)  # its constants, before the branches
    bodies = [b.append_basic_block(f"v16.{sc.name}") for sc, *_ in choices]
    names = [sc for sc, *_ in choices]
    if names[-2:] == [B3, C4]:  # both exact: the cheaper (module docstring)
        (s0, ok0, f0, sp0), (s1, ok1, f1, _) = choices[-2:]
        c0, c1 = (b.zext(chunk_of(sc, f), I64) for sc, f in ((s0, f0), (s1, f1)))
        cost0 = b.mul(c64(len(s0.products)), b.mul(b.add(c0, c64(WIDEN_COST)), c1))
        cost1 = b.mul(c64(len(s1.products)), b.mul(b.add(c1, c64(WIDEN_COST)), c0))
        choices[-2] = (s0, b.and_(ok0, b.or_(b.not_(ok1), b.icmp_unsigned("<=", cost0, cost1))), f0, sp0)
    for i, ((_sc, ok, _f, _s), body) in enumerate(zip(choices, bodies, strict=True)):  # the first exact one
        nxt = b.append_basic_block("v16.next") if i + 1 < len(choices) else fallback
        b.cbranch(ok, body, nxt)
        b.position_at_end(nxt)
    if not choices:
        b.branch(fallback)
    scratch = {  # one of each, shared by the schemes' bodies
        "xs": _scratch(b, "v16.xs", I32, SCRATCH // 4),
        "state": _scratch(b, "v16.state", I32, max([2 * GROUP_MAX * sc.cols * len(sc.products) * LANES16
                                                    for sc, *_ in choices], default=1)),
    }
    for (sc, _ok, f, s), block in zip(choices, bodies, strict=True):
        b.position_at_end(block)
        _body(b, sc, planes, a_arg, planes_at, rows, k, k2, n, s, sw, chunk_of(sc, f), lo, hi, fin, scratch, offset,
              wmax, norms, wblocks, w_aligned if sc is W4 else None)
        fin.flush()
        b.ret_void()
    b.position_at_end(fallback)
    if not ONLY:
        _fallback(b, planes, a_arg, planes_at, sw, rows, k, lo, hi, fin)
        fin.flush()
    b.ret_void()
    return fn


def _finisher(b: ir.IRBuilder, out: ir.Value, bias: ir.Value, n: ir.Value, shift: ir.Value, bias_shift: ir.Value,
              scales: ir.Value | None = None):
    """fin(totals <16 x i64>, i, j, width): outputs (i, j .. j + width) of the sums (width ≤ 16;
    the other lanes are padding columns: neither stored nor counted): each times its column's
    scale (with `scales`), bias, the rounding shift and the counted saturation of matmul.py's
    finish, 16 lanes at once."""
    v1 = ir.VectorType(ir.IntType(1), LANES16)
    lanes = ir.Constant(V16, list(range(LANES16)))
    shift64 = b.zext(shift, I64)
    half = b.select(b.icmp_unsigned("==", shift, c32(0)), c64(0), b.shl(c64(1), b.sub(shift64, c64(1))))
    half_v, shift_v = _splat(b, half, V16I64), _splat(b, shift64, V16I64)
    bshift_v = _splat(b, b.zext(bias_shift, I64), V16I64)
    has_bias = b.icmp_unsigned("!=", b.ptrtoint(bias, I64), c64(0))
    mload = _fn(b, "llvm.masked.load.v16i32.p0", V16, [PTR, I32, v1, V16])
    mstore = _fn(b, "llvm.masked.store.v16i32.p0", ir.VoidType(), [V16, PTR, I32, v1])

    def splat64(v: int) -> ir.Constant:
        return ir.Constant(V16I64, [v] * LANES16)

    # saturate32's count per lane, added to the node's counter once a call (`flush`): a counter in
    # memory took a load, an add and a store a vector, one chain through the node's slot
    changed_v = entry_alloca(b, V16, name="v16.sat")
    b.store(ir.Constant(V16, None), changed_v)

    def flush() -> None:
        if counting(b):
            red = _fn(b, "llvm.vector.reduce.add.v16i32", I32, [V16])
            slot = counter_slot(b)
            b.store(b.add(b.load(slot, typ=I32), b.call(red, [b.load(changed_v, typ=V16)])), slot)

    def column(j: ir.Value, width: ir.Value, pre: ir.Value | None = None):
        """What outputs (·, j .. j + width) share, computed once for a column block's rows: (the
        lane mask, the i64 added before the scale — `pre`, a caller's per-column term, or None —
        the scale or None, the i64 added after it: bias << bias_shift plus the rounding half).
        Without scales the two additions are one."""
        mask = b.icmp_unsigned("<", lanes, _splat(b, width, V16))
        bmask = b.and_(mask, _splat(b, has_bias, v1))  # a null bias is never read
        bv = b.call(mload, [b.gep(bias, [j], source_etype=I32), c32(4), bmask, ir.Constant(V16, None)])
        post = b.add(b.shl(b.sext(bv, V16I64), bshift_v), half_v)
        if scales is None:  # padded to whole blocks: every lane's scale is there (0 past n)
            return mask, None, None, post if pre is None else b.add(pre, post)
        return mask, pre, b.load(b.gep(scales, [j], source_etype=I64), typ=V16I64, align=8), post

    def fin(total: ir.Value, i: ir.Value, j: ir.Value, width: ir.Value) -> None:
        store(total, i, j, column(j, width))

    def store(total: ir.Value, i: ir.Value, j: ir.Value, col) -> None:
        """Outputs (i, j ..) of the sums `total` with their column block's `column`."""
        mask, pre, scale, post = col
        if pre is not None:
            total = b.add(total, pre)
        if scale is not None:
            total = b.mul(total, scale)
        total = b.ashr(b.add(total, post), shift_v)
        clamped = b.select(b.icmp_signed("<", total, splat64(fp.INT32_MIN)), splat64(fp.INT32_MIN), total)
        clamped = b.select(b.icmp_signed(">", clamped, splat64(fp.INT32_MAX)), splat64(fp.INT32_MAX), clamped)
        if counting(b):  # as saturate32: the elements outside int32, i.e. (total + 2^31) ≥ 2^32
            # unsigned; not from the clamp, so that clamp and narrowing stay one `vpmovsqd`. A
            # padding lane's total is 0 (its sum and its bias are), so it is never counted.
            wide = b.lshr(b.add(total, splat64(1 << 31)), splat64(32))
            flags = b.zext(b.icmp_unsigned("!=", wide, splat64(0)), V16)
            b.store(b.add(b.load(changed_v, typ=V16), flags), changed_v)
        b.call(mstore, [b.trunc(clamped, V16), b.gep(out, [b.add(b.mul(i, n), j)], source_etype=I32), c32(4), mask])

    fin.flush, fin.column, fin.store = flush, column, store
    return fin


def _fallback(b: ir.IRBuilder, planes: int, a_arg, d_arg, sw: ir.Value, rows: ir.Value, k: int, lo: ir.Value,
              hi: ir.Value, fin) -> None:
    """The outputs from the weight's planes (w = l + h·2^s_w, or w itself) in <16 x i64> lanes:
    every product sext(i32)·sext(i32) is exact in i64 and the sums wrap as the op's (exact for
    any x; the run's x had no scheme). One k pair of 16 columns is decoded once for FALLBACK_ROWS rows."""
    k2 = -(-k // 2)
    v32i16 = ir.VectorType(ir.IntType(16), 2 * LANES16)
    even = ir.Constant(ir.VectorType(I32, LANES16), list(range(0, 2 * LANES16, 2)))
    odd = ir.Constant(ir.VectorType(I32, LANES16), list(range(1, 2 * LANES16, 2)))
    sw_v = _splat(b, b.zext(sw, I64), V16I64)
    accs = [entry_alloca(b, V16I64, name=f"v16.facc{r}") for r in range(FALLBACK_ROWS)]
    blo = b.udiv(lo, c32(LANES16))
    bhi = b.udiv(b.add(hi, c32(LANES16 - 1)), c32(LANES16))

    def weights(jb: ir.Value, kk: ir.Value) -> tuple[ir.Value, ir.Value]:
        """w of the 16 columns of block jb at k = 2·kk and 2·kk + 1 (<16 x i64> each)."""
        at = b.mul(b.zext(b.add(b.mul(jb, c32(k2)), kk), I64), c64(planes * LANES16))
        halves = []
        for q in range(min(planes, 2)):  # l and h (σ is not needed)
            v = b.load(b.gep(d_arg, [b.add(at, c64(q * LANES16))], source_etype=I32), typ=v32i16, align=64)
            halves.append([b.sext(b.shuffle_vector(v, ir.Constant(v32i16, ir.Undefined), sel), V16I64)
                           for sel in (even, odd)])
        if planes == 1:
            return halves[0][0], halves[0][1]
        return tuple(b.add(lo_, b.shl(hi_, sw_v)) for lo_, hi_ in zip(*halves, strict=True))

    def tile(r_rows: int, i0: ir.Value, jb: ir.Value) -> None:
        for r in range(r_rows):
            b.store(ir.Constant(V16I64, None), accs[r])
        with loop(b, c32(k2), "vfk") as kk:
            w0, w1 = weights(jb, kk)
            e0 = b.mul(kk, c32(2))
            for r in range(r_rows):
                xrow = b.mul(b.add(i0, c32(r)), c32(k))
                x0 = b.sext(load(b, a_arg, b.add(xrow, e0)), I64)
                if k % 2:  # the last pair's second k is padding (a zero weight): x there is not read
                    inside = b.icmp_unsigned("<", b.add(e0, c32(1)), c32(k))
                    x1 = load(b, a_arg, b.add(xrow, b.select(inside, b.add(e0, c32(1)), e0)))
                    x1 = b.sext(b.select(inside, x1, c32(0)), I64)
                else:
                    x1 = b.sext(load(b, a_arg, b.add(xrow, b.add(e0, c32(1)))), I64)
                acc = b.load(accs[r], typ=V16I64)
                acc = b.add(acc, b.add(b.mul(_splat(b, x0, V16I64), w0), b.mul(_splat(b, x1, V16I64), w1)))
                b.store(acc, accs[r])
        j0 = b.mul(jb, c32(LANES16))
        width = b.sub(hi, j0)
        width = b.select(b.icmp_unsigned(">", width, c32(LANES16)), c32(LANES16), width)
        for r in range(r_rows):
            fin(b.load(accs[r], typ=V16I64), b.add(i0, c32(r)), j0, width)

    with loop(b, b.sub(bhi, blo), "vfj") as u:
        jb = b.add(blo, u)
        full = b.udiv(rows, c32(FALLBACK_ROWS))
        with loop(b, full, "vfr") as t:
            tile(FALLBACK_ROWS, b.mul(t, c32(FALLBACK_ROWS)), jb)
        with loop(b, b.sub(rows, b.mul(full, c32(FALLBACK_ROWS))), "vf1") as t:
            tile(1, b.add(b.mul(full, c32(FALLBACK_ROWS)), t), jb)


def _isqrt_up(b: ir.IRBuilder, v: ir.Value) -> ir.Value:
    """An i64 ≥ sqrt(v) for an i64 0 ≤ v < 2^53 (exact as a double; the double square root is
    correctly rounded, so its integer part plus one is at least the true root)."""
    f64 = ir.DoubleType()
    root = b.call(_fn(b, "llvm.sqrt.f64", f64, [f64]), [b.uitofp(v, f64)])
    return b.add(b.fptoui(root, I64), c64(1))


def _sum_squares_ok(b: ir.IRBuilder, a_arg: ir.Value, rows: ir.Value, k: int, s: ir.Value, d_arg: ir.Value,
                    wblocks: ir.Value, planes: int, top: int) -> tuple[ir.Value, ir.Value]:
    """(i1, i1): scheme W's squares bound holds for the whole reduction; for each chunk of `top`
    blocks (chunk c the pairs [16·top·c, 16·top·(c + 1)); false when top = 0) (module docstring,
    "Winograd"). With X_{p,e} and X_{p,o} the largest row's Σ x_p[k]² over the k's of even and of
    odd pairs (x's planes at s; |x_h| < 2^15, checked before) and Q_{p,e}, Q_{p,o} the weight's
    (derive: the whole reduction's, or a chunk's blocks' summed), r1_p = ⌈√X_{p,e}⌉ + ⌈√Q_{p,o}⌉
    (a first sum's norm), r2_q = ⌈√X_{q,o}⌉ + ⌈√Q_{q,e}⌉ (a second one's): max over p, q of
    r1_p·r2_q ≤ 2^31 − 2^16. One pass over x, a block (32 elements) a step, the tail masked
    (zeros add nothing)."""
    half = b.shl(c32(1), b.sub(s, c32(1)))
    vec_s, vec_half = _splat(b, s, V32), _splat(b, half, V32)
    madd = _fn(b, "llvm.x86.avx512.pmaddw.d.512", V16, [V32I16, V32I16])
    mload32 = _fn(b, "llvm.masked.load.v32i32.p0", V32, [PTR, I32, V1x32, V32])
    reduce8 = _fn(b, "llvm.vector.reduce.add.v8i64", I64, [V8I64])
    full, te = k // 32, k % 32
    nblk = full + (te > 0)
    nch = -(-nblk // top) if top else 0
    # [plane][parity]: the row's sums (whole, chunk), the largest rows' (whole, per chunk)
    row = [[entry_alloca(b, I64, name=f"v16.sqr{p}{par}") for par in range(2)] for p in range(2)]
    most = [[entry_alloca(b, I64, name=f"v16.sqm{p}{par}") for par in range(2)] for p in range(2)]
    most_c = entry_alloca(b, ir.ArrayType(I64, max(1, 4 * nch)), name="v16.sqc")
    acc = [entry_alloca(b, V16I64, name=f"v16.sqa{p}") for p in range(2)]  # lane t: pair t of a block
    lanes = [ir.Constant(ir.VectorType(I32, 8), list(range(par, LANES16, 2))) for par in range(2)]

    def at_c(p: int, par: int, ci: ir.Value) -> ir.Value:
        idx = b.add(c32((2 * p + par) * nch), ci)
        return b.bitcast(b.gep(most_c, [c32(0), idx], source_etype=most_c.allocated_type), I64.as_pointer())

    def umax_into(slot: ir.Value, v: ir.Value) -> None:
        old = b.load(slot, typ=I64)
        b.store(b.select(b.icmp_unsigned(">", v, old), v, old), slot)

    for p in range(2):
        for par in range(2):
            b.store(c64(0), most[p][par])
            for ci in range(nch):
                b.store(c64(0), at_c(p, par, c32(ci)))

    def add(v: ir.Value) -> None:
        h = b.ashr(b.add(v, vec_half), vec_s)
        for a, pv in zip(acc, (b.sub(v, b.shl(h, vec_s)), h), strict=True):
            p16 = b.trunc(pv, V32I16)  # x0² + x1² ≤ 2^31: exact as an unsigned i32
            b.store(b.add(b.load(a, typ=V16I64), b.zext(b.call(madd, [p16, p16]), V16I64)), a)

    def close(ci: ir.Value | None) -> None:
        """The blocks summed since the last close: into the row's sums and chunk ci's maxima."""
        for p in range(2):
            v = b.load(acc[p], typ=V16I64)
            for par in range(2):
                got = b.call(reduce8, [b.shuffle_vector(v, ir.Constant(V16I64, ir.Undefined), lanes[par])])
                b.store(b.add(b.load(row[p][par], typ=I64), got), row[p][par])
                if ci is not None:
                    umax_into(at_c(p, par, ci), got)
            b.store(ir.Constant(V16I64, None), acc[p])

    with loop(b, rows, "vsq") as r:
        xrow = b.mul(r, c32(k))
        for p in range(2):
            b.store(ir.Constant(V16I64, None), acc[p])
            for par in range(2):
                b.store(c64(0), row[p][par])
        with loop(b, c32(full), "vsqv") as t:
            add(b.load(b.gep(a_arg, [b.add(xrow, b.mul(t, c32(32)))], source_etype=I32), typ=V32, align=4))
            if nch:
                with b.if_then(b.icmp_unsigned("==", b.urem(b.add(t, c32(1)), c32(top)), c32(0))):
                    close(b.udiv(t, c32(top)))
        if te:
            add(b.call(mload32, [b.gep(a_arg, [b.add(xrow, c32(32 * full))], source_etype=I32), c32(4),
                                 ir.Constant(V1x32, [j < te for j in range(32)]), ir.Constant(V32, None)]))
        # the last chunk when the loop did not close it (or every block, with no chunks)
        close(c32((nblk - 1) // top) if nch and (te or full % top) else None)
        for p in range(2):
            for par in range(2):
                umax_into(most[p][par], b.load(row[p][par], typ=I64))

    def bound_ok(xsq, wsq) -> ir.Value:  # xsq(p, parity), wsq(p, parity): i64 sums of squares
        first = [b.add(_isqrt_up(b, xsq(p, 0)), _isqrt_up(b, wsq(p, 1))) for p in range(2)]
        second = [b.add(_isqrt_up(b, xsq(q, 1)), _isqrt_up(b, wsq(q, 0))) for q in range(2)]
        worst = c64(0)
        for p in range(2):
            for q in range(2):
                v = b.mul(first[p], second[q])  # < 2^50: each root < 2^24
                worst = b.select(b.icmp_unsigned(">", v, worst), v, worst)
        return b.icmp_unsigned("<=", worst, c64(BUDGET))

    def whole_w(q: int, par: int) -> ir.Value:
        return b.load(b.gep(d_arg, [c32(PARITY_NORMS + 2 * q + par)], source_etype=I64), typ=I64)

    whole = bound_ok(lambda p, par: b.load(most[p][par], typ=I64), whole_w)
    blocks = ir.Constant(ir.IntType(1), 1 if nch else 0)
    total = entry_alloca(b, I64, name="v16.sqw")
    for ci in range(nch):  # a chunk's weight squares: its blocks' (derive: [plane, parity, block] after B's)
        b0, b1 = ci * top, min((ci + 1) * top, nblk)

        def chunk_w(q: int, par: int, b0=b0, b1=b1) -> ir.Value:
            b.store(c64(0), total)
            with loop(b, c32(b1 - b0), "vsqw") as u:
                at = b.add(c32(planes * nblk + (2 * q + par) * nblk + b0), u)
                b.store(b.add(b.load(total, typ=I64), b.load(b.gep(wblocks, [at], source_etype=I64), typ=I64)), total)
            return b.load(total, typ=I64)

        blocks = b.and_(blocks, bound_ok(lambda p, par, ci=ci: b.load(at_c(p, par, c32(ci)), typ=I64), chunk_w))
    return whole, blocks


def _w_top(k: int) -> int:
    """Blocks (of BLOCK_PAIRS k pairs) in a chunk of scheme W's squares bound by chunks: the
    fewest chunks of at most the L1 cap's blocks, balanced (the smaller a chunk, the likelier its
    bound holds); 0, no such chunks, when they would be shorter than W_STEPS steps or the
    reduction is one chunk."""
    k2 = -(-k // 2)
    nblk = -(-k2 // BLOCK_PAIRS)
    most = min(k2, _l1_cap(W4)) // BLOCK_PAIRS
    if most < 1 or nblk < 2:
        return 0
    top = -(-nblk // max(2, -(-nblk // most)))
    return top if top * BLOCK_PAIRS >= 2 * W_STEPS else 0


def _l1_cap(sc: Scheme) -> int:
    """k pairs of a chunk whose weights stay in L1: a column tile reads the vectors of the
    planes its products use (one 64-byte line each; derive lays a pair's planes side by side,
    so a plane it does not use is not read)."""
    return max(4, L1_WEIGHTS // (sc.cols * len({q for _p, q in sc.products}) * 64))


def _group(sc: Scheme, rows: int, k2: int) -> int:
    """Rows of x whose planes the scratch holds at once (a multiple of the row tile); `_body`
    computes the same at run time."""
    group = max(1, min(rows, GROUP_MAX, SCRATCH // (len(sc.xplanes) * k2 * 4)))
    return group - group % sc.rows if group >= sc.rows else group


def _scratch(b: ir.IRBuilder, name: str, ty: ir.Type, count: int) -> ir.Value:
    a = entry_alloca(b, ir.ArrayType(ty, count), name=name)
    a.align = 64
    return a


def _abs64(b: ir.IRBuilder, v: ir.Value) -> ir.Value:
    """|v| (i64) of an i32."""
    v = b.sext(v, I64)
    return b.select(b.icmp_signed("<", v, c64(0)), b.sub(c64(0), v), v)


def _umin(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.select(b.icmp_unsigned("<", x, y), x, y)


def _block_chunks_ok(b: ir.IRBuilder, sc: Scheme, top: int, nch: int, nblk: int, xc, wblocks: ir.Value) -> ir.Value:
    """i1: every chunk of `top` blocks passes the squares bound (module docstring, "Chunks of
    blocks"): max over chunks and the scheme's products of X_p[c]·Σ_{b in c} Q_q[b] ≤ budget²,
    with X_p[c] (xc, [plane, chunk]) the group's max row Σ x_p² over chunk c."""
    i128 = ir.IntType(128)
    worst = entry_alloca(b, i128, name="v16.bworst")
    b.store(ir.Constant(i128, 0), worst)
    sw = {q: entry_alloca(b, I64, name=f"v16.bw{q}") for q in sorted({q for _p, q in sc.products})}
    with loop(b, c32(nch), "vbn") as ci:
        b0 = b.mul(ci, c32(top))
        for acc in sw.values():
            b.store(c64(0), acc)
        with loop(b, b.sub(_umin(b, b.add(b0, c32(top)), c32(nblk)), b0), "vbs") as u:
            for q, acc in sw.items():
                wq = b.load(b.gep(wblocks, [b.add(c32(q * nblk), b.add(b0, u))], source_etype=I64), typ=I64)
                b.store(b.add(b.load(acc, typ=I64), wq), acc)
        for p, q in sc.products:
            v = b.mul(b.zext(b.load(xc(p, ci), typ=I64), i128), b.zext(b.load(sw[q], typ=I64), i128))
            old = b.load(worst, typ=i128)
            b.store(b.select(b.icmp_unsigned(">", v, old), v, old), worst)
    return b.icmp_unsigned("<=", b.load(worst, typ=i128), ir.Constant(i128, BUDGET * BUDGET))


def _body(b: ir.IRBuilder, sc: Scheme, planes: int, a_arg, d_arg, rows: ir.Value, k: int, k2: int, n: ir.Value,
          s: ir.Value, sw: ir.Value, chunk: ir.Value, lo: ir.Value, hi: ir.Value, fin, scratch: dict,
          offset: ir.Value | None, wmax: list[ir.Value], norms: list[ir.Value], wblocks: ir.Value,
          aligned: ir.Value | None = None) -> None:
    """The scheme's run over x [rows, k] (k2 = ceil(k/2)); `chunk` is F's (capped), a group whose
    rows' plane sums or squares allow it runs whole chunks (module docstring, "Row sums")."""
    px = len(sc.xplanes)
    nprod = len(sc.products)
    cap = _group(sc, GROUP_MAX, k2)  # rows ≥ GROUP_MAX
    group = b.select(b.icmp_unsigned("<", rows, c32(cap)), rows, c32(cap))
    group = b.select(b.icmp_unsigned(">=", group, c32(sc.rows)), b.sub(group, b.urem(group, c32(sc.rows))), group)
    xs, state = scratch["xs"], scratch["state"]
    # per row of the group, block of the tile and product: the 16 lanes' low parts, then carries
    slots = GROUP_MAX * sc.cols * nprod
    dp = _fn(b, "llvm.x86.avx512.vpdpwssd.512", V16, [V16, V16, V16])
    used_w = sorted({q for _p, q in sc.products})
    accs = [entry_alloca(b, V16, name=f"acc.{sc.name}{t}") for t in range(sc.rows * sc.cols * nprod)]
    total_at = entry_alloca(b, V16I64, name=f"v16.total.{sc.name}")
    half = b.select(b.icmp_unsigned("==", s, c32(0)), c32(0), b.shl(c32(1), b.sub(s, c32(1))))
    s64 = b.zext(s, I64)
    sw64 = b.zext(sw, I64)
    wblock = k2 * planes * LANES16  # i32 elements from one block of 16 columns to the next (derive)

    def ptr(alloca, index: ir.Value, ty: ir.Type) -> ir.Value:
        return b.bitcast(b.gep(alloca, [c32(0), index], source_etype=alloca.allocated_type), ty.as_pointer())

    def state_ptr(slot: ir.Value, carry: bool) -> ir.Value:
        return ptr(state, b.mul(b.add(slot, c32(slots if carry else 0)), c32(LANES16)), V16)

    def plane_values(v: ir.Value, wide: bool = False) -> list[ir.Value]:
        """x's planes of v (an i32, or <32 x i32> when wide)."""
        c, sv, hv = (offset, s, half) if not wide else (vec_offset, vec_s, vec_half)
        if sc is A1O:
            return [b.sub(v, c)]
        if sc.xplanes == ("x",):
            return [v]
        h = b.ashr(b.add(v, hv), sv)
        lo_ = b.sub(v, b.shl(h, sv))
        return [lo_, h, b.add(lo_, h)][:px]

    def combine(vals: list[ir.Value]) -> ir.Value:
        """Σ x·w (<16 x i64>) from the products' sums (module docstring)."""
        def sh(v, amount):
            return b.shl(v, _splat(b, amount, V16I64))
        if sc is A1 or sc is A1O:
            return vals[0]
        if sc is A2:
            return b.add(vals[0], sh(vals[1], s64))
        if sc is W4:  # s = s_w: ((hh·2^s + lh + hl)·2^s) + ll
            ll, lh, hl, hh = vals
            return b.add(sh(b.add(sh(hh, sw64), b.add(lh, hl)), sw64), ll)
        if sc is C4:
            ll, lh, hl, hh = vals
            return b.add(b.add(ll, sh(lh, sw64)), b.add(sh(hl, s64), sh(hh, b.add(s64, sw64))))
        ll, hh, ss = vals
        cross = b.sub(ss, b.add(ll, hh))
        return b.add(b.add(ll, sh(cross, sw64)), sh(hh, b.add(sw64, sw64)))

    # The same Σ x·w as `combine`, as Σ_t coef_t · sum_t (wrap-around i64, the same ring): each
    # product's weight in the recombination (A2: 1, 2^s; C: 1, 2^s_w, 2^s, 2^(s + s_w); B, by
    # Karatsuba: 1 − 2^s_w, 2^(2 s_w) − 2^s_w, 2^s_w for ll, hh, σσ)
    one = c64(1)
    if sc is A1 or sc is A1O:
        coefs = [one]
    elif sc is A2:
        coefs = [one, _pow2(b, s)]
    elif sc is C4:
        coefs = [one, _pow2(b, sw), _pow2(b, s), _pow2(b, b.add(s, sw))]
    elif sc is W4:  # powers of two: recombined by shifts (`combine`), never `multiplied`
        coefs = []
    else:
        coefs = [b.sub(one, _pow2(b, sw)), b.sub(_pow2(b, b.add(sw, sw)), _pow2(b, sw)), _pow2(b, sw)]
    # … one `vpmuldq` a product and eight lanes when every coefficient is an i32 (B: s_w ≤ 15)
    mul_ok = ir.Constant(ir.IntType(1), int(MULTIPLIED))
    for cf in coefs:
        mul_ok = b.and_(mul_ok, b.icmp_signed("==", b.sext(b.trunc(cf, I32), I64), cf))
    coef_v = [_splat(b, cf, V8I64) for cf in coefs]
    interleave = ir.Constant(ir.VectorType(I32, LANES16), [j // 2 + (j % 2) * 8 for j in range(LANES16)])

    def multiplied(accs_: list[ir.Value]) -> ir.Value:
        """Σ x·w (<16 x i64>, columns in order) from one chunk's i32 sums (<16 x i32> each): the
        sums of the even columns are the low halves of the <8 x i64> view, `vpmuldq` takes
        those (signed), and the odd columns' after a shift right by 32; then the two sets of
        eight are interleaved again. Exact: |sum_t| < 2^31 and |coef_t| < 2^31, each product
        below 2^62 in magnitude, added in wrap-around i64 (13 µops a 16 outputs where the
        sign extensions and shifts take 21: the one-chunk finish of a K = 64 projection is
        about a third of its time)."""
        halves = []
        for odd in (False, True):
            total = None
            for acc, cv in zip(accs_, coef_v, strict=True):
                q = b.bitcast(acc, V8I64)
                if odd:
                    q = b.lshr(q, ir.Constant(V8I64, [32] * 8))
                prod = _mul32(b, q, cv)
                total = prod if total is None else b.add(total, prod)
            halves.append(total)
        return b.shuffle_vector(halves[0], halves[1], interleave)

    blo = b.udiv(lo, c32(LANES16))
    bhi = b.udiv(b.add(hi, c32(LANES16 - 1)), c32(LANES16))  # the padded layout has whole blocks
    mask16 = ir.Constant(V16, [0xFFFF] * LANES16)
    sixteen = ir.Constant(V16, [16] * LANES16)

    def column(jc: ir.Value):
        """`fin.column` of the column block at jc, with the scheme's own per-column term: A1o's
        + c·Σ_k w[j, k], W's − η_j (the i64 per column after the planes: derive)."""
        rest = b.sub(hi, jc)  # the part's columns in this block (none past its end)
        rest = b.select(b.icmp_signed("<", rest, c32(0)), c32(0), _umin(b, rest, c32(LANES16)))
        pre = None
        if sc is A1O or sc is W4:
            nb = b.udiv(b.add(n, c32(LANES16 - 1)), c32(LANES16))
            sums = b.gep(d_arg, [b.zext(b.mul(nb, c32(k2 * planes * LANES16)), I64)], source_etype=I32)
            colsum = b.load(b.gep(sums, [jc], source_etype=I64), typ=V16I64, align=64)
            pre = (b.mul(_splat(b, b.sext(offset, I64), V16I64), colsum) if sc is A1O
                   else b.sub(ir.Constant(V16I64, None), colsum))
        return fin.column(jc, rest, pre)

    def finish(total: ir.Value, row: ir.Value, jc: ir.Value, col) -> None:
        """Outputs (g0 + row, jc .. jc + 16) from Σ x·w (<16 x i64>: `combine`, `multiplied`) and
        the block's `column` (W: − ξ of the row here)."""
        if sc is W4:
            total = b.sub(total, _splat(b, b.load(ptr(xi, row, I64), typ=I64), V16I64))
        fin.store(total, b.add(g0, row), jc, col)

    def tile(r_rows: int, cols: int, r0: ir.Value, jb0: ir.Value, k0: ir.Value, steps: ir.Value,
             direct: bool = False, last: bool = False, opening: ir.Value | None = None) -> None:
        """Rows r0.. (group-relative) × blocks jb0..jb0+cols over pairs [k0, k0 + steps): from the
        state's low parts, then the carries take all but the low 16 bits (module docstring).
        direct (one chunk of the whole reduction): from zero, and the outputs finished from the
        accumulators themselves (module docstring, "One chunk"). `opening` (an i1: the first of
        several chunks): from zero, and the carries written, not added to (no state read: it
        holds whatever the last tile left, so nothing is zeroed beforehand)."""
        def slot(r: int, c: int, t: int) -> ir.Value:
            return b.add(b.mul(b.add(r0, c32(r)), c32(sc.cols * nprod)), c32(c * nprod + t))

        zero = ir.Constant(V16, None)
        for r in range(r_rows):
            for c in range(cols):
                for t in range(nprod):
                    start = zero if direct else b.load(state_ptr(slot(r, c, t), False), typ=V16, align=64)
                    if opening is not None:
                        start = b.select(opening, zero, start)
                    b.store(start, accs[(r * cols + c) * nprod + t])
        # one base pointer per operand, a run-time stride per k pair (and per block of the
        # weight) and constant offsets: the same loop for every shape
        w0 = b.gep(d_arg, [b.mul(b.zext(b.add(b.mul(jb0, c32(k2)), k0), I64), c64(planes * LANES16))], source_etype=I32,
                   inbounds=True)
        x0 = b.gep(ptr(xs, c32(0), I32), [b.zext(b.add(b.mul(r0, c32(px * k2)), k0), I64)], source_etype=I32,
                   inbounds=True)
        def operands(kk64: ir.Value, pair: int) -> tuple[dict, list[dict]]:
            """The weight vectors {(block, plane): <16 x i32>} and each row's x broadcasts {plane:
            <16 x i32>} of k pair kk64 + pair."""
            wk = b.gep(w0, [b.mul(kk64, c64(planes * LANES16), flags=["nuw", "nsw"])], source_etype=I32, inbounds=True)
            wv = {}
            for c in range(cols):
                for q in used_w:
                    at = c64(c * wblock + (pair * planes + q) * LANES16)
                    wv[c, q] = b.load(b.gep(wk, [at], source_etype=I32, inbounds=True), typ=V16, align=64)
            xvs = []
            for r in range(r_rows):
                xv = {}
                for p in range(px):
                    off = b.add(kk64, c64((r * px + p) * k2 + pair), flags=["nuw", "nsw"])
                    xv[p] = _splat(b, b.load(b.gep(x0, [off], source_etype=I32, inbounds=True), typ=I32), V16)
                xvs.append(xv)
            return wv, xvs

        def products(wv: dict, xvs: list[dict]) -> None:
            for r in range(r_rows):
                for t, (p, q) in enumerate(sc.products):
                    for c in range(cols):
                        acc = accs[(r * cols + c) * nprod + t]
                        b.store(b.call(dp, [b.load(acc, typ=V16), wv[c, q], xvs[r][p]]), acc)

        def sum16(u: ir.Value, v: ir.Value) -> ir.Value:  # s16 lanes (in range: the scheme's check)
            return b.bitcast(b.add(b.bitcast(u, V32I16), b.bitcast(v, V32I16)), V16)

        if sc is W4:  # a step is a k quad, pairs 2m and 2m + 1 (module docstring, "Winograd")
            with loop(b, b.lshr(steps, c32(1)), "vk") as kq:
                kk64 = b.shl(b.zext(kq, I64), c64(1))
                (w_a, x_a), (w_b, x_b) = operands(kk64, 0), operands(kk64, 1)
                for r in range(r_rows):
                    for c in range(cols):
                        first = [sum16(x_a[r][p], w_b[c, p]) for p in range(px)]  # x[2m] + w[2m + 1]
                        second = [sum16(x_b[r][p], w_a[c, p]) for p in range(px)]  # x[2m + 1] + w[2m]
                        for t, (p, q) in enumerate(sc.products):
                            acc = accs[(r * cols + c) * nprod + t]
                            b.store(b.call(dp, [b.load(acc, typ=V16), first[p], second[q]]), acc)
            if (direct or last) and k2 % 2:  # the last pair has no partner: x·w as scheme C's
                products(*operands(b.zext(b.sub(steps, c32(1)), I64), 0))
        else:
            with loop(b, steps, "vk") as kk:
                products(*operands(b.zext(kk, I64), 0))
        if direct or last:  # the sum: sext(acc), + carry·2^16 after earlier chunks (module docstring)
            cols_at = [b.mul(b.add(jb0, c32(c)), c32(LANES16)) for c in range(cols)]
            col_of = [column(jc) for jc in cols_at]  # once for the tile's rows
            for r in range(r_rows):
                for c in range(cols):
                    raw = [b.load(accs[(r * cols + c) * nprod + t], typ=V16) for t in range(nprod)]
                    row, jc = b.add(r0, c32(r)), cols_at[c]
                    if direct and sc is W4:  # the sums are the accumulators; powers of two: shifts
                        finish(combine([b.sext(v, V16I64) for v in raw]), row, jc, col_of[c])
                        continue
                    if direct:  # the sums are the accumulators: `multiplied` when its coefficients allow
                        with b.if_else(mul_ok) as (fast, slow):
                            with fast:
                                b.store(multiplied(raw), total_at)
                            with slow:
                                b.store(combine([b.sext(v, V16I64) for v in raw]), total_at)
                        finish(b.load(total_at, typ=V16I64), row, jc, col_of[c])
                        continue
                    vals = []
                    for t in range(nprod):
                        carry = b.load(state_ptr(slot(r, c, t), True), typ=V16, align=64)
                        carry = b.sext(carry if opening is None else b.select(opening, zero, carry), V16I64)
                        vals.append(b.add(b.shl(carry, ir.Constant(V16I64, [16] * LANES16)), b.sext(raw[t], V16I64)))
                    finish(combine(vals), row, jc, col_of[c])
            return
        for r in range(r_rows):
            for c in range(cols):
                for t in range(nprod):
                    acc = b.load(accs[(r * cols + c) * nprod + t], typ=V16)
                    cp = state_ptr(slot(r, c, t), True)
                    carry = b.load(cp, typ=V16, align=64)
                    if opening is not None:
                        carry = b.select(opening, zero, carry)
                    b.store(b.add(carry, b.ashr(acc, sixteen)), cp, align=64)
                    b.store(b.and_(acc, mask16), state_ptr(slot(r, c, t), False), align=64)

    whole = min(k2, _l1_cap(sc))  # chunk_of's cap, without F's bound
    peak = [entry_alloca(b, I64, name=f"v16.l1{p}") for p in range(px)]  # the group's max row sum per plane
    rsum = [entry_alloca(b, I64, name=f"v16.rs{p}") for p in range(px)]
    peak2 = [entry_alloca(b, I64, name=f"v16.l2{p}") for p in range(px)]  # … and its max row Σ x_p²
    rsq = [entry_alloca(b, I64, name=f"v16.rq{p}") for p in range(px)]
    vsq = [entry_alloca(b, V16I64, name=f"v16.vq{p}") for p in range(px)]  # Σ x_p² per lane (< 2^47)
    madd = _fn(b, "llvm.x86.avx512.pmaddw.d.512", V16, [V32I16, V32I16])
    mload32 = _fn(b, "llvm.masked.load.v32i32.p0", V32, [PTR, I32, V1x32, V32])
    mstore16 = _fn(b, "llvm.masked.store.v16i32.p0", ir.VoidType(), [V16, PTR, I32, V1x16])
    flush_f = chunk
    # the row sums and squares can only lengthen F's chunks up to the L1 cap: not worth their
    # passes when F's already reach it (the MLP's K = 784 layers)
    sums_help = b.icmp_unsigned("<", flush_f, c32(whole))
    if sc is W4:  # the bounds by x·w do not bound its products of sums
        sums_help = ir.Constant(ir.IntType(1), 0)
    full = k // 32  # row vectors of 16 whole pairs (one block each)
    # chunks of `top` whole blocks (module docstring, "Chunks of blocks"): nch of them
    nblk = -(-k2 // BLOCK_PAIRS)
    top = min(whole // BLOCK_PAIRS, nblk - 1) if BLOCK_CHUNKS and sc is not W4 else 0
    nch = -(-nblk // top) if top > 0 else 0
    if nch:
        xc_arr = entry_alloca(b, ir.ArrayType(I64, px * nch), name="v16.xchunks")  # the group's max row Σ x_p²

        def xc(p: int, ci: ir.Value) -> ir.Value:
            at = b.gep(xc_arr, [c32(0), b.add(c32(p * nch), ci)], source_etype=xc_arr.allocated_type)
            return b.bitcast(at, I64.as_pointer())

        def chunk_max(p: int, ci: ir.Value, v: ir.Value) -> None:
            old = b.load(xc(p, ci), typ=I64)
            b.store(b.select(b.icmp_unsigned(">", v, old), v, old), xc(p, ci))
    rtail = [entry_alloca(b, I64, name=f"v16.rt{p}") for p in range(px)]  # the vector part's last chunk and tail
    reduce16 = _fn(b, "llvm.vector.reduce.add.v16i64", I64, [V16I64])
    vsum = [entry_alloca(b, V32, name=f"v16.vs{p}") for p in range(px)]  # |plane| per lane (< 2^28: ≤ 2^13 adds of ≤ 2^15)
    vec_s, vec_half = _splat(b, s, V32), _splat(b, half, V32)
    vec_offset = _splat(b, offset, V32) if offset is not None else None
    xi = entry_alloca(b, ir.ArrayType(I64, GROUP_MAX), name="v16.xi")  # W: each row's ξ (group-relative)
    vxi = entry_alloca(b, V16I64, name="v16.vxi")
    quad_a = ir.Constant(V16, [4 * (j // 2) + j % 2 for j in range(LANES16)])  # x[4m], x[4m + 1]
    quad_b = ir.Constant(V16, [4 * (j // 2) + j % 2 + 2 for j in range(LANES16)])  # x[4m + 2], x[4m + 3]

    def add_xi(v: ir.Value) -> None:
        """ξ's terms of 32 elements of x (8 k quads; zeros past K add nothing), into vxi."""
        if sc is W4:
            undef = ir.Constant(V32, ir.Undefined)
            first, second = (b.sext(b.shuffle_vector(v, undef, sel), V16I64) for sel in (quad_a, quad_b))
            b.store(b.add(b.load(vxi, typ=V16I64), b.mul(first, second)), vxi)

    with loop(b, b.udiv(b.add(rows, b.sub(group, c32(1))), group), "vg") as gi:
        g0 = b.mul(gi, group)
        grows = b.select(b.icmp_unsigned(">", b.add(g0, group), rows), b.sub(rows, g0), group)
        for p in range(px):
            b.store(c64(0), peak[p])
            b.store(c64(0), peak2[p])
            if nch:
                with loop(b, c32(nch), "vbz") as ci:
                    b.store(c64(0), xc(p, ci))
        with loop(b, grows, "vsr") as r:  # the group's rows → planes of k pairs, [row, plane, pair]
            xrow = b.mul(b.add(g0, r), c32(k))
            for p in range(px):
                b.store(c64(0), rsum[p])
                b.store(c64(0), rsq[p])
                b.store(c64(0), rtail[p])
            b.store(ir.Constant(V16I64, None), vxi)
            if full:  # 16 pairs at a time: a pair's word is the little-endian i16 pair (no padding here)
                for p in range(px):
                    b.store(ir.Constant(V32, None), vsum[p])
                    b.store(ir.Constant(V16I64, None), vsq[p])
                with loop(b, c32(full), "vsv") as t:
                    v = b.load(b.gep(a_arg, [b.add(xrow, b.mul(t, c32(32)))], source_etype=I32), typ=V32, align=4)
                    add_xi(v)
                    for p, pv in enumerate(plane_values(v, True)):
                        at = b.add(b.mul(b.add(b.mul(r, c32(px)), c32(p)), c32(k2)), b.mul(t, c32(16)))
                        p16 = b.trunc(pv, V32I16)
                        b.store(b.bitcast(p16, V16), ptr(xs, at, V16), align=4)
                        with b.if_then(sums_help):
                            # x0² + x1² ≤ 2·2^30: exact as an unsigned i32 (vpmaddwd), zero-extended
                            sq = b.zext(b.call(madd, [p16, p16]), V16I64)
                            b.store(b.add(b.load(vsq[p], typ=V16I64), sq), vsq[p])
                            neg = b.icmp_signed("<", pv, ir.Constant(V32, None))
                            mag = b.select(neg, b.sub(ir.Constant(V32, None), pv), pv)
                            b.store(b.add(b.load(vsum[p], typ=V32), mag), vsum[p])
                    if nch:  # a chunk's last block: its squares to the row's and the chunk's maximum
                        last = b.icmp_unsigned("==", b.urem(b.add(t, c32(1)), c32(top)), c32(0))
                        with b.if_then(b.and_(sums_help, last)):
                            for p in range(px):
                                got = b.call(reduce16, [b.load(vsq[p], typ=V16I64)])
                                b.store(b.add(b.load(rsq[p], typ=I64), got), rsq[p])
                                chunk_max(p, b.udiv(t, c32(top)), got)
                                b.store(ir.Constant(V16I64, None), vsq[p])
                with b.if_then(sums_help):
                    for p in range(px):
                        total = b.call(_fn(b, "llvm.vector.reduce.add.v32i64", I64, [V32I64]),
                                       [b.sext(b.load(vsum[p], typ=V32), V32I64)])
                        b.store(total, rsum[p])
                        b.store(b.call(reduce16, [b.load(vsq[p], typ=V16I64)]), rtail[p])  # after the last whole chunk
            if k2 > 16 * full:  # the last K mod 32 elements: one masked vector step (zeros past K)
                te, tp = k - 32 * full, k2 - 16 * full  # elements and pairs (an odd K's padded k: 0)
                lanes32 = list(range(32))
                v = b.call(mload32, [b.gep(a_arg, [b.add(xrow, c32(32 * full))], source_etype=I32), c32(4),
                                     ir.Constant(V1x32, [j < te for j in lanes32]), ir.Constant(V32, None)])
                add_xi(v)
                pair_mask = ir.Constant(V1x16, [j < tp for j in range(LANES16)])
                live = ir.Constant(V1x32, [j < 2 * tp for j in lanes32])  # the scalar steps' elements
                for p, pv in enumerate(plane_values(v, True)):
                    at = b.add(b.mul(b.add(b.mul(r, c32(px)), c32(p)), c32(k2)), c32(16 * full))
                    pv = b.select(live, pv, ir.Constant(V32, None))  # A1o's x − c is not 0 past them
                    p16 = b.trunc(pv, V32I16)
                    b.call(mstore16, [b.bitcast(p16, V16), ptr(xs, at, V16), c32(4), pair_mask])
                    with b.if_then(sums_help):
                        sq = b.zext(b.call(madd, [p16, p16]), V16I64)  # as the vector part's squares
                        b.store(b.add(b.load(rtail[p], typ=I64), b.call(reduce16, [sq])), rtail[p])
                        mag = b.select(b.icmp_signed("<", pv, ir.Constant(V32, None)), b.sub(ir.Constant(V32, None), pv), pv)
                        red = b.call(_fn(b, "llvm.vector.reduce.add.v32i64", I64, [V32I64]), [b.sext(mag, V32I64)])
                        b.store(b.add(b.load(rsum[p], typ=I64), red), rsum[p])
            if sc is W4:
                b.store(b.call(reduce16, [b.load(vxi, typ=V16I64)]), ptr(xi, r, I64))
            for p in range(px):
                rest = b.load(rtail[p], typ=I64)
                b.store(b.add(b.load(rsq[p], typ=I64), rest), rsq[p])
                if nch and (full % top or k2 > BLOCK_PAIRS * full):  # the last chunk is not a vector part's whole one
                    chunk_max(p, c32(full // top), rest)
            for p in range(px):
                for acc, most in ((rsum[p], peak[p]), (rsq[p], peak2[p])):
                    got, old = b.load(acc, typ=I64), b.load(most, typ=I64)
                    b.store(b.select(b.icmp_unsigned(">", got, old), got, old), most)
        need = c64(0)  # a bound on any lane's change over the whole reduction (module docstring, "Row sums")
        for p, q in sc.products:
            v = b.mul(b.load(peak[p], typ=I64), wmax[q])
            need = b.select(b.icmp_unsigned(">", v, need), v, need)
        # … or by Cauchy–Schwarz: max over the products of (the group's max row Σ x_p²)·Q_q ≤ budget²
        i128 = ir.IntType(128)
        need2 = ir.Constant(i128, 0)
        for p, q in sc.products:
            v = b.mul(b.zext(b.load(peak2[p], typ=I64), i128), b.zext(norms[q], i128))
            need2 = b.select(b.icmp_unsigned(">", v, need2), v, need2)
        whole_ok = b.and_(sums_help, b.or_(b.icmp_unsigned("<=", need, c64(BUDGET)),
                                           b.icmp_unsigned("<=", need2, ir.Constant(i128, BUDGET * BUDGET))))
        chunk = b.select(whole_ok, c32(whole), flush_f)
        n_chunks = b.udiv(b.add(c32(k2), b.sub(chunk, c32(1))), chunk)
        chunk = b.udiv(b.add(c32(k2), b.sub(n_chunks, c32(1))), n_chunks)  # balanced chunks
        if sc is W4:  # of whole quads: rounded up to even, still within F's (an even count); or
            # aligned on the chunks of blocks its squares bounded (_sum_squares_ok), not balanced
            chunk = b.select(aligned, flush_f, b.and_(b.add(chunk, c32(1)), c32(-2)))
            n_chunks = b.udiv(b.add(c32(k2), b.sub(chunk, c32(1))), chunk)
        if nch:  # fewer chunks than F's, of `top` whole blocks each, when their squares allow
            blocks = entry_alloca(b, ir.IntType(1), name="v16.blocks")
            b.store(ir.Constant(ir.IntType(1), 0), blocks)
            with b.if_then(b.and_(b.and_(sums_help, b.not_(whole_ok)), b.icmp_unsigned(">", n_chunks, c32(nch)))):
                b.store(_block_chunks_ok(b, sc, top, nch, nblk, xc, wblocks), blocks)
            chunk = b.select(b.load(blocks, typ=ir.IntType(1)), c32(top * BLOCK_PAIRS), chunk)
            n_chunks = b.udiv(b.add(c32(k2), b.sub(chunk, c32(1))), chunk)
        one_bb, chunks_bb, joined = (b.append_basic_block(f"v16.{sc.name}.{t}") for t in ("one", "chunks", "join"))
        b.cbranch(b.icmp_unsigned("==", n_chunks, c32(1 if ONE_CHUNK else 0)), one_bb, chunks_bb)

        def column_tiles(body) -> None:
            """body(cols, first block) for the part's blocks: tiles of the scheme's width, then
            the blocks left over (the weight is padded to whole blocks only) one at a time."""
            first, left = blo, b.sub(bhi, blo)
            for cols in (sc.cols, 1) if sc.cols > 1 else (1,):
                count = b.udiv(left, c32(cols)) if cols > 1 else left
                with loop(b, count, f"vt{cols}") as u:
                    body(cols, b.add(first, b.mul(u, c32(cols))))
                first, left = b.add(first, b.mul(count, c32(cols))), b.sub(left, b.mul(count, c32(cols)))

        def row_tiles(each) -> None:
            """each(tile rows, first row) over the group's rows: tiles of the scheme's rows, then one."""
            r_first, r_left = c32(0), grows
            for rr in (sc.rows, 1):
                rcount = b.udiv(r_left, c32(rr)) if rr > 1 else r_left
                with loop(b, rcount, f"vr{rr}") as tr:
                    each(rr, b.add(r_first, b.mul(tr, c32(rr))))
                r_first = b.add(r_first, b.mul(rcount, c32(rr)))
                r_left = b.sub(r_left, b.mul(rcount, c32(rr)))

        def one_chunk(cols: int, jb0: ir.Value) -> None:
            row_tiles(lambda rr, r0: tile(rr, cols, r0, jb0, c32(0), c32(k2), direct=True))

        def chunks_of(cols: int, jb0: ir.Value) -> None:
            before = b.sub(n_chunks, c32(1))  # the last chunk finishes from its accumulators
            with loop(b, before, "vch") as ci:
                opening = b.icmp_unsigned("==", ci, c32(0))
                row_tiles(lambda rr, r0: tile(rr, cols, r0, jb0, b.mul(ci, chunk), chunk, opening=opening))
            k_last = b.mul(before, chunk)
            only = b.icmp_unsigned("==", before, c32(0))  # ONE_CHUNK False: one chunk comes this way too
            row_tiles(lambda rr, r0: tile(rr, cols, r0, jb0, k_last, b.sub(c32(k2), k_last), last=True, opening=only))

        b.position_at_end(one_bb)  # one chunk: no carries, outputs straight from the accumulators
        column_tiles(one_chunk)
        b.branch(joined)
        b.position_at_end(chunks_bb)
        column_tiles(chunks_of)
        b.branch(joined)
        b.position_at_end(joined)


__all__ = ["GRAIN", "available", "derive", "emit", "weight_facts"]
