// The register-resident row loop: rows of up to K chunks a lane, read once.
#pragma once

#include "row.h"
#include "team.h"
#include "quant.h"

namespace rn {

// Rows held in registers: K chunks per lane plus at most one tail element. The team handles the
// rows `first + it * step` for `it < iters` whose index within the block's share,
// `local0 + it * step`, is below `share` (so any team shape covers exactly the block's rows).
// The weight is loaded once for all of them. Without a residual the next row's loads are issued
// before this row's reduction (PREFETCH), so a block keeps two rows in flight; the fused op
// already has twice the bytes of a row in flight and keeps its registers for that.
// In place: every element of x and the residual is read into registers before the lane writes
// that element of out or sum, so out may be x and sum may be the residual (the row pointers'
// __restrict__ sits on struct members, which clang does not use for alias analysis, so no
// load is moved past a store or redone after it).
// QUANT (the _quant kernels, hip/quant.h): y is rounded to T as the plain kernels store it, then
// written as 8-bit values with the row's scale. VAR (the _var kernels): the squares summed, and
// the rescue's values, are those of the row's first var_size elements only.
template <typename T, typename W, int VEC, bool FUSED, int K, typename Team, bool QUANT = false,
          bool VAR = false>
NORM_DEV void norm_regs(const NormArgs& a, long long first, int local0, int step, int share,
                        const Team& team) {
  using A = typename Tr<T>::A;
  constexpr bool PREFETCH = !FUSED;
  const int nvec = (int)(a.hidden / VEC);
  const int tail = (int)(a.hidden - (long long)nvec * VEC);
  const long long tail0 = (long long)nvec * VEC;
  const bool has_tail = team.rank < tail;
  const bool rb = (a.flags & NORM_ROUND_BEFORE_WEIGHT) != 0;
  const bool off1 = (a.flags & NORM_OFFSET_ONE) != 0;
  const W* __restrict__ wp = (const W*)a.weight;
  const bool has_w = wp != nullptr;

  Chunk<W, VEC> wc[K];
  Chunk<W, 1> wtc;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int c = team.rank + k * team.size;
    if (has_w && c < nvec) wc[k] = load_chunk<W, VEC>(wp + (long long)c * VEC);
  }
  if (has_w && has_tail) wtc = load_chunk<W, 1>(wp + tail0 + team.rank);

  // Raw inputs of the current row (and, PREFETCH, of the next).
  Chunk<T, VEC> xc[K], rc[K];
  T xt, rt;
  auto load = [&](long long row, bool valid, Chunk<T, VEC>* xs, Chunk<T, VEC>* rs, T& xtl,
                  T& rtl) __attribute__((always_inline)) {
    const Row<T, W> p = row_ptrs<T, W, FUSED>(a, valid ? row : 0);
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int c = team.rank + k * team.size;
      if (valid && c < nvec) {
        xs[k] = load_chunk<T, VEC>(p.x + (long long)c * VEC);
        if constexpr (FUSED) rs[k] = load_chunk<T, VEC>(p.r + (long long)c * VEC);
      }
    }
    if (valid && has_tail) {
      xtl = p.x[tail0 + team.rank];
      if constexpr (FUSED) rtl = p.r[tail0 + team.rank];
    }
  };
  // x (+ residual) of chunk k in the compute type; the fused sum is formed the same way each
  // time it is needed, so it is the same bits.
  auto value = [&](int k, A* v) __attribute__((always_inline)) {
    unpack_chunk<T, VEC>(xc[k], v);
    if constexpr (FUSED) {
      A t[VEC];
      unpack_chunk<T, VEC>(rc[k], t);
#pragma unroll
      for (int i = 0; i < VEC; ++i) v[i] += t[i];
    }
  };
  auto value_tail = [&]() __attribute__((always_inline)) {
    A v = Tr<T>::get(&xt);
    if constexpr (FUSED) v += Tr<T>::get(&rt);
    return v;
  };

  // The quantised kernels' own arguments (hip/quant.h), read once.
  QuantArgs qa{};
  if constexpr (QUANT) qa = quant_args(a);

  // The same count in every lane: teams of one warp must run the same shuffles.
  const int iters = (share + step - 1) / step;
  if (PREFETCH) load(first, local0 < share && first < a.rows, xc, rc, xt, rt);
