// RMSNorm and fused residual-add + RMSNorm, written once for NVIDIA (PTX) and AMD (HSACO).
//
//   rms_norm:            out = x * rsqrt(mean(x^2) + eps) * w
//   fused_add_rms_norm:  s = x + residual (f32); sum_out = round(s); out = norm(s) * w
//
// Numerics (DESIGN.md): sums of squares in f32 (f64 for f64 input); the fused op normalises the
// unrounded f32 sum; outputs rounded to nearest even; optional rounding of x * scale to the input
// dtype before the weight (NORM_ROUND_BEFORE_WEIGHT); optional 1 + w (NORM_OFFSET_ONE). A row
// whose f32 sum of squares overflows, or whose mean + eps falls below 1e-30, is rescued: with
// m = max |v|, the sum of (v / m)^2 in f32 and the scale in f64 (see rescue_scale), so huge and
// tiny rows normalise as on the CPU path (which uses f64 sums). NaN reaches only its own row.
//
// Two variants per exported name, both one launch over all rows (geometry: src/launch.rs):
//   {op}_{dtype}[_wf32]       a block takes `rows_per_block` consecutive rows, one at a time:
//                             a row of up to 2 chunks a thread stays in registers (x and the
//                             residual are read once); the weight is loaded once per block; the
//                             plain op loads the next row before reducing this one. Longer rows
//                             are read twice (the second read mostly hits L2).
//   {op}_{dtype}[_wf32]_rows  teams of g lanes (a power of two <= warp size) one row each,
//                             blockDim / g rows at a time, `rows_per_block` rows in all, reduced
//                             with shuffles only: small hidden (per-head q/k norm, 1..512 bf16).
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

NORM_DEV float norm_add(float x, float y) { return x + y; }
NORM_DEV double norm_add(double x, double y) { return x + y; }
NORM_DEV float norm_max(float x, float y) { return __builtin_fmaxf(x, y); }

// The threads that share one row, and how they combine partial results. Every reduction gives
// the same bits in every thread of the team.
// Block: every thread of the block (one row at a time), via shuffles and shared memory.
struct BlockTeam {
  int rank, size;
  float* red;   // [4][1024 / NORM_WARP] shared: 0, 1 row sums (alternating rows), 2, 3 rescue
  double* redd; // [2][1024 / NORM_WARP] shared: f64 row sums (alternating rows)
  // One barrier per reduction. A slot is written again only after every thread has passed a
  // later barrier (the next row's sum), hence after all its reads of this row: row sums
  // alternate between slots 0 and 1, and the rescue slots are used at most once per row.
  template <typename A, typename Op> NORM_DEV A reduce(A v, int slot, Op op) const {
#pragma unroll
    for (int m = NORM_WARP / 2; m >= 1; m >>= 1) v = op(v, norm_shfl_xor(v, m));
    const int nw = size / NORM_WARP;
    if (nw == 1) return v;
    A* r;
    if constexpr (same_type<A, double>::value) r = redd; else r = red;
    r += slot * (1024 / NORM_WARP);
    if ((rank & (NORM_WARP - 1)) == 0) r[rank / NORM_WARP] = v;
    norm_barrier();
    A s = r[0];
    for (int i = 1; i < nw; ++i) s = op(s, r[i]);
    return s;
  }
  template <typename A> NORM_DEV A sum(A v, int parity) const {
    return reduce(v, parity, [](A x, A y) { return norm_add(x, y); });
  }
  NORM_DEV float rescue_max(float v) const {
    return reduce(v, 2, [](float x, float y) { return norm_max(x, y); });
  }
  NORM_DEV float rescue_sum(float v) const {
    return reduce(v, 3, [](float x, float y) { return norm_add(x, y); });
  }
  // Whether any row the block is on needs the rescue: one row at a time, already uniform.
  NORM_DEV bool any(bool p) const { return p; }
};

// Team: G = size lanes of one warp (a power of two), reduced by butterfly shuffles. Every lane
// of the warp executes every shuffle, including lanes whose row is past the end.
struct GroupTeam {
  int rank, size;
  template <typename A, typename Op> NORM_DEV A reduce(A v, Op op) const {
    for (int m = size / 2; m >= 1; m >>= 1) v = op(v, norm_shfl_xor(v, m));
    return v;
  }
  template <typename A> NORM_DEV A sum(A v, int) const {
    return reduce(v, [](A x, A y) { return norm_add(x, y); });
  }
  NORM_DEV float rescue_max(float v) const {
    return reduce(v, [](float x, float y) { return norm_max(x, y); });
  }
  NORM_DEV float rescue_sum(float v) const {
    return reduce(v, [](float x, float y) { return norm_add(x, y); });
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

// Rows held in registers: K chunks per lane plus at most one tail element. The team handles the
// rows `first + it * step` for `it < iters` whose index within the block's share,
// `local0 + it * step`, is below `share` (so any team shape covers exactly the block's rows).
// The weight is loaded once for all of them. Without a residual the next row's loads are issued
// before this row's reduction (PREFETCH), so a block keeps two rows in flight; the fused op
// already has twice the bytes of a row in flight and keeps its registers for that.
template <typename T, typename W, int VEC, bool FUSED, int K, typename Team>
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

  WChunk<W, VEC> wc[K];
  WChunk<W, 1> wtc;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int c = team.rank + k * team.size;
    if (has_w && c < nvec) wc[k] = load_wchunk<W, VEC>(wp + (long long)c * VEC);
  }
  if (has_w && has_tail) wtc = load_wchunk<W, 1>(wp + tail0 + team.rank);

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

