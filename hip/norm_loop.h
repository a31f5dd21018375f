// The two-read row loop for rows longer than registers hold.
#pragma once

#include "row.h"
#include "team.h"
#include "quant.h"

namespace rn {

// A row too long for registers: read once for the sum of squares, again for the output. The
// fused sum is stored in the second pass, after the lane's last read of the residual element it
// replaces, so the op may run in place (sum = residual, out = x). With VAR (the _var kernels)
// the first pass, and the rescue's, covers only the row's first a.var_size elements.
// On gfx9 the row pointers live in vector registers and the team shape is re-read per row
// (portable.h, NORM_GFX9): scalar-register relief; elsewhere both are no-ops.
// QUANT (the _quant kernels, hip/quant.h): the row is read a third time, for its largest |y|,
// and written as 8-bit values with its scale.
template <typename T, typename W, int VEC, bool FUSED, typename Team, bool VAR = false,
          bool QUANT = false>
NORM_DEV void norm_loop(const NormArgs& a, long long row, bool valid, int parity,
                        const Team& team_in) {
  using A = typename Tr<T>::A;
  Team team = team_in;
  norm_refresh_lane(team.rank);
  norm_refresh_uniform(team.size);
  Row<T, W> p = row_ptrs<T, W, FUSED>(a, valid ? row : 0);
  norm_to_lanes(p.x);
  norm_to_lanes(p.r);
  norm_to_lanes(p.s);
  norm_to_lanes(p.o);
  norm_to_lanes(p.w);
  const long long nvec = valid ? a.hidden / VEC : 0;
  const long long tail0 = (a.hidden / VEC) * VEC;
  const long long end = valid ? a.hidden : 0;
  auto input = [&](long long c, A* v) __attribute__((always_inline)) {
    unpack_chunk<T, VEC>(load_chunk<T, VEC>(p.x + c * VEC), v);
    if constexpr (FUSED) {
      A t[VEC];
      unpack_chunk<T, VEC>(load_chunk<T, VEC>(p.r + c * VEC), t);
#pragma unroll
      for (int i = 0; i < VEC; ++i) v[i] += t[i];
    }
  };
  auto input1 = [&](long long e) __attribute__((always_inline)) {
    A v = Tr<T>::get(p.x + e);
    if constexpr (FUSED) v += Tr<T>::get(p.r + e);
    return v;
  };

  // The elements squared: the row, or (VAR) its first var_size: whole chunks, then one by one
  // (on gfx9 those bounds live in vector registers: the fused _wf32 kernels spilled scalar ones).
  long long nvec_s = nvec, tail0_s = tail0, end_s = end;
  if constexpr (VAR) {
    const long long count = var_count<VAR>(a);
    nvec_s = valid ? count / VEC : 0;
    tail0_s = (count / VEC) * VEC;
    end_s = valid ? count : 0;
    norm_to_lanes(nvec_s);
    norm_to_lanes(tail0_s);
    norm_to_lanes(end_s);
  }

  A ss = 0;
#pragma unroll 2
  for (long long c = team.rank; c < nvec_s; c += team.size) {
    A v[VEC];
    input(c, v);
#pragma unroll
    for (int i = 0; i < VEC; ++i) ss += v[i] * v[i];
  }
  for (long long e = tail0_s + team.rank; e < end_s; e += team.size) {
    const A v = input1(e);
    ss += v * v;
  }
  ss = team.sum(ss, parity);

  const bool rb = (a.flags & NORM_ROUND_BEFORE_WEIGHT) != 0;
  const bool off1 = (a.flags & NORM_OFFSET_ONE) != 0;
  auto write = [&](A sc) __attribute__((always_inline)) {
#pragma unroll 2
    for (long long c = team.rank; c < nvec; c += team.size) {
      A v[VEC], w[VEC], y[VEC];
      input(c, v);
      if constexpr (FUSED) store_chunk<T, VEC>(p.s + c * VEC, v);
      load_weight<W, VEC, A>(p.w ? p.w + c * VEC : nullptr, off1, w);
#pragma unroll
      for (int i = 0; i < VEC; ++i) y[i] = norm_y<T>(v[i], sc, w[i], rb);
      store_chunk<T, VEC>(p.o + c * VEC, y);
    }
    for (long long e = tail0 + team.rank; e < end; e += team.size) {
      A w[1];
      load_weight<W, 1, A>(p.w ? p.w + e : nullptr, off1, w);
      const A v = input1(e);
      if constexpr (FUSED) Tr<T>::put(p.s + e, v);
      Tr<T>::put(p.o + e, norm_y<T>(v, sc, w[0], rb));
    }
  };

  // f(v) for every squared value of this lane's part of the row (the rescue's passes).
  auto each_value = [&](auto f) __attribute__((always_inline)) {
    for (long long c = team.rank; c < nvec_s; c += team.size) {
      A v[VEC];
      input(c, v);
#pragma unroll
      for (int i = 0; i < VEC; ++i) f((float)v[i]);
    }
    for (long long e = tail0_s + team.rank; e < end_s; e += team.size) f((float)input1(e));
  };
  const A sc = row_scale<VAR>(a, ss, valid, team, each_value);
  if constexpr (!QUANT) {
    write(sc);
  } else {
    const QuantArgs qa = quant_args(a);
    // gfx9: the scale and the bounds in vector registers across the passes below (scalar-register
    // relief, as the row pointers above; no-ops elsewhere).
    A scl = sc;
    long long nv_l = nvec, tail_l = tail0, end_l = end;
    norm_to_lanes(scl);
    norm_to_lanes(nv_l);
    norm_to_lanes(tail_l);
    norm_to_lanes(end_l);
    // y of chunk c (VEC values) and of element e, rounded to T as the plain kernels store it.
    auto y_of = [&](long long c, const A* v, A* y) __attribute__((always_inline)) {
      A w[VEC];
      load_weight<W, VEC, A>(p.w ? p.w + c * VEC : nullptr, off1, w);
#pragma unroll
      for (int i = 0; i < VEC; ++i) y[i] = Tr<T>::round(norm_y<T>(v[i], scl, w[i], rb));
    };
    auto y_chunk = [&](long long c, A* y) __attribute__((always_inline)) {
      A v[VEC];
      input(c, v);
      y_of(c, v, y);
    };
    auto y_one = [&](long long e) __attribute__((always_inline)) {
      A w[1];
      load_weight<W, 1, A>(p.w ? p.w + e : nullptr, off1, w);
      return Tr<T>::round(norm_y<T>(input1(e), scl, w[0], rb));
    };
    auto each_y = [&](auto f) __attribute__((always_inline)) {
      for (long long c = team.rank; c < nv_l; c += team.size) {
        A y[VEC];
        y_chunk(c, y);
#pragma unroll
        for (int i = 0; i < VEC; ++i) f((float)y[i]);
      }
      for (long long e = tail_l + team.rank; e < end_l; e += team.size) f((float)y_one(e));
    };
    const float inv = quant_inv(qa, row, valid, team, each_y);
    unsigned char* q = quant_row(qa, valid ? row : 0);
    with_format(quant_i8(qa), [&](auto i8) __attribute__((always_inline)) {
      for (long long c = team.rank; c < nv_l; c += team.size) {
        A v[VEC], y[VEC];
        float t[VEC];
        input(c, v);
        if constexpr (FUSED) store_chunk<T, VEC>(p.s + c * VEC, v);
        y_of(c, v, y);
#pragma unroll
        for (int i = 0; i < VEC; ++i) t[i] = (float)y[i] * inv;
        quant_store<VEC>(q + c * VEC, t, i8);
      }
      for (long long e = tail_l + team.rank; e < end_l; e += team.size) {
        const float t = (float)y_one(e) * inv;
        if constexpr (FUSED) Tr<T>::put(p.s + e, input1(e));
        quant_store<1>(q + e, &t, i8);
      }
    });
  }
}

} // namespace rn
