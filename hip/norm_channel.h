// Norms over a dimension other than the last (NormConfig::with_dim): the tensor seen as
// outer x channels x inner, normalised over the channels at each (outer, inner) position, read
// and written in place in that layout (no transposed copy).
//
// NormArgs for these kernels (src/gpu/call.rs packs them, src/gpu/channel_plan.rs decides the
// geometry): rows = outer indices, hidden = channels, x_stride / res_stride / out_stride /
// sum_stride = each operand's channel stride, *_outer its outer stride, x_inner / res_inner the
// inputs' position stride (the outputs' is 1). A block covers one outer index and P = L * VEC
// consecutive positions (a tile; block b takes outer index b / tiles, tile b % tiles): thread t
// is lane t % L along the positions (L = lanes_per_row, a power of two <= warp size; the lane
// takes one chunk of VEC positions) and group t / L of G = blockDim / L channel groups (group g
// takes channels g, g + G, ...). With K = chunks_per_lane > 0 (K * G >= channels) a thread keeps
// its channels' chunks in registers, so every input is read once; with K = 0 it reads them
// twice (the second read mostly from L2). The sums of squares of a position are combined across
// groups by shuffles inside a warp and through shared memory across warps, in a fixed order.
#pragma once

#include "row.h"

namespace rn {

// Bytes of the cross-warp reduction buffer; the host keeps warps x P x sizeof(A) within it
// (src/gpu/channel_plan.rs CHANNEL_RED_BYTES).
constexpr int CHANNEL_RED_BYTES = 8192;

// A block's tile: its threads' roles and their operand pointers at their first position.
template <typename T, typename W> struct Tile {
  Row<T, W> p;     // x, residual, out, sum at this lane's first position; the weight
  int lane, group; // along positions, along channels
  int groups, lanes, warps;
  bool valid; // this lane's positions exist
};

// The threads' roles in a block of lanes_per_row lanes along positions (the pointers unset).
template <typename T, typename W> NORM_DEV Tile<T, W> tile_roles(const NormArgs& a) {
  Tile<T, W> t;
  t.lanes = a.lanes_per_row > 0 ? (int)a.lanes_per_row : 1;
  const int tid = (int)norm_tid();
  t.lane = tid & (t.lanes - 1);
  t.group = tid / t.lanes;
  t.groups = (int)norm_ntid() / t.lanes;
  t.warps = (int)norm_ntid() / NORM_WARP;
  return t;
}

// Whether the operands allow the vector path the host chose (NORM_VECTOR; src/gpu/call.rs
// applies the same rule): 16-byte aligned bases, chunk-multiple strides and position counts,
// positions contiguous in the inputs. The weight is read a channel at a time.
template <typename T, bool FUSED> NORM_DEV bool channel_vector_holds(const NormArgs& a) {
  constexpr long long V = Tr<T>::V;
  norm_u64 addr = (norm_u64)a.x | (norm_u64)a.out;
  long long strides = a.x_stride | a.out_stride | a.x_outer | a.out_outer | a.inner;
  bool unit = a.x_inner == 1;
  if constexpr (FUSED) {
    addr |= (norm_u64)a.residual | (norm_u64)a.sum_out;
    strides |= a.res_stride | a.sum_stride | a.res_outer | a.sum_outer;
    unit = unit && a.res_inner == 1;
  }
  return (addr & 15u) == 0 && (strides % V) == 0 && unit;
}

// Combines v[0..VEC) of the threads of every group that share this lane's positions with `op`
// (the same bits in all of them): butterflies over the lane bits >= L inside a warp, then, with
// more than one warp, the warps' partials through `red` in warp order. Every thread of the
// block calls it.
template <int VEC, typename A, typename Op, typename T, typename W>
NORM_DEV void across_groups(A* v, const Tile<T, W>& t, A* red, Op op) {
#pragma unroll 1
  for (int m = t.lanes; m < NORM_WARP; m <<= 1) {
#pragma unroll
    for (int i = 0; i < VEC; ++i) v[i] = op(v[i], norm_shfl_xor(v[i], m));
  }
  if (t.warps == 1) return;
  const int P = t.lanes * VEC;
  const int tid = (int)norm_tid();
  norm_barrier(); // every read of an earlier reduction's partials is done
  if ((tid & (NORM_WARP - 1)) < t.lanes) {
#pragma unroll
    for (int i = 0; i < VEC; ++i) red[(tid / NORM_WARP) * P + t.lane * VEC + i] = v[i];
  }
  norm_barrier();
#pragma unroll
  for (int i = 0; i < VEC; ++i) {
    A s = red[t.lane * VEC + i];
#pragma unroll 1
    for (int w = 1; w < t.warps; ++w) s = op(s, red[w * P + t.lane * VEC + i]);
    v[i] = s;
  }
}

// Whether `p` holds in any thread of the block (every thread calls it): a butterfly inside
// each warp, then one word a warp in `flags` (no two threads write one word).
NORM_DEV bool block_any(bool p, int* flags) {
  int f = p ? 1 : 0;
#pragma unroll
  for (int m = NORM_WARP / 2; m >= 1; m >>= 1) f |= norm_shfl_xor_i(f, m);
  const int tid = (int)norm_tid(), warps = (int)norm_ntid() / NORM_WARP;
  if (warps == 1) return f != 0;
  norm_barrier(); // every read of an earlier answer is done
  if ((tid & (NORM_WARP - 1)) == 0) flags[tid / NORM_WARP] = f;
  norm_barrier();
  int any = 0;
  for (int w = 0; w < warps; ++w) any |= flags[w];
  return any != 0;
}

// One tile. K > 0: the thread's channel chunks held in registers (the host promised
// K * groups >= channels); K = 0: read twice.
template <typename T, typename W, int VEC, bool FUSED, int K>
NORM_DEV void channel_tile(const NormArgs& a, const Tile<T, W>& t, typename Tr<T>::A* red,
                           int* flag, bool rb, bool off1) {
  using A = typename Tr<T>::A;
  // On gfx9 (wave64) the strides and bounds live in vector registers (portable.h, NORM_GFX9):
  // held in scalar ones beside the lane masks of the unrolled channel loop, the fused kernels
  // spilled 13-113 scalar registers; elsewhere no-ops.
  long long C = a.hidden, vs = a.var_size;
  long long xs = a.x_stride, rs = a.res_stride, os = a.out_stride, sst = a.sum_stride;
  norm_to_lanes(C);
  norm_to_lanes(vs);
  norm_to_lanes(xs);
  norm_to_lanes(rs);
  norm_to_lanes(os);
  norm_to_lanes(sst);
  const Row<T, W>& p = t.p;
  const long long C_mine = t.valid ? C : 0;

  auto read = [&](long long c, A* v) __attribute__((always_inline)) {
    unpack_chunk<T, VEC>(load_chunk<T, VEC>(p.x + c * xs), v);
    if constexpr (FUSED) {
      A r[VEC];
      unpack_chunk<T, VEC>(load_chunk<T, VEC>(p.r + c * rs), r);
#pragma unroll
      for (int i = 0; i < VEC; ++i) v[i] += r[i];
    }
  };
  constexpr int KH = K > 0 ? K : 1;
  Chunk<T, VEC> xc[KH], rc[KH];
  if constexpr (K > 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const long long c = t.group + (long long)k * t.groups;
      if (c < C_mine) {
        xc[k] = load_chunk<T, VEC>(p.x + c * xs);
        if constexpr (FUSED) rc[k] = load_chunk<T, VEC>(p.r + c * rs);
      }
    }
  }
  // f(c, v) for each of this thread's channels c below `limit` (v: the VEC values at its
  // positions, x + residual for the fused op, formed the same way each time): from the held
  // chunks (K > 0) or read from memory (`each_read`, which the rescue uses).
  auto each_read = [&](long long limit, auto f) __attribute__((always_inline)) {
    long long lim = limit < C_mine ? limit : C_mine, step = t.groups;
    norm_to_lanes(lim);
    norm_to_lanes(step);
#pragma unroll 2
    for (long long c = t.group; c < lim; c += step) {
      A v[VEC];
      read(c, v);
      f(c, v);
    }
  };
  auto each = [&](long long limit, auto f) __attribute__((always_inline)) {
    const long long lim = limit < C_mine ? limit : C_mine;
    if constexpr (K > 0) {
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const long long c = t.group + (long long)k * t.groups;
        if (c < lim) {
          A v[VEC];
          unpack_chunk<T, VEC>(xc[k], v);
          if constexpr (FUSED) {
            A r[VEC];
            unpack_chunk<T, VEC>(rc[k], r);
#pragma unroll
            for (int i = 0; i < VEC; ++i) v[i] += r[i];
          }
          f(c, v);
        }
      }
    } else {
      each_read(limit, f);
    }
  };
  // The outputs of every channel of this thread, from `each_of`'s values and the scales.
  auto write = [&](auto each_of, const A* scale) __attribute__((always_inline)) {
    const W* __restrict__ wp = p.w;
    each_of(C, [&](long long c, const A* v) __attribute__((always_inline)) {
      if constexpr (FUSED) store_chunk<T, VEC>(p.s + c * sst, v);
      A w[1], y[VEC];
      load_weight<W, 1, A>(wp ? wp + c : nullptr, off1, w);
#pragma unroll
      for (int i = 0; i < VEC; ++i) y[i] = norm_y<T>(v[i], scale[i], w[0], rb);
      store_chunk<T, VEC>(p.o + c * os, y);
    });
  };

  A ss[VEC];
