// Element types and memory chunks: per-dtype traits (compute type, elements per 16-byte chunk,
// scalar and chunk load/store, rounding through the storage type), raw chunks of x and of the
// weight, and the weight with its mode applied.
#pragma once

#include "portable.h"

namespace rn {

template <typename A, typename B> struct same_type { static constexpr bool value = false; };
template <typename A> struct same_type<A, A> { static constexpr bool value = true; };
template <bool B, typename X, typename Y> struct pick_type { using type = X; };
template <typename X, typename Y> struct pick_type<false, X, Y> { using type = Y; };

// A compile-time flag, for code specialised on a run-time one (row.h's with_flags, quant.h's
// with_format); it converts to its bool, so code written for a run-time bool takes it as well.
template <bool B> struct Flag {
  static constexpr bool value = B;
  NORM_DEV constexpr operator bool() const { return B; }
};

struct alignas(16) v16 { norm_u32 w[4]; };

// Element traits: compute type A, elements per 16-byte chunk V, scalar load/store, chunk
// unpack/pack, and the round trip through the storage type (round, round2 for a pair; the 16-bit
// types' round_mul2 for a pair times a pair of weights).
template <typename T> struct Tr;

// f32 and f64: a 16-byte word holds V values of T as they are.
template <typename T> struct TrFull {
  using A = T;
  static constexpr int V = 16 / sizeof(T);
  struct Words { T v[V]; };
  NORM_DEV static T get(const T* p) { return *p; }
  NORM_DEV static void put(T* p, T v) { *p = v; }
  NORM_DEV static void unpack(const v16& c, T* v) {
    const Words w = __builtin_bit_cast(Words, c);
#pragma unroll
    for (int i = 0; i < V; ++i) v[i] = w.v[i];
  }
  NORM_DEV static v16 pack(const T* v) {
    Words w;
#pragma unroll
    for (int i = 0; i < V; ++i) w.v[i] = v[i];
    return __builtin_bit_cast(v16, w);
  }
  NORM_DEV static T round(T v) { return v; }
  NORM_DEV static void round2(T&, T&) {}
};

template <> struct Tr<float> : TrFull<float> {};
template <> struct Tr<double> : TrFull<double> {};

// The two 16-bit float types differ only in their conversions (portable.h), supplied by C.
struct Bf16Conv {
  NORM_DEV static float to_f32(norm_u16 b) { return norm_bf16_to_f32(b); }
  // The low and high value of a packed pair, widened.
  NORM_DEV static float lo(norm_u32 p) { return __builtin_bit_cast(float, p << 16); }
  NORM_DEV static float hi(norm_u32 p) { return __builtin_bit_cast(float, p & 0xffff0000u); }
  NORM_DEV static norm_u16 from_f32(float v) { return norm_f32_to_bf16(v); }
  NORM_DEV static norm_u32 pack2(float lo, float hi) { return norm_pack_bf16x2(lo, hi); }
  NORM_DEV static norm_u32 mul2(norm_u32 a, norm_u32 b) { return norm_mul_bf16x2(a, b); }
};
struct F16Conv {
  NORM_DEV static float to_f32(norm_u16 h) { return norm_f16_to_f32(h); }
  NORM_DEV static float lo(norm_u32 p) { return to_f32((norm_u16)(p & 0xffffu)); }
  NORM_DEV static float hi(norm_u32 p) { return to_f32((norm_u16)(p >> 16)); }
  NORM_DEV static norm_u16 from_f32(float v) { return norm_f32_to_f16(v); }
  NORM_DEV static norm_u32 pack2(float lo, float hi) { return norm_pack_f16x2(lo, hi); }
  NORM_DEV static norm_u32 mul2(norm_u32 a, norm_u32 b) { return norm_mul_f16x2(a, b); }
};

template <typename T, typename C> struct TrHalf {
  using A = float;
  static constexpr int V = 8;
  NORM_DEV static float get(const T* p) { return C::to_f32(p->bits); }
  NORM_DEV static void put(T* p, float v) { p->bits = C::from_f32(v); }
  NORM_DEV static void unpack(const v16& c, float* v) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      v[2 * i] = C::to_f32((norm_u16)(c.w[i] & 0xffffu));
      v[2 * i + 1] = C::to_f32((norm_u16)(c.w[i] >> 16));
    }
  }
  NORM_DEV static v16 pack(const float* v) {
    v16 c;
#pragma unroll
    for (int i = 0; i < 4; ++i) c.w[i] = C::pack2(v[2 * i], v[2 * i + 1]);
    return c;
  }
  NORM_DEV static float round(float v) { return C::to_f32(C::from_f32(v)); }
  // Two values rounded at once (one paired conversion where the target has it).
  NORM_DEV static void round2(float& lo, float& hi) {
    const norm_u32 p = C::pack2(lo, hi);
    lo = C::lo(p);
    hi = C::hi(p);
  }
  // Two values rounded, multiplied by the packed pair w of T's values and rounded again (the
  // rounding before the weight; one packed multiply where the target has it).
  NORM_DEV static void round_mul2(float& lo, float& hi, norm_u32 w) {
    const norm_u32 p = C::mul2(C::pack2(lo, hi), w);
    lo = C::lo(p);
    hi = C::hi(p);
  }
};

