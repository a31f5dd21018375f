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

// The f32 normalisation decision: the scale, or `rescue` when the f32 sum overflowed or the
// mean + eps is too small to carry (the row is then redone with f64 sums).
NORM_DEV float f32_scale(float ss, long long hidden, float eps, bool* rescue) {
  const float inv_h = 1.0f / (float)hidden;
  const float denom = ss * inv_h + eps;
  *rescue = __builtin_isinf(ss) || denom < 1e-30f;
  return norm_rsqrt(denom);
}

// The rescue of a row whose f32 sum of squares overflowed or whose mean + eps fell below 1e-30:
// with m = max |v| (a team reduction) and q = sum (v / m)^2 in f32 (no overflow, no underflow),
// scale = 1 / (m * sqrt(q / hidden + eps / m^2)) in f64. An infinite m (inf in the row) gives
// scale 0 (inf * 0 = NaN, the rest 0) and m = 0 gives 1 / sqrt(eps), as the f64 CPU path does.
NORM_DEV float rescue_scale(float m, float q, long long hidden, float eps) {
  if (!(m <= 3.4028234663852886e38f)) return 0.0f;
  if (m == 0.0f) return (float)(1.0 / __builtin_sqrt((double)eps));
  const double md = m;
  return (float)(1.0 / (md * __builtin_sqrt((double)q / (double)hidden + (double)eps / (md * md))));
}

} // namespace rn
