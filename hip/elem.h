// Element types and memory chunks: per-dtype traits (compute type, elements per 16-byte chunk,
// scalar and chunk load/store, rounding through the storage type), raw chunks of x and of the
// weight, and the weight with its mode applied.
#pragma once

#include "portable.h"

namespace rn {

template <typename A, typename B> struct same_type { static constexpr bool value = false; };
template <typename A> struct same_type<A, A> { static constexpr bool value = true; };

struct alignas(16) v16 { norm_u32 w[4]; };

// Element traits: compute type A, elements per 16-byte chunk V, scalar load/store, chunk
// unpack/pack, and the round trip through the storage type.
template <typename T> struct Tr;

template <> struct Tr<float> {
  using A = float;
  static constexpr int V = 4;
  NORM_DEV static float get(const float* p) { return *p; }
  NORM_DEV static void put(float* p, float v) { *p = v; }
  NORM_DEV static void unpack(const v16& c, float* v) {
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = __builtin_bit_cast(float, c.w[i]);
  }
  NORM_DEV static v16 pack(const float* v) {
    v16 c;
#pragma unroll
    for (int i = 0; i < 4; ++i) c.w[i] = __builtin_bit_cast(norm_u32, v[i]);
    return c;
  }
  NORM_DEV static float round(float v) { return v; }
};

template <> struct Tr<double> {
  using A = double;
  static constexpr int V = 2;
  NORM_DEV static double get(const double* p) { return *p; }
  NORM_DEV static void put(double* p, double v) { *p = v; }
  NORM_DEV static void unpack(const v16& c, double* v) {
#pragma unroll
    for (int i = 0; i < 2; ++i)
      v[i] = __builtin_bit_cast(double, (norm_u64)c.w[2 * i] | ((norm_u64)c.w[2 * i + 1] << 32));
  }
  NORM_DEV static v16 pack(const double* v) {
    v16 c;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const norm_u64 u = __builtin_bit_cast(norm_u64, v[i]);
      c.w[2 * i] = (norm_u32)u;
      c.w[2 * i + 1] = (norm_u32)(u >> 32);
    }
    return c;
  }
  NORM_DEV static double round(double v) { return v; }
};

template <> struct Tr<norm_bf16> {
  using A = float;
  static constexpr int V = 8;
  NORM_DEV static float get(const norm_bf16* p) { return norm_bf16_to_f32(p->bits); }
  NORM_DEV static void put(norm_bf16* p, float v) { p->bits = norm_f32_to_bf16(v); }
  NORM_DEV static void unpack(const v16& c, float* v) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      v[2 * i] = __builtin_bit_cast(float, c.w[i] << 16);
      v[2 * i + 1] = __builtin_bit_cast(float, c.w[i] & 0xffff0000u);
    }
  }
  NORM_DEV static v16 pack(const float* v) {
    v16 c;
#pragma unroll
    for (int i = 0; i < 4; ++i) c.w[i] = norm_pack_bf16x2(v[2 * i], v[2 * i + 1]);
    return c;
  }
  NORM_DEV static float round(float v) { return norm_bf16_to_f32(norm_f32_to_bf16(v)); }
};

template <> struct Tr<norm_f16> {
  using A = float;
  static constexpr int V = 8;
  NORM_DEV static float get(const norm_f16* p) { return norm_f16_to_f32(p->bits); }
  NORM_DEV static void put(norm_f16* p, float v) { p->bits = norm_f32_to_f16(v); }
  NORM_DEV static void unpack(const v16& c, float* v) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      v[2 * i] = norm_f16_to_f32((norm_u16)(c.w[i] & 0xffffu));
      v[2 * i + 1] = norm_f16_to_f32((norm_u16)(c.w[i] >> 16));
    }
  }
  NORM_DEV static v16 pack(const float* v) {
    v16 c;
#pragma unroll
    for (int i = 0; i < 4; ++i) c.w[i] = norm_pack_f16x2(v[2 * i], v[2 * i + 1]);
    return c;
  }
  NORM_DEV static float round(float v) { return norm_f16_to_f32(norm_f32_to_f16(v)); }
};