    A ss = 0;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int c = team.rank + k * team.size;
      if (c < nv) {
        A v[VEC];
        value(k, v);
        if constexpr (FUSED) store_chunk<T, VEC>(p.s + (long long)c * VEC, v);
#pragma unroll
        for (int i = 0; i < VEC; ++i) ss += v[i] * v[i];
      }
    }
    if (ht) {
      const A v = value_tail();
      if constexpr (FUSED) Tr<T>::put(p.s + tail0 + team.rank, v);
      ss += v * v;
    }
    ss = team.sum(ss, it & 1);
    // Unpack again after the reduction rather than holding VEC values per chunk across it, and
    // unpack the weight per row rather than holding it unpacked across rows: 4 registers per
    // 16-byte chunk instead of 8 to 16.
#pragma unroll
    for (int k = 0; k < K; ++k) {
      opaque_chunk<T, VEC>(xc[k]);
      if constexpr (FUSED) opaque_chunk<T, VEC>(rc[k]);
      if constexpr (VEC > 1) {
#pragma unroll
        for (int j = 0; j < (int)(sizeof(wc[k].raw) / 16); ++j)
#pragma unroll
          for (int i = 0; i < 4; ++i) norm_opaque(wc[k].raw[j].w[i]);
      }
    }

    auto write = [&](A scale) __attribute__((always_inline)) {
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const int c = team.rank + k * team.size;
        if (c < nv) {
          A v[VEC], w[VEC], y[VEC];
          value(k, v);
          unpack_wchunk<W, VEC, A>(wc[k], has_w, off1, w);
#pragma unroll
          for (int i = 0; i < VEC; ++i) {
            A n = v[i] * scale;
            if (rb) n = Tr<T>::round(n);
            y[i] = n * w[i];
          }
          store_chunk<T, VEC>(p.o + (long long)c * VEC, y);
        }
      }
      if (ht) {
        A w[1];
        unpack_wchunk<W, 1, A>(wtc, has_w, off1, w);
        A n = value_tail() * scale;
        if (rb) n = Tr<T>::round(n);
        Tr<T>::put(p.o + tail0 + team.rank, n * w[0]);
      }
    };

    if constexpr (same_type<A, double>::value) {
      write(norm_rsqrt(ss / (double)a.hidden + a.eps));
    } else {
      bool rescue;
      const float scale = f32_scale(ss, a.hidden, (float)a.eps, &rescue);
      rescue = rescue && valid;
      float sc = scale;
      if (team.any(rescue)) {
        float m = 0.0f, q = 0.0f;
#pragma unroll
        for (int k = 0; k < K; ++k) {
          const int c = team.rank + k * team.size;
          if (rescue && c < nv) {
            A v[VEC];
            value(k, v);
#pragma unroll
            for (int i = 0; i < VEC; ++i) m = norm_max(m, __builtin_fabsf(v[i]));
          }
        }
        if (rescue && ht) m = norm_max(m, __builtin_fabsf(value_tail()));
        m = team.rescue_max(m);
        const bool finite = m > 0.0f && m <= 3.4028234663852886e38f;
#pragma unroll
        for (int k = 0; k < K; ++k) {
          const int c = team.rank + k * team.size;
          if (rescue && finite && c < nv) {
            A v[VEC];
            value(k, v);
#pragma unroll
            for (int i = 0; i < VEC; ++i) {
              const float t = v[i] / m;
              q += t * t;
            }
          }
        }
        if (rescue && finite && ht) {
          const float t = value_tail() / m;
          q += t * t;
        }
        q = team.rescue_sum(q);
        if (rescue) sc = rescue_scale(m, q, a.hidden, (float)a.eps);
      }
      write(sc);
    }
    if (PREFETCH) {
#pragma unroll
      for (int k = 0; k < K; ++k) xc[k] = nx[k];
      xt = nxt;
    }
  }
}

