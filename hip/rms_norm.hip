// RMSNorm and fused residual-add + RMSNorm, written once for NVIDIA (PTX) and AMD (HSACO).
//
//   rms_norm:            out = x * rsqrt(mean(x^2) + eps) * w
//   fused_add_rms_norm:  s = x + residual (f32); sum_out = round(s); out = norm(s) * w
//
// Numerics (DESIGN.md): sums of squares in f32 (f64 for f64 input); the fused op normalises the
// unrounded f32 sum; outputs rounded to nearest even; optional rounding of x * scale to the input
// dtype before the weight (NORM_ROUND_BEFORE_WEIGHT); optional 1 + w (NORM_OFFSET_ONE). A row
// whose f32 sum of squares overflows, or whose mean + eps falls below 1e-30, is recomputed with
// f64 sums (the "rescue"), exactly as the CPU path does. NaN reaches only its own row.
//
// Two variants per exported name, both one launch over all rows (geometry: src/launch.rs):
//   {op}_{dtype}[_wf32]       one row per block; a row of up to 2 chunks per thread is held in
//                             registers so x (and residual) are read once; longer rows are read
//                             twice (the second read mostly hits L2).
//   {op}_{dtype}[_wf32]_rows  rows_per_block rows per block, one team of G = blockDim / rows
//                             lanes (a power of two <= warp size) per row, reduced with shuffles
//                             only: small hidden (per-head q/k norm, 64..1024).
// A chunk is 16 bytes (8 bf16/f16, 4 f32, 2 f64) when every row start and the weight are 16-byte
// aligned, one element otherwise; a row's last hidden % 8 elements are a scalar tail.

#include "portable.h"
#include "norm_args.h"

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

// The threads that share one row, and how they combine partial sums.
// Block: every thread of the block (one row per block), via shuffles and shared memory.
struct BlockTeam {
  int rank, size;
  float* red;   // [1024 / NORM_WARP] shared
  double* redd; // [1024 / NORM_WARP] shared
  template <typename A> NORM_DEV A sum(A v) const {
#pragma unroll
    for (int m = NORM_WARP / 2; m >= 1; m >>= 1) v += norm_shfl_xor(v, m);
    const int nw = size / NORM_WARP;
    if (nw == 1) return v;
    A* r;
    if constexpr (same_type<A, double>::value) r = redd; else r = red;
    if ((rank & (NORM_WARP - 1)) == 0) r[rank / NORM_WARP] = v;
    norm_barrier();
    A s = 0;
    for (int i = 0; i < nw; ++i) s += r[i];
    return s;
  }
  // Whether any row of the block needs the rescue: the block holds one row, so `p` is already
  // uniform.
  NORM_DEV bool any(bool p) const { return p; }
};

// Team: G = size lanes of one warp (a power of two), reduced by butterfly shuffles. Every lane
// of the warp executes every shuffle, including lanes whose row is past the end.
struct GroupTeam {
  int rank, size;
  template <typename A> NORM_DEV A sum(A v) const {
    for (int m = size / 2; m >= 1; m >>= 1) v += norm_shfl_xor(v, m);
    return v;
  }
  NORM_DEV bool any(bool p) const {
    int f = p ? 1 : 0;
#pragma unroll
    for (int m = NORM_WARP / 2; m >= 1; m >>= 1) f |= norm_shfl_xor_i(f, m);
    return f != 0;
  }
};

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