// A chunk of VEC elements of T as it sits in memory: 16 raw bytes, or one element.
template <typename T, int VEC> struct Chunk { v16 raw; };
template <typename T> struct Chunk<T, 1> { T raw; };

template <typename T, int VEC>
NORM_DEV Chunk<T, VEC> load_chunk(const T* __restrict__ p) {
  Chunk<T, VEC> c;
  if constexpr (VEC == 1) {
    c.raw = *p;
  } else {
    static_assert(VEC * sizeof(T) == 16, "a vector chunk is 16 bytes");
    c.raw = *reinterpret_cast<const v16*>(p);
  }
  return c;
}

template <typename T, int VEC, typename A>
NORM_DEV void unpack_chunk(const Chunk<T, VEC>& c, A* v) {
  if constexpr (VEC == 1) {
    v[0] = Tr<T>::get(&c.raw);
  } else {
    Tr<T>::unpack(c.raw, v);
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

// VEC weights starting at p (16-byte aligned when VEC > 1), in the compute type, with the
// weight mode applied; ones when there is no weight.
template <typename W, int VEC, typename A>
NORM_DEV void load_weight(const W* __restrict__ p, bool offset_one, A* w) {
  if (p == nullptr) {
#pragma unroll
    for (int i = 0; i < VEC; ++i) w[i] = (A)1;
    return;
  }
  if constexpr (VEC == 1) {
    w[0] = (A)Tr<W>::get(p);
  } else {
    constexpr int PER = Tr<W>::V;
    static_assert(VEC % PER == 0, "weight chunks tile the input chunk");
#pragma unroll
    for (int j = 0; j < VEC / PER; ++j) {
      typename Tr<W>::A t[PER];
      Tr<W>::unpack(*reinterpret_cast<const v16*>(p + j * PER), t);
#pragma unroll
      for (int i = 0; i < PER; ++i) w[j * PER + i] = (A)t[i];
    }
  }
  if (offset_one) {
#pragma unroll
    for (int i = 0; i < VEC; ++i) w[i] = (A)1 + w[i];
  }
}

NORM_DEV float norm_add(float x, float y) { return x + y; }
NORM_DEV double norm_add(double x, double y) { return x + y; }
NORM_DEV float norm_max(float x, float y) { return __builtin_fmaxf(x, y); }

// Makes the raw words of a 16-byte chunk opaque (see norm_opaque): its unpacked values are then
// recomputed where needed rather than held in registers.
template <typename T, int VEC> NORM_DEV void opaque_chunk(Chunk<T, VEC>& c) {
  if constexpr (VEC > 1) {
#pragma unroll
    for (int i = 0; i < 4; ++i) norm_opaque(c.raw.w[i]);
  }
}

// The weight chunk a lane multiplies by, kept raw in registers across the rows a block handles.
template <typename W, int VEC> struct WChunk { v16 raw[(VEC * sizeof(W) + 15) / 16]; };
template <typename W> struct WChunk<W, 1> { W raw; };

template <typename W, int VEC>
NORM_DEV WChunk<W, VEC> load_wchunk(const W* __restrict__ p) {
  WChunk<W, VEC> c;
  if constexpr (VEC == 1) {
    c.raw = *p;
  } else {
    constexpr int PER = Tr<W>::V;
#pragma unroll
    for (int j = 0; j < VEC / PER; ++j) c.raw[j] = *reinterpret_cast<const v16*>(p + j * PER);
  }
  return c;
}

template <typename W, int VEC, typename A>
NORM_DEV void unpack_wchunk(const WChunk<W, VEC>& c, bool has_w, bool offset_one, A* w) {
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

} // namespace rn