#pragma unroll
  for (int i = 0; i < VEC; ++i) ss[i] = 0;
  each(vs, [&](long long, const A* v) __attribute__((always_inline)) {
#pragma unroll
    for (int i = 0; i < VEC; ++i) ss[i] += v[i] * v[i];
  });
  across_groups<VEC>(ss, t, red, [](A x, A y) { return norm_add(x, y); });
  // Unpack the held chunks again for the outputs rather than keep their values unpacked across
  // the reduction (4 registers a 16-byte chunk instead of up to 16; as norm_regs.h does).
  if constexpr (K > 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      opaque_chunk<T, VEC>(xc[k]);
      if constexpr (FUSED) opaque_chunk<T, VEC>(rc[k]);
    }
  }

  const bool clamp = (a.flags & NORM_CLAMP_NORM) != 0;
  A scale[VEC];
  if constexpr (same_type<A, double>::value) {
#pragma unroll
    for (int i = 0; i < VEC; ++i)
      scale[i] = norm_rsqrt(under_root(ss[i] / (double)vs, a.eps, clamp));
  } else {
    unsigned rescued = 0; // bit i: position i needs the rescue
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      bool rescue;
      scale[i] = f32_scale(ss[i], vs, (float)a.eps, clamp, &rescue);
      if (rescue && t.valid) rescued |= 1u << i;
    }
    if (block_any(rescued != 0, flag)) {
      // The rescue of positions whose f32 sum of squares overflowed or whose mean fell below
      // 1e-30: their sum of squares again in f64 (no f32 square overflows or underflows there),
      // one position of the chunk after the other, from inputs read again (rare: no VEC-wide
      // partials are kept across it). An inf gives scale 0 (inf * 0 = NaN, the rest 0), as the f64 CPU
      // path does.
      double* red64 = (double*)red;
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        long long lim = vs < C_mine ? vs : C_mine, step = t.groups;
        norm_to_lanes(lim);
        norm_to_lanes(step);
        double q = 0.0;
        for (long long c = t.group; c < lim; c += step) {
          A v = Tr<T>::get(p.x + c * xs + i);
          if constexpr (FUSED) v += Tr<T>::get(p.r + c * rs + i);
          q += (double)v * (double)v;
        }
        across_groups<1>(&q, t, red64, [](double x, double y) { return norm_add(x, y); });
        const float s = (float)norm_rsqrt(under_root(q / (double)vs, a.eps, clamp));
        if (rescued >> i & 1u) scale[i] = s;
      }
    }
  }
  write(each, scale);
}

