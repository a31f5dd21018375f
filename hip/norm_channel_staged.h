// The channel kernels' staged form (NVIDIA sm_80+, NORM_ASYNC): one tile a block, as in
// hip/norm_channel.h (an outer index, P = L * VEC consecutive positions), copied whole into shared
// memory asynchronously, then reduced and written from there. A block holds no registers for
// its inputs and few for anything else (64 a thread, NORM_LAUNCH_BOUNDS_STAGED), so several
// blocks share a multiprocessor and their copies overlap the others' arithmetic.
//
// Measured on the H200 (2026-12-04, a lab kernel of this shape beside the earlier one: two tile
// buffers a block taking many tiles in turn, about 100 registers, two blocks a
// multiprocessor): [384, 131040] bf16 84.5% of a copy against 59.7%.
#pragma once

#include "norm_channel.h"

namespace rn {

#if NORM_ASYNC
// Threads of a staged channel block (src/gpu/channel_plan.rs CHANNEL_STAGED_BLOCK).
constexpr int CHANNEL_STAGED_BLOCK = 256;

// A block's tile in shared memory: [IN][C][L] chunks of 16 bytes, then the C weights in the
// compute type with the weight mode applied (ones without a weight).
template <typename T, bool FUSED> struct StagedTile {
  using A = typename Tr<T>::A;
  static constexpr int VEC = Tr<T>::V;
  const Chunk<T, VEC>* buf;
  const A* w;
  int C, L;
  // x (+ residual) of channel c at chunk l: the same bits each time.
  NORM_DEV void value(int c, int l, A* v) const {
    unpack_chunk<T, VEC>(buf[c * L + l], v);
    if constexpr (FUSED) {
      A r[VEC];
      unpack_chunk<T, VEC>(buf[C * L + c * L + l], r);
#pragma unroll
      for (int e = 0; e < VEC; ++e) v[e] += r[e];
    }
  }
};

// The outputs of this thread's channels (group g, g + G, ... at chunk `lane`) from the tile and
// the scales of its positions; RB: rounded to T before the weight.
template <typename T, bool FUSED, bool RB>
NORM_DEV void staged_write(const NormArgs& a, const StagedTile<T, FUSED>& s, int lane, int group,
                           int groups, long long o, long long pos,
                           const typename Tr<T>::A* scale) {
  using A = typename Tr<T>::A;
  constexpr int VEC = Tr<T>::V;
  T* out = (T*)a.out + o * a.out_outer + pos + group * a.out_stride;
  T* sum = FUSED ? (T*)a.sum_out + o * a.sum_outer + pos + group * a.sum_stride : nullptr;
  const long long out_step = groups * a.out_stride, sum_step = groups * a.sum_stride;
#pragma unroll 2
  for (int c = group; c < s.C; c += groups) {
    A v[VEC], y[VEC];
    s.value(c, lane, v);
    if constexpr (FUSED) {
      store_chunk<T, VEC>(sum, v);
      sum += sum_step;
    }
    const A w = s.w[c];
#pragma unroll
    for (int e = 0; e < VEC; ++e) y[e] = norm_y<T>(v[e], scale[e], w, RB);
    store_chunk<T, VEC>(out, y);
    out += out_step;
  }
}

// The tile of block b (outer index b / tiles, positions (b % tiles) * P ..) in dynamic shared
// memory (StagedTile). Copies: chunk j of the tile (channel j / L, lane j % L) by thread
// j % blockDim. Arithmetic: thread (lane l, group g) takes chunk l of channels g, g + G, ...; a
// position's sum of squares is its group's partials in channel order, combined across the groups
// of a warp by butterflies and across warps in warp order; the threads below P take one position
// each for the scale. The host guarantees the vector layout and IN * C * L * 16 + C * sizeof(A)
// bytes of dynamic shared memory (src/gpu/channel_plan.rs).
template <typename T, typename W, bool FUSED>
NORM_DEV void channel_staged(const NormArgs& a) {
  using A = typename Tr<T>::A;
  constexpr int VEC = Tr<T>::V;
  constexpr int WARPS = CHANNEL_STAGED_BLOCK / NORM_WARP;
  // Partials of the warps, and the scales, of at most 16 lanes of VEC positions.
  __shared__ A red[WARPS * 16 * VEC];
  __shared__ A scales[16 * VEC];
  const Tile<T, W> t = tile_roles<T, W>(a);
  const int C = (int)a.hidden, L = t.lanes;
  const int P = L * VEC;
  const long long tiles = (a.inner + P - 1) / P;
  const long long o = (long long)norm_bid() / tiles;
  const long long p0 = ((long long)norm_bid() % tiles) * P;
  const int tid = (int)norm_tid();
  Chunk<T, VEC>* buf = (Chunk<T, VEC>*)norm_dyn_smem();
  A* ws = (A*)(buf + (FUSED ? 2 : 1) * C * L);
  {
    const T* x = (const T*)a.x + o * a.x_outer + p0;
    const T* r = FUSED ? (const T*)a.residual + o * a.res_outer + p0 : nullptr;
    const int shift = __builtin_ctz((unsigned)L);
    for (int j = tid; j < C * L; j += CHANNEL_STAGED_BLOCK) {
      const int c = j >> shift, l = j & (L - 1);
      if (p0 + (long long)l * VEC < a.inner) {
        norm_async_copy16(buf + j, x + c * a.x_stride + l * VEC);
        if constexpr (FUSED) norm_async_copy16(buf + C * L + j, r + c * a.res_stride + l * VEC);
      }
    }
    norm_async_commit();
    const W* wp = (const W*)a.weight;
    const bool off1 = (a.flags & NORM_OFFSET_ONE) != 0;
    for (int c = tid; c < C; c += CHANNEL_STAGED_BLOCK)
      load_weight<W, 1, A>(wp ? wp + c : nullptr, off1, ws + c);
    norm_async_wait<0>();
  }
  norm_barrier();
  const StagedTile<T, FUSED> s{buf, ws, C, L};
  const int vs = (int)(a.var_size < a.hidden ? a.var_size : a.hidden);
  A ss[VEC];
#pragma unroll
  for (int e = 0; e < VEC; ++e) ss[e] = 0;
#pragma unroll 4
  for (int c = t.group; c < vs; c += t.groups) {
    A v[VEC];
    s.value(c, t.lane, v);
#pragma unroll
    for (int e = 0; e < VEC; ++e) ss[e] += v[e] * v[e];
  }
#pragma unroll 1
  for (int m = L; m < NORM_WARP; m <<= 1) {
#pragma unroll
    for (int e = 0; e < VEC; ++e) ss[e] = norm_add(ss[e], norm_shfl_xor(ss[e], m));
  }
  if ((tid & (NORM_WARP - 1)) < L) {
#pragma unroll
    for (int e = 0; e < VEC; ++e) red[(tid / NORM_WARP) * P + t.lane * VEC + e] = ss[e];
  }
  norm_barrier();
  const bool clamp = (a.flags & NORM_CLAMP_NORM) != 0;
  if (tid < P) {
    A sq = red[tid];
#pragma unroll
    for (int w = 1; w < WARPS; ++w) sq = norm_add(sq, red[w * P + tid]);
    if constexpr (same_type<A, double>::value) {
      scales[tid] = norm_rsqrt(under_root(sq / (double)a.var_size, a.eps, clamp));
    } else {
      bool rescue;
      A scale = f32_scale(sq, a.var_size, (float)a.eps, clamp, &rescue);
      if (rescue && p0 + tid < a.inner) {
        // The sum of squares overflowed f32 or its mean fell below 1e-30: again in f64, from
        // the tile (no f32 square overflows or underflows there); an inf gives scale 0, as
        // the f64 CPU path does.
        double q = 0.0;
        for (int c = 0; c < vs; ++c) {
          A v[VEC];
          s.value(c, tid / VEC, v);
#pragma unroll
          for (int e = 0; e < VEC; ++e)
            if (e == tid % VEC) q += (double)v[e] * (double)v[e];
        }
        scale = (float)norm_rsqrt(under_root(q / (double)a.var_size, a.eps, clamp));
      }
      scales[tid] = scale;
    }
  }
  norm_barrier();
  const long long pos = p0 + (long long)t.lane * VEC;
  if (pos >= a.inner) return; // no barrier follows
  A scale[VEC];
#pragma unroll
  for (int e = 0; e < VEC; ++e) scale[e] = scales[t.lane * VEC + e];
  if (a.flags & NORM_ROUND_BEFORE_WEIGHT)
    staged_write<T, FUSED, true>(a, s, t.lane, t.group, t.groups, o, pos, scale);
  else
    staged_write<T, FUSED, false>(a, s, t.lane, t.group, t.groups, o, pos, scale);
}

// The staged kernel body: the layout the copies need (NORM_VECTOR holding), the block size and
// one tile buffer, or the host's bug: trap.
template <typename T, typename W, bool FUSED>
NORM_DEV void channel_staged_entry(const NormArgs& a) {
  if (!(a.flags & NORM_VECTOR) || !channel_vector_holds<T, FUSED>(a)) __builtin_trap();
  if (((a.flags >> NORM_STAGES_SHIFT) & NORM_STAGES_MASK) != 1) __builtin_trap();
  if (norm_ntid() != CHANNEL_STAGED_BLOCK || a.lanes_per_row > 16) __builtin_trap();
  const long long P = (long long)a.lanes_per_row * Tr<T>::V;
  if ((long long)norm_bid() / ((a.inner + P - 1) / P) >= a.rows) return;
  channel_staged<T, W, FUSED>(a);
}
#endif

} // namespace rn
