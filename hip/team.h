// Teams: the threads that share one row, and how they combine partial results (a whole block
// through shared memory, or a power-of-two group of lanes through shuffles).
#pragma once

#include "elem.h"

namespace rn {

// The warps' partials r[0], ..., r[nw - 1] folded in that order with op (the same bits in every
// thread that reads them): on NVIDIA f32 ones four at a time through 16-byte reads (r 16-byte
// aligned), a few instructions instead of a loop iteration a warp; the rest, and all on AMD
// (there the second path cost gfx90a and gfx1201 quantised kernels scalar-register spills),
// one by one, in a loop kept rolled (unrolled for every count of the tail, it took 1.8 MB of
// the 12.3 MB sm_90 cubin).
template <typename A, typename Op> NORM_DEV A fold_partials(const A* r, int nw, Op op) {
  A s = r[0];
  int i = 1;
  if constexpr (sizeof(A) == 4 && !NORM_AMD) {
    if (nw >= 4) {
      const v16 q0 = *reinterpret_cast<const v16*>(r);
#pragma unroll
      for (int j = 1; j < 4; ++j) s = op(s, __builtin_bit_cast(A, q0.w[j]));
#pragma unroll 1
      for (i = 4; i + 4 <= nw; i += 4) {
        const v16 q = *reinterpret_cast<const v16*>(r + i);
#pragma unroll
        for (int j = 0; j < 4; ++j) s = op(s, __builtin_bit_cast(A, q.w[j]));
      }
    }
  }
#pragma unroll 1
  for (; i < nw; ++i) s = op(s, r[i]);
  return s;
}

// The threads that share one row, and how they combine partial results. Every reduction gives
// the same bits in every thread of the team.
// Block: every thread of the block (one row at a time), via shuffles and shared memory.
struct BlockTeam {
  int rank, size;
  // Shared: red [4][1024 / NORM_WARP], 16-byte aligned (0, 1: row sums of alternating rows; 2,
  // 3: rescue); redd [2][1024 / NORM_WARP] (f64 row sums of alternating rows).
  float* red;
  double* redd;
  // One barrier per reduction. A slot is written again only after every thread has passed a
  // later barrier (the next row's sum), hence after all its reads of this row: row sums
  // alternate between slots 0 and 1, and the rescue slots are used at most once per row.
  template <typename A, typename Op> NORM_DEV A reduce(A v, int slot, Op op) const {
#pragma unroll
    for (int m = NORM_WARP / 2; m >= 1; m >>= 1) v = op(v, norm_shfl_xor(v, m));
    const int nw = size / NORM_WARP;
    if (nw == 1) return v;
    A* r;
    if constexpr (same_type<A, double>::value) r = redd; else r = red;
    r += slot * (1024 / NORM_WARP);
    if ((rank & (NORM_WARP - 1)) == 0) r[rank / NORM_WARP] = v;
    norm_barrier();
    return fold_partials(r, nw, op);
  }
  template <typename A> NORM_DEV A sum(A v, int parity) const {
    return reduce(v, parity, [](A x, A y) { return norm_add(x, y); });
  }
  NORM_DEV float rescue_max(float v) const {
    return reduce(v, 2, [](float x, float y) { return norm_max(x, y); });
  }
  NORM_DEV float rescue_sum(float v) const {
    return reduce(v, 3, [](float x, float y) { return norm_add(x, y); });
  }
  // Whether any row the block is on needs the rescue: one row at a time, already uniform.
  NORM_DEV bool any(bool p) const { return p; }
};

// Team: G = size lanes of one warp (a power of two), reduced by butterfly shuffles. Every lane
// of the warp executes every shuffle, including lanes whose row is past the end.
struct GroupTeam {
  int rank, size;
  template <typename A, typename Op> NORM_DEV A reduce(A v, Op op) const {
    for (int m = size / 2; m >= 1; m >>= 1) v = op(v, norm_shfl_xor(v, m));
    return v;
  }
  template <typename A> NORM_DEV A sum(A v, int) const {
    return reduce(v, [](A x, A y) { return norm_add(x, y); });
  }
  NORM_DEV float rescue_max(float v) const {
    return reduce(v, [](float x, float y) { return norm_max(x, y); });
  }
  NORM_DEV float rescue_sum(float v) const {
    return reduce(v, [](float x, float y) { return norm_add(x, y); });
  }
  NORM_DEV bool any(bool p) const {
    int f = p ? 1 : 0;
#pragma unroll
    for (int m = NORM_WARP / 2; m >= 1; m >>= 1) f |= norm_shfl_xor_i(f, m);
    return f != 0;
  }
};

} // namespace rn