#pragma unroll 1
  for (int it = 0; it < iters; ++it) {
    const int local = local0 + it * step;
    const long long row = first + (long long)it * step;
    const bool valid = local < share && row < a.rows;
    if (!PREFETCH) load(row, valid, xc, rc, xt, rt);
    Chunk<T, VEC> nx[K], nr[K];
    T nxt, nrt;
    if (PREFETCH) {
      const bool nvalid = local + step < share && row + step < a.rows;
      load(row + step, nvalid, nx, nr, nxt, nrt);
    }
    const Row<T, W> p = row_ptrs<T, W, FUSED>(a, valid ? row : 0);
    const int nv = valid ? nvec : 0;
    const bool ht = valid && has_tail;

    // fc(c, v) for each of this lane's chunks of the row (v: its VEC values), then ft(v) for its
    // tail element if it has one. The squares summed: all, or (VAR) those of the first var_size
    // elements (1..hidden, the host's rule), chunk c's first summed_of(c) values, the rest
    // counted as 0. gfx9: var_size in a vector register (its compares in scalar registers
    // spilled them).
    long long vs = var_count<VAR>(a);
    if constexpr (VAR) norm_to_lanes(vs);
    auto summed_of = [&](int c) __attribute__((always_inline)) {
      if constexpr (!VAR) return VEC;
      const long long m = vs - (long long)c * VEC;
      return m <= 0 ? 0 : m >= VEC ? VEC : (int)m;
    };
    auto each_chunk = [&](auto fc, auto ft) __attribute__((always_inline)) {
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const int c = team.rank + k * team.size;
        if (c < nv) {
          A v[VEC];
          value(k, v);
          fc(c, v);
        }
      }
      if (ht) ft(value_tail());
    };
    A ss = 0;
    each_chunk(
        [&](int c, const A* v) __attribute__((always_inline)) {
          if constexpr (FUSED) store_chunk<T, VEC>(p.s + (long long)c * VEC, v);
          const int m = summed_of(c);
#pragma unroll
          for (int i = 0; i < VEC; ++i) {
            const A u = i < m ? v[i] : (A)0;
            ss += u * u;
          }
        },
        [&](A v) __attribute__((always_inline)) {
          if constexpr (FUSED) Tr<T>::put(p.s + tail0 + team.rank, v);
          const A u = !VAR || tail0 + team.rank < vs ? v : (A)0;
          ss += u * u;
        });
    ss = team.sum(ss, it & 1);
    // Unpack again after the reduction rather than holding VEC values per chunk across it, and
    // unpack the weight per row rather than holding it unpacked across rows: 4 registers per
    // 16-byte chunk instead of 8 to 16.
#pragma unroll
    for (int k = 0; k < K; ++k) {
      opaque_chunk<T, VEC>(xc[k]);
      if constexpr (FUSED) opaque_chunk<T, VEC>(rc[k]);
      opaque_chunk<W, VEC>(wc[k]);
    }

    // y of chunk k (VEC values) and of the tail element, before rounding to T.
    auto y_chunk = [&](int k, A scale, A* y) __attribute__((always_inline)) {
      A v[VEC], w[VEC];
      value(k, v);
      unpack_weight<W, VEC, A>(wc[k], has_w, off1, w);
#pragma unroll
      for (int i = 0; i < VEC; ++i) y[i] = norm_y<T>(v[i], scale, w[i], rb);
    };
    auto y_tail = [&](A scale) __attribute__((always_inline)) {
      A w[1];
      unpack_weight<W, 1, A>(wtc, has_w, off1, w);
      return norm_y<T>(value_tail(), scale, w[0], rb);
    };
    auto write = [&](A scale) __attribute__((always_inline)) {
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const int c = team.rank + k * team.size;
        if (c < nv) {
          A y[VEC];
          y_chunk(k, scale, y);
          store_chunk<T, VEC>(p.o + (long long)c * VEC, y);
        }
      }
      if (ht) Tr<T>::put(p.o + tail0 + team.rank, y_tail(scale));
    };
    // The quantised write: y rounded to T (then to f32), the row's scale, the bytes.
    auto write_quant = [&](A scale) __attribute__((always_inline)) {
      // gfx9: the row's scale in vector registers across the two passes (scalar-register relief,
      // as norm_loop's row pointers; a no-op elsewhere).
      norm_to_lanes(scale);
      auto each_y = [&](auto f) __attribute__((always_inline)) {
#pragma unroll
        for (int k = 0; k < K; ++k) {
          if (team.rank + k * team.size < nv) {
            A y[VEC];
            y_chunk(k, scale, y);
#pragma unroll
            for (int i = 0; i < VEC; ++i) f((float)Tr<T>::round(y[i]));
          }
        }
        if (ht) f((float)Tr<T>::round(y_tail(scale)));
      };
      const float inv = quant_inv(qa, row, valid, team, each_y);
      unsigned char* q = quant_row(qa, valid ? row : 0);
      with_format(quant_i8(qa), [&](auto i8) __attribute__((always_inline)) {
#pragma unroll
        for (int k = 0; k < K; ++k) {
          const int c = team.rank + k * team.size;
          if (c < nv) {
            A y[VEC];
            float t[VEC];
            y_chunk(k, scale, y);
#pragma unroll
            for (int i = 0; i < VEC; ++i) t[i] = (float)Tr<T>::round(y[i]) * inv;
            quant_store<VEC>(q + (long long)c * VEC, t, i8);
          }
        }
        if (ht) {
          const float t = (float)Tr<T>::round(y_tail(scale)) * inv;
          quant_store<1>(q + tail0 + team.rank, &t, i8);
        }
      });
    };

    // f(v) for every summed value of this lane's part of the row (the rescue's passes; zeros
    // in place of the rest change neither the max nor the sum).
    auto each_value = [&](auto f) __attribute__((always_inline)) {
      each_chunk(
          [&](int c, const A* v) __attribute__((always_inline)) {
            const int m = summed_of(c);
#pragma unroll
            for (int i = 0; i < VEC; ++i) f(i < m ? (float)v[i] : 0.0f);
          },
          [&](A v) __attribute__((always_inline)) {
            f(!VAR || tail0 + team.rank < vs ? (float)v : 0.0f);
          });
    };
    const A sc = row_scale<VAR>(a, ss, valid, team, each_value);
    if constexpr (QUANT) write_quant(sc);
    else write(sc);
    if (PREFETCH) {
#pragma unroll
      for (int k = 0; k < K; ++k) xc[k] = nx[k];
      xt = nxt;
    }
  }
}

} // namespace rn
