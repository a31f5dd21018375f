// Quantised outputs ({op}_{dtype}[_wf32][_rows]_quant): a row's values y, formed exactly as the
// plain kernels store them, times 1 / scale, written as fp8 e4m3 or i8 with one f32 scale per
// row. The host paths' copy of these rules is src/quant.rs; the contract is docs/numerics.md,
// "Quantised outputs".
#pragma once

#include "norm_args.h"
#include "elem.h"

namespace rn {

// The largest magnitude a value is scaled to, and the floor of a dynamic scale
// (1 / (max * 512), vLLM's).
template <bool I8> struct QuantFmt {
  static constexpr float MAX = I8 ? 127.0f : 448.0f;
  static constexpr float MIN_SCALE = 1.0f / (MAX * 512.0f);
};

// f32 -> fp8 e4m3fn bits: round to nearest even, saturated to +-448 (infinities too), NaN to
// 0x7f, the sign kept. Subnormals are multiples of 2^-9 (exact after the power-of-two scale).
NORM_DEV norm_u32 quant_e4m3(float v) {
  const norm_u32 sign = (__builtin_bit_cast(norm_u32, v) >> 24) & 0x80u;
  float a = __builtin_fabsf(v);
  if (a != a) return 0x7fu;
  a = __builtin_fminf(a, 448.0f);
  norm_u32 code;
  if (a < 0.015625f) {
    code = (norm_u32)__builtin_rintf(a * 512.0f);
  } else {
    norm_u32 b = __builtin_bit_cast(norm_u32, a);
    b += 0x7ffffu + ((b >> 20) & 1u); // round the mantissa to 3 bits, ties to even
    code = (((b >> 23) - 120u) << 3) | ((b >> 20) & 7u);
  }
  return sign | code;
}

// Two values as e4m3 bytes, lo in bits 0..7 and hi in 8..15. sm_90 has the conversion in
// hardware (same rounding and saturation; NaN to 0x7f); elsewhere quant_e4m3.
NORM_DEV norm_u32 quant_e4m3x2(float lo, float hi) {
#if NORM_HW_E4M3
  return norm_hw_e4m3x2(lo, hi);
#else
  return quant_e4m3(lo) | (quant_e4m3(hi) << 8);
#endif
}

// f32 -> i8 as a byte: round to nearest even, saturated to -128..127, NaN to 0. One conversion
// instruction where the target has it (NORM_HW_I8); elsewhere in float arithmetic.
NORM_DEV norm_u32 quant_i8(float v) {
#if NORM_HW_I8
  return norm_hw_i8(v);
#else
  if (v != v) return 0u;
  const float r = __builtin_fminf(__builtin_fmaxf(__builtin_rintf(v), -128.0f), 127.0f);
  return (norm_u32)(int)r & 0xffu;
#endif
}

// Four values as i8 bytes, v[0] in bits 0..7 (quant_i8 each).
NORM_DEV norm_u32 quant_i8x4(const float* v) {
#if NORM_HW_I8
  return norm_hw_i8x4(v[0], v[1], v[2], v[3]);
#else
  return quant_i8(v[0]) | (quant_i8(v[1]) << 8) | (quant_i8(v[2]) << 16) | (quant_i8(v[3]) << 24);
#endif
}

// f(i8) with the output format (i8: true, e4m3: false), uniform over the launch, as a Flag on
// NVIDIA: the loops inside f then convert to the one format (as a run-time bool the compiler
// converted every value both ways and selected). AMD keeps the run-time bool: one copy of the
// row loops (a second, specialised copy cost gfx9 scalar-register spills).
template <typename F> NORM_DEV void with_format(bool i8, F f) {
#if NORM_AMD
  f(i8);
#else
  if (i8) f(Flag<true>{});
  else f(Flag<false>{});
#endif
}

// N values (already times 1 / scale) written as N bytes at p (N > 1: p N-byte aligned), as i8
// or e4m3 (I8: a bool or a Flag, see with_format).
template <int N, typename I8>
NORM_DEV void quant_store(unsigned char* __restrict__ p, const float* v, I8 i8) {
  if constexpr (N == 1) {
    *p = (unsigned char)(i8 ? quant_i8(v[0]) : quant_e4m3(v[0]));
  } else {
    norm_u32 w[(N + 3) / 4] = {};
    if constexpr (N % 4 == 0) {
#pragma unroll
      for (int i = 0; i < N; i += 4)
        w[i / 4] = i8 ? quant_i8x4(v + i)
                      : quant_e4m3x2(v[i], v[i + 1]) | (quant_e4m3x2(v[i + 2], v[i + 3]) << 16);
    } else {
      w[0] = i8 ? quant_i8(v[0]) | (quant_i8(v[1]) << 8) : quant_e4m3x2(v[0], v[1]);
    }
    if constexpr (N == 8) {
      struct alignas(8) W2 { norm_u32 a, b; };
      *reinterpret_cast<W2*>(p) = W2{w[0], w[1]};
    } else if constexpr (N == 4) {
      *reinterpret_cast<norm_u32*>(p) = w[0];
    } else {
      static_assert(N == 2, "chunks of 2, 4 or 8 elements");
      *reinterpret_cast<norm_u16*>(p) = (norm_u16)w[0];
    }
  }
}

// The largest |y| of values of T, folded a 16-byte chunk of them (as stored: T's bits) at a
// time; NaN ignored, as fmaxf. 16-bit types on NVIDIA sm_80+: a packed max of the magnitudes,
// one instruction a pair (NORM_HW_MAX2; exact: the values are T's); elsewhere widened to f32.
template <typename T> struct AbsMax {
  float m = 0.0f;
  NORM_DEV void add(const v16& c) {
    typename Tr<T>::A v[Tr<T>::V];
    Tr<T>::unpack(c, v);
#pragma unroll
    for (int i = 0; i < Tr<T>::V; ++i) m = __builtin_fmaxf(m, __builtin_fabsf((float)v[i]));
  }
  NORM_DEV float get() const { return m; }
};
#if NORM_HW_MAX2
// The largest and the smallest value of each half (+0 to start, so the largest magnitude is
// the larger of the one and minus the other; a NaN operand ignored): a three-operand packed
// max and min a pair of words, no masking of signs.
template <typename T, typename C> struct AbsMaxHalf {
  static constexpr bool BF16 = same_type<T, norm_bf16>::value;
  norm_u32 hi = 0, lo = 0;
  NORM_DEV void add(const v16& c) {
#pragma unroll
    for (int i = 0; i < 4; i += 2) {
      hi = norm_pick_x2<true, BF16>(norm_pick_x2<true, BF16>(hi, c.w[i]), c.w[i + 1]);
      lo = norm_pick_x2<false, BF16>(norm_pick_x2<false, BF16>(lo, c.w[i]), c.w[i + 1]);
    }
  }
  NORM_DEV float get() const {
    return __builtin_fmaxf(__builtin_fmaxf(C::lo(hi), C::hi(hi)),
                           -__builtin_fminf(C::lo(lo), C::hi(lo)));
  }
};
template <> struct AbsMax<norm_bf16> : AbsMaxHalf<norm_bf16, Bf16Conv> {};
template <> struct AbsMax<norm_f16> : AbsMaxHalf<norm_f16, F16Conv> {};
#endif

// The quantised kernels' own arguments, read once before the row loop. On gfx9 they are moved
// to vector registers (a no-op elsewhere): held in scalar registers across the loop, they made
// the 2-byte kernels spill scalar registers.
struct QuantArgs {
  unsigned char* out;   // the values' bytes
  long long out_stride; // bytes between rows
  float* scales;        // one a row
  float fixed;          // NORM_QUANT_STATIC's scale
  norm_u32 flags;
};
NORM_DEV QuantArgs quant_args(const NormArgs& a) {
  QuantArgs q{(unsigned char*)a.out, a.out_stride, (float*)a.scales, a.quant_scale, a.flags};
  norm_to_lanes(q.out);
  norm_to_lanes(q.out_stride);
  norm_to_lanes(q.scales);
  norm_to_lanes(q.fixed);
  norm_to_lanes(q.flags);
  return q;
}

NORM_DEV bool quant_i8(const QuantArgs& q) { return (q.flags & NORM_QUANT_I8) != 0; }
NORM_DEV bool quant_static(const QuantArgs& q) { return (q.flags & NORM_QUANT_STATIC) != 0; }

// The bytes of a row's quantised values.
NORM_DEV unsigned char* quant_row(const QuantArgs& q, long long row) {
  return q.out + row * q.out_stride;
}

// The scale of a row stored and its reciprocal returned, as quant_inv (below), from this lane's
// largest |y| `m` (ignored where the scale is static): the team's reduction runs either way.
template <typename Team>
NORM_DEV float quant_inv_of(const QuantArgs& q, long long row, bool valid, const Team& team,
                            float m) {
  const bool fixed = quant_static(q);
  m = team.rescue_max(m);
  const float dynamic = quant_i8(q)
                            ? __builtin_fmaxf(m / QuantFmt<true>::MAX, QuantFmt<true>::MIN_SCALE)
                            : __builtin_fmaxf(m / QuantFmt<false>::MAX, QuantFmt<false>::MIN_SCALE);
  const float scale = fixed ? q.fixed : dynamic;
  if (valid && team.rank == 0) q.scales[row] = scale;
  return 1.0f / scale;
}

// The scale of a row, stored by the team's first lane for a valid row, and its reciprocal:
// NORM_QUANT_STATIC's scale, or max(amax / MAX, MIN_SCALE) with amax the team's largest |y|
// (NaN ignored: fmaxf), y visited as f32 through `each_y(f)`. Every lane of the team calls it;
// the reduction runs either way, outside any branch on the flags (which gfx9 holds per lane).
template <typename Team, typename Each>
NORM_DEV float quant_inv(const QuantArgs& q, long long row, bool valid, const Team& team,
                         Each each_y) {
  float m = 0.0f;
  if (!quant_static(q)) each_y([&](float y) { m = __builtin_fmaxf(m, __builtin_fabsf(y)); });
  return quant_inv_of(q, row, valid, team, m);
}

} // namespace rn
