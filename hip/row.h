// One row: its pointers (from NormArgs and the row index), and the scale that normalises it,
// with the rescue of rows whose f32 sum of squares overflows or underflows.
#pragma once

#include "norm_args.h"
#include "elem.h"

namespace rn {

// Pointers of one row.
template <typename T, typename W> struct Row {
  const T* __restrict__ x;
  const T* __restrict__ r;
  T* __restrict__ o;
  T* __restrict__ s;
  const W* __restrict__ w;
};

template <typename T, typename W, bool FUSED>
NORM_DEV Row<T, W> row_ptrs(const NormArgs& a, long long row) {
  Row<T, W> p;
  p.x = (const T*)a.x + row * a.x_stride;
  p.o = (T*)a.out + row * a.out_stride;
  if constexpr (FUSED) {
    p.r = (const T*)a.residual + row * a.res_stride;
    p.s = (T*)a.sum_out + row * a.sum_stride;
  } else {
    p.r = nullptr;
    p.s = nullptr;
  }
  p.w = (const W*)a.weight;
  return p;
}

// f(Flag<rb>, Flag<off1>) with the two run-time option flags as compile-time ones: the row
// loops that call it run no instruction for an option that is off (measured on the H200, ncu:
// the staged kernels issue an instruction on 88% of scheduler cycles, so every one counts).
template <typename F> NORM_DEV void with_flags(bool rb, bool off1, F f) {
  if (rb) {
    if (off1) f(Flag<true>{}, Flag<true>{});
    else f(Flag<true>{}, Flag<false>{});
  } else {
    if (off1) f(Flag<false>{}, Flag<true>{});
    else f(Flag<false>{}, Flag<false>{});
  }
}

// f(Flag<weight given>, Flag<rb>, Flag<off1>): with_flags with the weight's presence as well.
// Without a weight the options change nothing (y = v * scale rounded once either way; the
// offset applies to a weight), so that is one case, f(false, false, false).
template <typename F> NORM_DEV void with_options(const NormArgs& a, F f) {
  if (a.weight == nullptr) {
    f(Flag<false>{}, Flag<false>{}, Flag<false>{});
  } else {
    with_flags((a.flags & NORM_ROUND_BEFORE_WEIGHT) != 0, (a.flags & NORM_OFFSET_ONE) != 0,
               [&](auto RB, auto OFF1) __attribute__((always_inline)) { f(Flag<true>{}, RB, OFF1); });
  }
}

// The output value of an element before its rounding to T (every kernel's one formula): its
// value v (x, or x + residual) times the row's (position's) scale, rounded to T first when `rb`
// (a bool or a Flag), times its weight w (mode applied).
template <typename T, typename A, typename RB> NORM_DEV A norm_y(A v, A scale, A w, RB rb) {
  A n = v * scale;
  if (rb) n = Tr<T>::round(n);
  return n * w;
}

// The N output values of elements e.. of a row (norm_y) from their values `v`, with the weights
// loaded here (HW: p.w is not null; `1 + w` when `OFF1`; without: ones), before their rounding
// to T; the rounding before the weight (RB) two values at a time where N is even (Tr::round2:
// one paired conversion where the target has it, the same bits). N > 1 needs 16-byte aligned
// chunks.
template <typename T, typename W, int N, bool HW, bool RB, bool OFF1, typename A>
NORM_DEV void y_elems(const Row<T, W>& p, int e, const A* v, A scale, A* y) {
  A w[N];
  unpack_weight<W, N, A>(HW ? load_chunk<W, N>(p.w + e) : Chunk<W, N>{}, HW, OFF1, w);
  if constexpr (RB && N % 2 == 0) {
#pragma unroll
    for (int i = 0; i < N; i += 2) {
      A n0 = v[i] * scale, n1 = v[i + 1] * scale;
      Tr<T>::round2(n0, n1);
      y[i] = n0 * w[i];
      y[i + 1] = n1 * w[i + 1];
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) y[i] = norm_y<T>(v[i], scale, w[i], Flag<RB>{});
  }
}

// Writes `N` elements of a row at `e` from their values `v`: the sum (fused), then y_elems.
template <typename T, typename W, int N, bool FUSED, bool HW, bool RB, bool OFF1, typename A>
NORM_DEV void write_elems(const Row<T, W>& p, int e, const A* v, A scale) {
  A y[N];
  if constexpr (FUSED) store_chunk<T, N>(p.s + e, v);
  y_elems<T, W, N, HW, RB, OFF1>(p, e, v, scale, y);
  store_chunk<T, N>(p.o + e, y);
}

// What the scale's root is taken of (src/op.rs, under_root): mean + eps, or with
// NORM_CLAMP_NORM max(mean, eps), NaN-propagating, where the host passed eps = eps_user^2 / n
// so that the scale is sqrt(n) / max(sqrt(ss), eps_user) (EpsMode::ClampNorm).
template <typename A> NORM_DEV A under_root(A mean, A eps, bool clamp) {
  return clamp ? (mean < eps ? eps : mean) : mean + eps;
}

// The f32 normalisation decision: the scale, or `rescue` when the f32 sum overflowed or what
// goes under the root is too small to carry (the row is then redone with f64 sums).
NORM_DEV float f32_scale(float ss, long long hidden, float eps, bool clamp, bool* rescue) {
  const float inv_h = 1.0f / (float)hidden;
  const float denom = under_root(ss * inv_h, eps, clamp);
  *rescue = __builtin_isinf(ss) || denom < 1e-30f;
  return norm_rsqrt(denom);
}

// The rescue of a row whose f32 sum of squares overflowed or whose mean + eps fell below 1e-30:
// with m = max |v| (a team reduction) and q = sum (v / m)^2 in f32 (no overflow, no underflow),
// scale = 1 / (m * sqrt(under_root(q / hidden, eps / m^2))) in f64. An infinite m (inf in the
// row) gives scale 0 (inf * 0 = NaN, the rest 0) and m = 0 gives 1 / sqrt(eps), as the f64 CPU
// path does.
NORM_DEV float rescue_scale(float m, float q, long long hidden, float eps, bool clamp) {
  if (!(m <= 3.4028234663852886e38f)) return 0.0f;
  if (m == 0.0f) return (float)(1.0 / __builtin_sqrt((double)eps));
  const double md = m;
  return (float)(1.0 / (md * __builtin_sqrt(under_root((double)q / (double)hidden,
                                                       (double)eps / (md * md), clamp))));
}

// The elements of a row whose squares are summed: the row, or (VAR, the _var kernels) its first
// var_size. Read from the argument where it is used: a copy held in a register across the row
// loops costs the register kernels spills (measured, ptxas sm_90).
template <bool VAR> NORM_DEV long long var_count(const NormArgs& a) {
  return VAR ? a.var_size : a.hidden;
}

// The scale of a row whose (team-reduced) sum of squares is `ss`: rsqrt(ss / count + eps) with
// count = var_count<VAR>, with f32 rows that need it rescued (f32_scale, rescue_scale). Every
// lane of the team calls it; a rescue walks this lane's values of the summed elements twice
// through `each_value(f)` (f called once per value, as a float): for the max |v|, then for the
// sum of (v / m)^2. `valid`: this lane's row exists (lanes past the last row still join the
// team's reductions).
template <bool VAR = false, typename A, typename Team, typename Each>
NORM_DEV A row_scale(const NormArgs& a, A ss, bool valid, const Team& team, Each each_value) {
  const bool clamp = (a.flags & NORM_CLAMP_NORM) != 0;
  if constexpr (same_type<A, double>::value) {
    return norm_rsqrt(under_root(ss / (double)var_count<VAR>(a), a.eps, clamp));
  } else {
    bool rescue;
    const float scale = f32_scale(ss, var_count<VAR>(a), (float)a.eps, clamp, &rescue);
    rescue = rescue && valid;
    if (!team.any(rescue)) return scale;
    float m = 0.0f, q = 0.0f;
    if (rescue) each_value([&](float v) { m = norm_max(m, __builtin_fabsf(v)); });
    m = team.rescue_max(m);
    const bool finite = m > 0.0f && m <= 3.4028234663852886e38f;
    if (rescue && finite) {
      each_value([&](float v) {
        const float t = v / m;
        q += t * t;
      });
    }
    q = team.rescue_sum(q);
    return rescue ? rescue_scale(m, q, var_count<VAR>(a), (float)a.eps, clamp) : scale;
  }
}

} // namespace rn
