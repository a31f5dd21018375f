// Teams: the threads that share one row, and how they combine partial results (a whole block
// through shared memory, or a power-of-two group of lanes through shuffles).
#pragma once

#include "elem.h"

namespace rn {

// The threads that share one row, and how they combine partial results. Every reduction gives
// the same bits in every thread of the team.
// Block: every thread of the block (one row at a time), via shuffles and shared memory.
struct BlockTeam {
  int rank, size;
  float* red;   // [4][1024 / NORM_WARP] shared: 0, 1 row sums (alternating rows), 2, 3 rescue
  double* redd; // [2][1024 / NORM_WARP] shared: f64 row sums (alternating rows)
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
    A s = r[0];
    for (int i = 1; i < nw; ++i) s = op(s, r[i]);
    return s;
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