// The most channel chunks a thread holds in registers: 32 registers of raw inputs either way
// (ptxas sm_90: with 64, the 2-byte kernels spilled).
template <bool FUSED> constexpr int channel_hold() { return FUSED ? 4 : 8; }

template <typename T, typename W, int VEC, bool FUSED>
NORM_DEV void channel_vec(const NormArgs& a, void* red_bytes, int* flag) {
  using A = typename Tr<T>::A;
  Tile<T, W> t = tile_roles<T, W>(a);
  const long long P = (long long)t.lanes * VEC;
  const long long tiles = (a.inner + P - 1) / P;
  const long long o = (long long)norm_bid() / tiles;
  const long long p0 = ((long long)norm_bid() % tiles) * P + (long long)t.lane * VEC;
  t.valid = p0 < a.inner; // with VEC > 1, inner is whole chunks
  const long long q0 = t.valid ? p0 : 0;
  t.p.x = (const T*)a.x + o * a.x_outer + q0 * a.x_inner;
  t.p.o = (T*)a.out + o * a.out_outer + q0;
  if constexpr (FUSED) {
    t.p.r = (const T*)a.residual + o * a.res_outer + q0 * a.res_inner;
    t.p.s = (T*)a.sum_out + o * a.sum_outer + q0;
  } else {
    t.p.r = nullptr;
    t.p.s = nullptr;
  }
  t.p.w = (const W*)a.weight;
  A* red = (A*)red_bytes;
  constexpr int KM = channel_hold<FUSED>();
  const bool hold = a.chunks_per_lane > 0 && a.chunks_per_lane <= (unsigned)KM &&
                    (long long)a.chunks_per_lane * t.groups >= a.hidden;
  // The option flags stay run-time values here (uniform branches): compiled once per pair as
  // the row kernels do (with_flags), these kernels made the shipped code objects twice as big.
  const bool rb = (a.flags & NORM_ROUND_BEFORE_WEIGHT) != 0;
  const bool off1 = (a.flags & NORM_OFFSET_ONE) != 0;
  if (hold) channel_tile<T, W, VEC, FUSED, KM>(a, t, red, flag, rb, off1);
  else channel_tile<T, W, VEC, FUSED, 0>(a, t, red, flag, rb, off1);
}

// The kernel body: a block past the last outer index returns as a whole.
template <typename T, typename W, bool FUSED>
NORM_DEV void channel_entry(const NormArgs& a) {
  __shared__ __attribute__((aligned(16))) char red[CHANNEL_RED_BYTES];
  __shared__ int flag[1024 / NORM_WARP];
  const int lanes = a.lanes_per_row > 0 ? (int)a.lanes_per_row : 1;
  // The tiles follow the host's choice; a vector promise the operands break is the host's bug
  // (it would fault or miss positions): fail it loudly.
  const bool vec = (a.flags & NORM_VECTOR) != 0;
  if (vec && !channel_vector_holds<T, FUSED>(a)) __builtin_trap();
  const long long P = (long long)lanes * (vec ? Tr<T>::V : 1);
  if ((long long)norm_bid() / ((a.inner + P - 1) / P) >= a.rows) return;
  if (vec) channel_vec<T, W, Tr<T>::V, FUSED>(a, red, flag);
  else channel_vec<T, W, 1, FUSED>(a, red, flag);
}

} // namespace rn