template <> struct Tr<norm_bf16> : TrHalf<norm_bf16, Bf16Conv> {};
template <> struct Tr<norm_f16> : TrHalf<norm_f16, F16Conv> {};

// VEC elements of T as they sit in memory: whole 16-byte words (one for x; one or two for a
// weight, whose type may be wider than the input's), or one element. Kept raw in registers.
template <typename T, int VEC> struct Chunk { v16 raw[(VEC * sizeof(T) + 15) / 16]; };
template <typename T> struct Chunk<T, 1> { T raw; };

template <typename T, int VEC>
NORM_DEV Chunk<T, VEC> load_chunk(const T* __restrict__ p) {
  Chunk<T, VEC> c;
  if constexpr (VEC == 1) {
    c.raw = *p;
  } else {
    constexpr int PER = Tr<T>::V;
    static_assert(VEC % PER == 0, "a chunk is whole 16-byte words");
#pragma unroll
    for (int j = 0; j < VEC / PER; ++j) c.raw[j] = *reinterpret_cast<const v16*>(p + j * PER);
  }
  return c;
}

template <typename T, int VEC, typename A>
NORM_DEV void unpack_chunk(const Chunk<T, VEC>& c, A* v) {
  if constexpr (VEC == 1) {
    v[0] = Tr<T>::get(&c.raw);
  } else {
    static_assert(VEC * sizeof(T) == 16, "an input chunk is one 16-byte word");
    Tr<T>::unpack(c.raw[0], v);
  }
}

template <typename T, int VEC, typename A>
NORM_DEV void store_chunk(T* __restrict__ p, const A* v) {
  if constexpr (VEC == 1) {
    Tr<T>::put(p, v[0]);
  } else {
    *reinterpret_cast<v16*>(p) = Tr<T>::pack(v);
  }
}

NORM_DEV float norm_add(float x, float y) { return x + y; }
NORM_DEV double norm_add(double x, double y) { return x + y; }
NORM_DEV float norm_max(float x, float y) { return __builtin_fmaxf(x, y); }

// Makes the raw words of a chunk opaque (see norm_opaque): its unpacked values are then
// recomputed where needed rather than held in registers.
template <typename T, int VEC> NORM_DEV void opaque_chunk(Chunk<T, VEC>& c) {
  if constexpr (VEC > 1) {
#pragma unroll
    for (int j = 0; j < (int)(sizeof(c.raw) / 16); ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) norm_opaque(c.raw[j].w[i]);
  }
}

// The VEC weights of a chunk in the compute type, with the weight mode applied; ones when there
// is no weight.
template <typename W, int VEC, typename A>
NORM_DEV void unpack_weight(const Chunk<W, VEC>& c, bool has_w, bool offset_one, A* w) {
  if (!has_w) {
#pragma unroll
    for (int i = 0; i < VEC; ++i) w[i] = (A)1;
    return;
  }
  if constexpr (VEC == 1) {
    w[0] = (A)Tr<W>::get(&c.raw);
  } else {
    constexpr int PER = Tr<W>::V;
#pragma unroll
    for (int j = 0; j < VEC / PER; ++j) {
      typename Tr<W>::A t[PER];
      Tr<W>::unpack(c.raw[j], t);
#pragma unroll
      for (int i = 0; i < PER; ++i) w[j * PER + i] = (A)t[i];
    }
  }
  if (offset_one) {
#pragma unroll
    for (int i = 0; i < VEC; ++i) w[i] = (A)1 + w[i];
  }
}

// VEC weights read from p (16-byte aligned when VEC > 1; null: no weight), unpacked.
template <typename W, int VEC, typename A>
NORM_DEV void load_weight(const W* __restrict__ p, bool offset_one, A* w) {
  Chunk<W, VEC> c{};
  if (p != nullptr) c = load_chunk<W, VEC>(p);
  unpack_weight<W, VEC, A>(c, p != nullptr, offset_one, w);
}

} // namespace rn
