// The staged row loop: rows copied into shared memory ahead of use (norm_async_copy16).
#pragma once

#include "row.h"
#include "team.h"
#include "quant.h"

namespace rn {

// Rows staged in shared memory: a ring of S row buffers per team (x and, fused, the residual),
// the copies of the team's next S - 1 rows in flight while this row is reduced and written, so
// the bytes in flight cost shared memory instead of registers (where copies are asynchronous:
// NORM_ASYNC). The team handles the rows `first + i * step` for `i < iters` whose index within
// the block's share, `local0 + i * step`, is below `share` (a block team: local0 0, step 1; teams
// of lanes: local0 the team's index in the block, step the teams in the block, as in
// norm_regs). Each lane copies, reads and writes only its own chunks of a row (c = rank + k *
// size), so its reads need only its own wait, no barrier, and a buffer is refilled (row i + S - 1
// into row i - 1's buffer) only after this lane is done with it; a block team's one barrier per
// row is the reduction's. Every lane runs every iteration and commits a group each time (empty
// past its rows), so the group count, the shuffles and the barriers stay uniform. The host
// guarantees the vector layout with hidden a whole number of chunks (src/gpu/geometry.rs) and
// min(S, iters) * step * IN * hidden elements of dynamic shared memory (iters the iterations
// below). In place: out may be x and sum the residual: a row's inputs are in shared memory
// before its outputs are written.
// QUANT (the _staged_quant kernels, hip/quant.h): y, rounded to T as the plain kernels store it,
// is formed from the staged row once; with a dynamic scale it replaces x in shared memory while
// the row's largest |y| is taken, and the bytes are written from there.
template <typename T, typename W, bool FUSED, int S, typename Team, bool QUANT = false>
NORM_DEV void norm_staged(const NormArgs& a, long long first, int local0, int step, int share,
                          const Team& team) {
  using A = typename Tr<T>::A;
  constexpr int VEC = Tr<T>::V;
  constexpr int IN = FUSED ? 2 : 1;
  const long long n = a.hidden / VEC;
  Chunk<T, VEC>* buf = (Chunk<T, VEC>*)norm_dyn_smem(); // [min(S, iters)][step][IN][n]
  auto slot = [&](int i, int which, long long c) __attribute__((always_inline)) {
    return buf + (((long long)(i % S) * step + local0) * IN + which) * n + c;
  };
  auto valid_at = [&](int i) __attribute__((always_inline)) {
    return local0 + (long long)i * step < share && first + (long long)i * step < a.rows;
  };
  auto issue = [&](int i) __attribute__((always_inline)) {
    if (valid_at(i)) {
      const Row<T, W> p = row_ptrs<T, W, FUSED>(a, first + (long long)i * step);
      for (long long c = team.rank; c < n; c += team.size) {
        norm_async_copy16(slot(i, 0, c), p.x + c * VEC);
        if constexpr (FUSED) norm_async_copy16(slot(i, 1, c), p.r + c * VEC);
      }
    }
    norm_async_commit();
  };
  const bool rb = (a.flags & NORM_ROUND_BEFORE_WEIGHT) != 0;
  const bool off1 = (a.flags & NORM_OFFSET_ONE) != 0;
  QuantArgs qa{};
  if constexpr (QUANT) qa = quant_args(a);
  // The same count in every lane: teams of one warp must run the same shuffles.
  const int iters = (share + step - 1) / step;

  for (int i = 0; i < S - 1; ++i) issue(i);
#pragma unroll 1
  for (int i = 0; i < iters; ++i) {
    issue(i + S - 1);
    norm_async_wait<S - 1>();
    const long long row = first + (long long)i * step;
    const bool valid = valid_at(i);
    const Row<T, W> p = row_ptrs<T, W, FUSED>(a, valid ? row : 0);
    const long long nv = valid ? n : 0;
    // x (+ residual) of chunk c in the compute type: the same bits each time it is needed.
    auto value = [&](long long c, A* v) __attribute__((always_inline)) {
      unpack_chunk<T, VEC>(*slot(i, 0, c), v);
      if constexpr (FUSED) {
        A t[VEC];
        unpack_chunk<T, VEC>(*slot(i, 1, c), t);
#pragma unroll
        for (int e = 0; e < VEC; ++e) v[e] += t[e];
      }
    };
    A ss = 0;
    for (long long c = team.rank; c < nv; c += team.size) {
      A v[VEC];
      value(c, v);
#pragma unroll
      for (int e = 0; e < VEC; ++e) ss += v[e] * v[e];
    }
    ss = team.sum(ss, i & 1);
    auto each_value = [&](auto f) __attribute__((always_inline)) {
      for (long long c = team.rank; c < nv; c += team.size) {
        A v[VEC];
        value(c, v);
#pragma unroll
        for (int e = 0; e < VEC; ++e) f((float)v[e]);
      }
    };
    const A sc = row_scale(a, ss, valid, team, each_value);
    if constexpr (!QUANT) {
      with_flags(rb, off1, [&](auto RB, auto OFF1) __attribute__((always_inline)) {
        for (long long c = team.rank; c < nv; c += team.size) {
          A v[VEC];
          value(c, v);
          // An element index within a staged row, which shared memory holds: an int.
          constexpr bool R = decltype(RB)::value, O = decltype(OFF1)::value;
          write_elems<T, W, VEC, FUSED, R, O>(p, (int)(c * VEC), v, sc);
        }
      });
    } else {
      // The options as compile-time flags here too (the flags are uniform over the launch, so
      // the team reduction inside quant_inv_of is reached by every lane of the team alike).
      with_flags(rb, off1, [&](auto RB, auto OFF1) __attribute__((always_inline)) {
        constexpr bool R = decltype(RB)::value, O = decltype(OFF1)::value;
        // y of chunk c (the fused sum stored on the way), rounded to T as the plain kernels
        // store it.
        auto y_of = [&](long long c, A* y) __attribute__((always_inline)) {
          A v[VEC], w[VEC];
          value(c, v);
          if constexpr (FUSED) store_chunk<T, VEC>(p.s + c * VEC, v);
          load_weight<W, VEC, A>(p.w ? p.w + c * VEC : nullptr, O, w);
#pragma unroll
          for (int e = 0; e < VEC; ++e) {
            A n = v[e] * sc;
            if constexpr (R) n = Tr<T>::round(n);
            y[e] = Tr<T>::round(n * w[e]);
          }
        };
        // A dynamic scale: y formed once, its largest |y| taken and y kept in the row's x
        // buffer (this lane's own chunks; y is exact in T), from which the bytes are written.
        // A static one: y formed in the writing pass.
        const bool dynamic = !quant_static(qa);
        float m = 0.0f;
        if (dynamic) {
          for (long long c = team.rank; c < nv; c += team.size) {
            A y[VEC];
            y_of(c, y);
#pragma unroll
            for (int e = 0; e < VEC; ++e) m = __builtin_fmaxf(m, __builtin_fabsf((float)y[e]));
            store_chunk<T, VEC>((T*)slot(i, 0, c), y);
          }
        }
        const float inv = quant_inv_of(qa, row, valid, team, m);
        unsigned char* q = quant_row(qa, valid ? row : 0);
        const bool i8 = quant_i8(qa);
        for (long long c = team.rank; c < nv; c += team.size) {
          A y[VEC];
          if (dynamic) {
            unpack_chunk<T, VEC>(*slot(i, 0, c), y);
          } else {
            y_of(c, y);
          }
          float t[VEC];
#pragma unroll
          for (int e = 0; e < VEC; ++e) t[e] = (float)y[e] * inv;
          quant_store<VEC>(q + c * VEC, t, i8);
        }
      });
    }
  }
  norm_async_wait<0>(); // nothing left in flight when the block ends
}

} // namespace rn