// The rescue: the row redone with f64 sums of squares, read again from memory (x and residual
// are unchanged; the fused op's sum was already written). Called by every lane of the team (of
// the warp, for GroupTeam) when any of them needs it; `mine` says whether this lane's row does.
// Kept out of line so the registers of the common path are not spent on this rare one.
template <typename T, typename W, int VEC, bool FUSED, typename Team>
NORM_NOINLINE void rescue_row(const NormArgs& a, long long row, bool mine, const Team& team) {
  const Row<T, W> p = row_ptrs<T, W, FUSED>(a, mine ? row : 0);
  const long long nvec = mine ? a.hidden / VEC : 0;
  const long long tail0 = (a.hidden / VEC) * VEC;
  const long long end = mine ? a.hidden : 0;
  auto input = [&](long long c, float* v) __attribute__((always_inline)) {
    unpack_chunk<T, VEC>(load_chunk<T, VEC>(p.x + c * VEC), v);
    if constexpr (FUSED) {
      float t[VEC];
      unpack_chunk<T, VEC>(load_chunk<T, VEC>(p.r + c * VEC), t);
#pragma unroll
      for (int i = 0; i < VEC; ++i) v[i] += t[i];
    }
  };
  auto input1 = [&](long long e) __attribute__((always_inline)) {
    float v = Tr<T>::get(p.x + e);
    if constexpr (FUSED) v += Tr<T>::get(p.r + e);
    return v;
  };
  double sd = 0;
  for (long long c = team.rank; c < nvec; c += team.size) {
    float v[VEC];
    input(c, v);
#pragma unroll
    for (int i = 0; i < VEC; ++i) sd += (double)v[i] * (double)v[i];
  }
  for (long long e = tail0 + team.rank; e < end; e += team.size) {
    const double v = (double)input1(e);
    sd += v * v;
  }
  sd = team.sum(sd);
  if (!mine) return;
  const double sc = norm_rsqrt(sd / (double)a.hidden + (double)(float)a.eps);
  const bool rb = (a.flags & NORM_ROUND_BEFORE_WEIGHT) != 0;
  const bool off1 = (a.flags & NORM_OFFSET_ONE) != 0;
  for (long long c = team.rank; c < nvec; c += team.size) {
    float v[VEC], w[VEC], y[VEC];
    input(c, v);
    load_weight<W, VEC, float>(p.w ? p.w + c * VEC : nullptr, off1, w);
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      float n = (float)((double)v[i] * sc);
      if (rb) n = Tr<T>::round(n);
      y[i] = n * w[i];
    }
    store_chunk<T, VEC>(p.o + c * VEC, y);
  }
  for (long long e = tail0 + team.rank; e < end; e += team.size) {
    float w[1];
    load_weight<W, 1, float>(p.w ? p.w + e : nullptr, off1, w);
    float n = (float)((double)input1(e) * sc);
    if (rb) n = Tr<T>::round(n);
    Tr<T>::put(p.o + e, n * w[0]);
  }
}

// One row held in registers: K chunks per lane plus at most one tail element.
template <typename T, typename W, int VEC, bool FUSED, int K, typename Team>
NORM_DEV void norm_regs(const NormArgs& a, long long row, bool valid, const Team& team) {
  using A = typename Tr<T>::A;
  const Row<T, W> p = row_ptrs<T, W, FUSED>(a, valid ? row : 0);
  const int nvec = valid ? (int)(a.hidden / VEC) : 0;
  const int tail = valid ? (int)(a.hidden - (long long)(a.hidden / VEC) * VEC) : 0;
  const long long tail0 = (long long)nvec * VEC;

  // All loads first, so K (2K fused) 16-byte loads are in flight per lane.
  Chunk<T, VEC> xc[K], rc[K];
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int c = team.rank + k * team.size;
    if (c < nvec) {
      xc[k] = load_chunk<T, VEC>(p.x + (long long)c * VEC);
      if constexpr (FUSED) rc[k] = load_chunk<T, VEC>(p.r + (long long)c * VEC);
    }
  }
  const bool has_tail = team.rank < tail;
  A tv = 0;
  if (has_tail) {
    tv = Tr<T>::get(p.x + tail0 + team.rank);
    if constexpr (FUSED) tv += Tr<T>::get(p.r + tail0 + team.rank);
  }

  A v[K][VEC];
  A ss = 0;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int c = team.rank + k * team.size;
    if (c < nvec) {
      unpack_chunk<T, VEC>(xc[k], v[k]);
      if constexpr (FUSED) {
        A t[VEC];
        unpack_chunk<T, VEC>(rc[k], t);
#pragma unroll
        for (int i = 0; i < VEC; ++i) v[k][i] += t[i];
        store_chunk<T, VEC>(p.s + (long long)c * VEC, v[k]);
      }
#pragma unroll
      for (int i = 0; i < VEC; ++i) ss += v[k][i] * v[k][i];
    } else {
#pragma unroll
      for (int i = 0; i < VEC; ++i) v[k][i] = 0;
    }
  }
  if (has_tail) {
    if constexpr (FUSED) Tr<T>::put(p.s + tail0 + team.rank, tv);
    ss += tv * tv;
  }
  ss = team.sum(ss);

  const bool rb = (a.flags & NORM_ROUND_BEFORE_WEIGHT) != 0;
  const bool off1 = (a.flags & NORM_OFFSET_ONE) != 0;
  // Writes the row: n = f(v), optionally rounded, times the weight.
  auto write = [&](auto f) __attribute__((always_inline)) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int c = team.rank + k * team.size;
      if (c < nvec) {
        A w[VEC], y[VEC];
        load_weight<W, VEC, A>(p.w ? p.w + (long long)c * VEC : nullptr, off1, w);
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          A n = f(v[k][i]);
          if (rb) n = Tr<T>::round(n);
          y[i] = n * w[i];
        }
        store_chunk<T, VEC>(p.o + (long long)c * VEC, y);
      }
    }
    if (has_tail) {
      A w[1];
      load_weight<W, 1, A>(p.w ? p.w + tail0 + team.rank : nullptr, off1, w);
      A n = f(tv);
      if (rb) n = Tr<T>::round(n);
      Tr<T>::put(p.o + tail0 + team.rank, n * w[0]);
    }
  };

  if constexpr (same_type<A, double>::value) {
    const double scale = norm_rsqrt(ss / (double)a.hidden + a.eps);
    write([&](double e) { return e * scale; });
  } else {
    bool rescue;
    const float scale = f32_scale(ss, a.hidden, (float)a.eps, &rescue);
    rescue = rescue && valid;
    if (team.any(rescue)) {
      rescue_row<T, W, VEC, FUSED>(a, row, rescue, team);
      if (rescue) return;
    }
    write([&](float e) { return e * scale; });
  }
}

