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
// the row's largest |y| is taken, and the bytes are written from there, converted to the one
// format of the launch (with_format).
template <typename T, typename W, bool FUSED, int S, typename Team, bool QUANT = false>
NORM_DEV void norm_staged(const NormArgs& a, long long first, int local0, int step, int share,
                          const Team& team) {
  using A = typename Tr<T>::A;
  using C = Chunk<T, Tr<T>::V>;
  constexpr int VEC = Tr<T>::V;
  constexpr int IN = FUSED ? 2 : 1;
  // Chunk and element indices within a staged row, which shared memory holds: ints.
  const int n = (int)(a.hidden / VEC);
  C* buf = (C*)norm_dyn_smem(); // [min(S, iters)][step][IN][n]
  auto slot = [&](int i, int which) __attribute__((always_inline)) {
    return buf + (((i % S) * step + local0) * IN + which) * n;
  };
  auto valid_at = [&](int i) __attribute__((always_inline)) {
    return local0 + (long long)i * step < share && first + (long long)i * step < a.rows;
  };
  auto issue = [&](int i) __attribute__((always_inline)) {
    if (valid_at(i)) {
      const Row<T, W> p = row_ptrs<T, W, FUSED>(a, first + (long long)i * step);
      C* xs = slot(i, 0);
      for (int c = team.rank; c < n; c += team.size) {
        norm_async_copy16(xs + c, p.x + c * VEC);
        if constexpr (FUSED) norm_async_copy16(xs + n + c, p.r + c * VEC);
      }
    }
    norm_async_commit();
  };
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
    const int nv = valid ? n : 0;
    C* xs = slot(i, 0); // x, then (fused) the residual at xs + n
    // x (+ residual) of chunk c in the compute type: the same bits each time it is needed.
    auto value = [&](int c, A* v) __attribute__((always_inline)) {
      unpack_chunk<T, VEC>(xs[c], v);
      if constexpr (FUSED) {
        A t[VEC];
        unpack_chunk<T, VEC>(xs[n + c], t);
#pragma unroll
        for (int e = 0; e < VEC; ++e) v[e] += t[e];
      }
    };
    A ss = 0;
    for (int c = team.rank; c < nv; c += team.size) {
      A v[VEC];
      value(c, v);
#pragma unroll
      for (int e = 0; e < VEC; ++e) ss += v[e] * v[e];
    }
    ss = team.sum(ss, i & 1);
    auto each_value = [&](auto f) __attribute__((always_inline)) {
      for (int c = team.rank; c < nv; c += team.size) {
        A v[VEC];
        value(c, v);
#pragma unroll
        for (int e = 0; e < VEC; ++e) f((float)v[e]);
      }
    };
    const A sc = row_scale(a, ss, valid, team, each_value);
    // The weight's presence and the options as compile-time flags (with_options; uniform over
    // the launch, so a team reduction inside is reached by every lane of the team alike).
    with_options(a, [&](auto HW, auto RB, auto OFF1) __attribute__((always_inline)) {
      constexpr bool H = decltype(HW)::value, R = decltype(RB)::value, O = decltype(OFF1)::value;
      if constexpr (!QUANT) {
        for (int c = team.rank; c < nv; c += team.size) {
          A v[VEC];
          value(c, v);
          write_elems<T, W, VEC, FUSED, H, R, O>(p, c * VEC, v, sc);
        }
      } else {
        // y of chunk c as the plain kernels store it (T's bits, rounded in pairs where T has a
        // paired conversion), the fused sum stored on the way.
        auto y_of = [&](int c) __attribute__((always_inline)) {
          A v[VEC], y[VEC];
          value(c, v);
          if constexpr (FUSED) store_chunk<T, VEC>(p.s + c * VEC, v);
          y_elems<T, W, VEC, H, R, O>(p, c * VEC, v, sc, y);
          return Tr<T>::pack(y);
        };
        // A dynamic scale: y formed once, its largest |y| folded (AbsMax) and y kept in the
        // row's x buffer (this lane's own chunks), from which the bytes are written. A static
        // one: y formed in the writing pass.
        const bool dynamic = !quant_static(qa);
        AbsMax<T> m;
        if (dynamic) {
          for (int c = team.rank; c < nv; c += team.size) {
            const v16 y = y_of(c);
            m.add(y);
            xs[c].raw[0] = y;
          }
        }
        const float inv = quant_inv_of(qa, row, valid, team, m.get());
        unsigned char* q = quant_row(qa, valid ? row : 0);
        with_format(quant_i8(qa), [&](auto I8) __attribute__((always_inline)) {
          auto write = [&](int c, const v16& yc) __attribute__((always_inline)) {
            A y[VEC];
            float t[VEC];
            Tr<T>::unpack(yc, y);
#pragma unroll
            for (int e = 0; e < VEC; ++e) t[e] = (float)y[e] * inv;
            quant_store<VEC>(q + c * VEC, t, I8);
          };
          if (dynamic) {
            for (int c = team.rank; c < nv; c += team.size) write(c, xs[c].raw[0]);
          } else {
            for (int c = team.rank; c < nv; c += team.size) write(c, y_of(c));
          }
        });
      }
    });
  }
  norm_async_wait<0>(); // nothing left in flight when the block ends
}

} // namespace rn