// A row too long for registers: read once for the sum of squares, again for the output.
// On gfx9 the row pointers live in vector registers and the team shape is re-read per row
// (portable.h, NORM_GFX9): scalar-register relief; elsewhere both are no-ops.
template <typename T, typename W, int VEC, bool FUSED, typename Team>
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
  ss = team.sum(ss, parity);

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
    float sc = scale;
    if (team.any(rescue)) {
      const long long rn = rescue ? nvec : 0;
      const long long re = rescue ? end : 0;
      float m = 0.0f, q = 0.0f;
      for (long long c = team.rank; c < rn; c += team.size) {
        A v[VEC];
        input(c, v);
#pragma unroll
        for (int i = 0; i < VEC; ++i) m = norm_max(m, __builtin_fabsf(v[i]));
      }
      for (long long e = tail0 + team.rank; e < re; e += team.size)
        m = norm_max(m, __builtin_fabsf(input1(e)));
      m = team.rescue_max(m);
      if (m > 0.0f && m <= 3.4028234663852886e38f) {
        for (long long c = team.rank; c < rn; c += team.size) {
          A v[VEC];
          input(c, v);
#pragma unroll
          for (int i = 0; i < VEC; ++i) {
            const float t = v[i] / m;
            q += t * t;
          }
        }
        for (long long e = tail0 + team.rank; e < re; e += team.size) {
          const float t = input1(e) / m;
          q += t * t;
        }
      }
      q = team.rescue_sum(q);
      if (rescue) sc = rescue_scale(m, q, a.hidden, (float)a.eps);
    }
    write([&](float e) { return e * sc; });
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

// Chunks per lane in registers (1 or 2), or the two-read loop. The team covers the block's `share` rows
// `first + it * step` (see norm_regs).
template <typename T, typename W, int VEC, bool FUSED, typename Team>
NORM_DEV void dispatch_k(const NormArgs& a, long long first, int local0, int step, int share,
                         const Team& team) {
  const long long n = a.hidden / VEC;
  const long long k = (n + team.size - 1) / team.size;
  switch (k) {
  case 0:
  case 1: norm_regs<T, W, VEC, FUSED, 1>(a, first, local0, step, share, team); break;
  case 2: norm_regs<T, W, VEC, FUSED, 2>(a, first, local0, step, share, team); break;
  default:
#pragma unroll 1
    for (int it = 0; it < (share + step - 1) / step; ++it) {
      const long long row = first + (long long)it * step;
      norm_loop<T, W, VEC, FUSED>(a, row, local0 + it * step < share && row < a.rows, it & 1, team);
    }
    break;
  }
}

// One row at a time per block, `rows_per_block` consecutive rows (at least 1).
template <typename T, typename W, bool FUSED>
NORM_DEV void large_entry(const NormArgs& a) {
  __shared__ float red[4 * (1024 / NORM_WARP)];
  __shared__ double redd[2 * (1024 / NORM_WARP)];
  const int rpb = a.rows_per_block > 0 ? (int)a.rows_per_block : 1;
  const long long first = (long long)norm_bid() * rpb;
  if (first >= a.rows) return; // the whole block: no barrier is skipped by part of it
  const BlockTeam team{(int)norm_tid(), (int)norm_ntid(), red, redd};
  if (vector_ok<T, W, FUSED>(a)) {
    dispatch_k<T, W, Tr<T>::V, FUSED>(a, first, 0, 1, rpb, team);
  } else {
    dispatch_k<T, W, 1, FUSED>(a, first, 0, 1, rpb, team);
  }
}

// Teams of g lanes, one row each, blockDim / g rows at a time, `rows_per_block` rows in all.
// g = min(warp, next power of two >= ceil(chunks / 2)), as launch.rs computes it; coverage of
// the block's rows is exact for any g.
template <typename T, typename W, bool FUSED>
NORM_DEV void rows_entry(const NormArgs& a) {
  const int nt = (int)norm_ntid();
  const int rpb = a.rows_per_block > 0 ? (int)a.rows_per_block : 1;
  const int tid = (int)norm_tid();
  const bool vec = vector_ok<T, W, FUSED>(a);
  const long long n = vec ? a.hidden / Tr<T>::V : a.hidden;
  int g = 1;
  while (g < NORM_WARP && 2LL * g < n) g <<= 1;
  const int conc = nt / g;
  const long long base = (long long)norm_bid() * rpb;
  const int local0 = tid / g;
  const GroupTeam team{tid & (g - 1), g};
  if (vec) {
    dispatch_k<T, W, Tr<T>::V, FUSED>(a, base + local0, local0, conc, rpb, team);
  } else {
    dispatch_k<T, W, 1, FUSED>(a, base + local0, local0, conc, rpb, team);
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