// A row too long for registers: read once for the sum of squares, again for the output.
template <typename T, typename W, int VEC, bool FUSED, typename Team>
NORM_DEV void norm_loop(const NormArgs& a, long long row, bool valid, const Team& team) {
  using A = typename Tr<T>::A;
  const Row<T, W> p = row_ptrs<T, W, FUSED>(a, valid ? row : 0);
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

  A ss = 0;
#pragma unroll 2
  for (long long c = team.rank; c < nvec; c += team.size) {
    A v[VEC];
    input(c, v);
    if constexpr (FUSED) store_chunk<T, VEC>(p.s + c * VEC, v);
#pragma unroll
    for (int i = 0; i < VEC; ++i) ss += v[i] * v[i];
  }
  for (long long e = tail0 + team.rank; e < end; e += team.size) {
    const A v = input1(e);
    if constexpr (FUSED) Tr<T>::put(p.s + e, v);
    ss += v * v;
  }
  ss = team.sum(ss);

  const bool rb = (a.flags & NORM_ROUND_BEFORE_WEIGHT) != 0;
  const bool off1 = (a.flags & NORM_OFFSET_ONE) != 0;
  auto write = [&](auto f) __attribute__((always_inline)) {
#pragma unroll 2
    for (long long c = team.rank; c < nvec; c += team.size) {
      A v[VEC], w[VEC], y[VEC];
      input(c, v);
      load_weight<W, VEC, A>(p.w ? p.w + c * VEC : nullptr, off1, w);
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        A n = f(v[i]);
        if (rb) n = Tr<T>::round(n);
        y[i] = n * w[i];
      }
      store_chunk<T, VEC>(p.o + c * VEC, y);
    }
    for (long long e = tail0 + team.rank; e < end; e += team.size) {
      A w[1];
      load_weight<W, 1, A>(p.w ? p.w + e : nullptr, off1, w);
      A n = f(input1(e));
      if (rb) n = Tr<T>::round(n);
      Tr<T>::put(p.o + e, n * w[0]);
    }
  };

  if constexpr (same_type<A, double>::value) {
    const double scale = norm_rsqrt(ss / (double)a.hidden + a.eps);
    write([&](double e) { return e * scale; });
  } else {
    bool rescue;
    const float scale = f32_scale(ss, a.hidden, (float)a.eps, &rescue);
    rescue = rescue && valid;
    if (team.any(rescue)) {
      rescue_row<T, W, VEC, FUSED>(a, row, rescue, team);
      if (rescue) return;
    }
    write([&](float e) { return e * scale; });
  }
}

// Whether every row start and the weight allow 16-byte chunks. src/launch.rs applies the same
// rule (`vector_ok`) to size the launch; the kernel is correct whichever way it decides.
template <typename T, typename W, bool FUSED>
NORM_DEV bool vector_ok(const NormArgs& a) {
  constexpr long long V = Tr<T>::V;
  norm_u64 addr = (norm_u64)a.x | (norm_u64)a.out | (norm_u64)a.weight;
  long long strides = a.x_stride | a.out_stride;
  if constexpr (FUSED) {
    addr |= (norm_u64)a.residual | (norm_u64)a.sum_out;
    strides |= a.res_stride | a.sum_stride;
  }
  return (addr & 15u) == 0 && (strides % V) == 0 && a.hidden >= V;
}

// Chunks per lane in registers (1 or 2: with up to 1024 threads a block the compiler has 64
// registers a thread, and 2 chunks of 8 f32 values fit in them), or the two-read loop.
template <typename T, typename W, int VEC, bool FUSED, typename Team>
NORM_DEV void dispatch_k(const NormArgs& a, long long row, bool valid, const Team& team) {
  const long long n = a.hidden / VEC;
  const long long k = (n + team.size - 1) / team.size;
  switch (k) {
  case 0:
  case 1: norm_regs<T, W, VEC, FUSED, 1>(a, row, valid, team); break;
  case 2: norm_regs<T, W, VEC, FUSED, 2>(a, row, valid, team); break;
  default: norm_loop<T, W, VEC, FUSED>(a, row, valid, team); break;
  }
}

template <typename T, typename W, bool FUSED>
NORM_DEV void large_entry(const NormArgs& a) {
  __shared__ float red[1024 / NORM_WARP];
  __shared__ double redd[1024 / NORM_WARP];
  const long long row = norm_bid();
  if (row >= a.rows) return; // the whole block: no barrier is skipped by part of it
  const BlockTeam team{(int)norm_tid(), (int)norm_ntid(), red, redd};
  if (vector_ok<T, W, FUSED>(a)) {
    dispatch_k<T, W, Tr<T>::V, FUSED>(a, row, true, team);
  } else {
    dispatch_k<T, W, 1, FUSED>(a, row, true, team);
  }
}

template <typename T, typename W, bool FUSED>
NORM_DEV void rows_entry(const NormArgs& a) {
  const int nt = (int)norm_ntid();
  const int rpb = (int)a.rows_per_block;
  const int g = nt / rpb; // lanes per row: a power of two <= NORM_WARP (launch.rs)
  const int tid = (int)norm_tid();
  const long long row = (long long)norm_bid() * rpb + tid / g;
  const bool valid = row < a.rows;
  const GroupTeam team{tid & (g - 1), g};
  if (vector_ok<T, W, FUSED>(a)) {
    dispatch_k<T, W, Tr<T>::V, FUSED>(a, row, valid, team);
  } else {
    dispatch_k<T, W, 1, FUSED>(a, row, valid, team);
  }
}

} // namespace rn

#define NORM_KERNELS(TAG, T, W)                                                                    \
  extern "C" __global__ NORM_LAUNCH_BOUNDS void rms_norm_##TAG(NormArgs a) {                       \
    rn::large_entry<T, W, false>(a);                                                               \
  }                                                                                                \
  extern "C" __global__ NORM_LAUNCH_BOUNDS_ROWS void rms_norm_##TAG##_rows(NormArgs a) {                \
    rn::rows_entry<T, W, false>(a);                                                                \
  }                                                                                                \
  extern "C" __global__ NORM_LAUNCH_BOUNDS void fused_add_rms_norm_##TAG(NormArgs a) {             \
    rn::large_entry<T, W, true>(a);                                                                \
  }                                                                                                \
  extern "C" __global__ NORM_LAUNCH_BOUNDS_ROWS void fused_add_rms_norm_##TAG##_rows(NormArgs a) {      \
    rn::rows_entry<T, W, true>(a);                                                                 \
  }

NORM_KERNELS(f32, float, float)
NORM_KERNELS(f64, double, double)
NORM_KERNELS(f16, norm_f16, norm_f16)
NORM_KERNELS(f16_wf32, norm_f16, float)
NORM_KERNELS(bf16, norm_bf16, norm_bf16)
NORM_KERNELS(bf16_wf32, norm_bf16, float)
