// The channel kernels' staged form (NVIDIA sm_80+, NORM_ASYNC): as hip/norm_channel.h, but a
// block takes rows_per_block consecutive tiles in turn, each tile's chunks copied into shared
// memory asynchronously, the next tile's copies issued before this tile is reduced and written,
// so that a multiprocessor always has copies in flight (the register kernel's blocks load,
// reduce and write in turn, and measured 11% of a copy on the H200).
#pragma once

#include "norm_channel.h"

namespace rn {

#if NORM_ASYNC
// Tiles `first .. first + count` of the launch (tile t: outer index t / tiles, positions
// (t % tiles) * P ..), with S = 2 tile buffers of [IN][C][L] chunks in dynamic shared memory.
// Thread (lane l, group g) copies, reads and writes only its own chunks (channels g, g + G, ...
// at chunk l of the tile), so its reads need only its own wait; the barriers are the
// reductions'. Every thread runs every iteration and commits a group each time (empty past the
// tiles or the positions), so the group counts stay uniform. The host guarantees the vector
// layout and S * IN * C * L * 16 bytes of dynamic shared memory (src/gpu/channel_plan.rs).
template <typename T, typename W, bool FUSED>
NORM_DEV void channel_staged(const NormArgs& a, void* red_bytes, int* flag) {
  using A = typename Tr<T>::A;
  constexpr int VEC = Tr<T>::V;
  constexpr int IN = FUSED ? 2 : 1;
  constexpr int S = 2;
  const Tile<T, W> t = tile_roles<T, W>(a);
  const long long C = a.hidden, vs = a.var_size, L = t.lanes;
  const long long P = L * VEC;
  const long long tiles = (a.inner + P - 1) / P;
  const long long total = a.rows * tiles;
  const long long tpb = a.rows_per_block > 0 ? a.rows_per_block : 1;
  const long long first = (long long)norm_bid() * tpb;
  const int count = (int)(total - first < tpb ? total - first : tpb);
  Chunk<T, VEC>* buf = (Chunk<T, VEC>*)norm_dyn_smem(); // [S][IN][C][L]
  auto slot = [&](int i, int which, long long c) __attribute__((always_inline)) {
    return buf + (((long long)(i % S) * IN + which) * C + c) * L + t.lane;
  };
  // This thread's first position in tile i, or -1 past the tiles or the positions.
  auto pos = [&](int i) __attribute__((always_inline)) {
    const long long tl = first + i;
    if (i >= count) return -1LL;
    const long long p = (tl % tiles) * P + (long long)t.lane * VEC;
    return p < a.inner ? p : -1LL;
  };
  auto outer = [&](int i) __attribute__((always_inline)) { return (first + i) / tiles; };
  auto issue = [&](int i) __attribute__((always_inline)) {
    const long long p = pos(i);
    if (p >= 0) {
      const long long o = outer(i);
      const T* x = (const T*)a.x + o * a.x_outer + p;
      const T* r = FUSED ? (const T*)a.residual + o * a.res_outer + p : nullptr;
      for (long long c = t.group; c < C; c += t.groups) {
        norm_async_copy16(slot(i, 0, c), x + c * a.x_stride);
        if constexpr (FUSED) norm_async_copy16(slot(i, 1, c), r + c * a.res_stride);
      }
    }
    norm_async_commit();
  };
  const bool rb = (a.flags & NORM_ROUND_BEFORE_WEIGHT) != 0;
  const bool off1 = (a.flags & NORM_OFFSET_ONE) != 0;
  const bool clamp = (a.flags & NORM_CLAMP_NORM) != 0;
  A* red = (A*)red_bytes;

  issue(0);
#pragma unroll 1
  for (int i = 0; i < count; ++i) {
    issue(i + 1);
    norm_async_wait<S - 1>();
    const long long p = pos(i);
    const bool valid = p >= 0;
    const long long C_mine = valid ? C : 0;
    // x (+ residual) of channel c at this thread's positions: the same bits each time.
    auto value = [&](long long c, A* v) __attribute__((always_inline)) {
      unpack_chunk<T, VEC>(*slot(i, 0, c), v);
      if constexpr (FUSED) {
        A r[VEC];
        unpack_chunk<T, VEC>(*slot(i, 1, c), r);
#pragma unroll
        for (int e = 0; e < VEC; ++e) v[e] += r[e];
      }
    };
    A ss[VEC];
#pragma unroll
    for (int e = 0; e < VEC; ++e) ss[e] = 0;
    const long long lim = vs < C_mine ? vs : C_mine;
    for (long long c = t.group; c < lim; c += t.groups) {
      A v[VEC];
      value(c, v);
#pragma unroll
      for (int e = 0; e < VEC; ++e) ss[e] += v[e] * v[e];
    }
    across_groups<VEC>(ss, t, red, [](A x, A y) { return norm_add(x, y); });
    A scale[VEC];
    if constexpr (same_type<A, double>::value) {
#pragma unroll
      for (int e = 0; e < VEC; ++e)
        scale[e] = norm_rsqrt(under_root(ss[e] / (double)vs, a.eps, clamp));
    } else {
      unsigned rescued = 0;
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        bool rescue;
        scale[e] = f32_scale(ss[e], vs, (float)a.eps, clamp, &rescue);
        if (rescue && valid) rescued |= 1u << e;
      }
      if (block_any(rescued != 0, flag)) {
        // As in channel_tile: the f64 sum of squares again, position after position.
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          double q = 0.0;
          for (long long c = t.group; c < lim; c += t.groups) {
            A v[VEC];
            value(c, v);
            q += (double)v[e] * (double)v[e];
          }
          across_groups<1>(&q, t, (double*)red_bytes,
                           [](double x, double y) { return norm_add(x, y); });
          const float s = (float)norm_rsqrt(under_root(q / (double)vs, a.eps, clamp));
          if (rescued >> e & 1u) scale[e] = s;
        }
      }
    }
    if (valid) {
      const long long o = outer(i);
      T* out = (T*)a.out + o * a.out_outer + p;
      T* sum = FUSED ? (T*)a.sum_out + o * a.sum_outer + p : nullptr;
      const W* __restrict__ wp = (const W*)a.weight;
      for (long long c = t.group; c < C; c += t.groups) {
        A v[VEC], w[1], y[VEC];
        value(c, v);
        if constexpr (FUSED) store_chunk<T, VEC>(sum + c * a.sum_stride, v);
        load_weight<W, 1, A>(wp ? wp + c : nullptr, off1, w);
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          A n = v[e] * scale[e];
          if (rb) n = Tr<T>::round(n);
          y[e] = n * w[0];
        }
        store_chunk<T, VEC>(out + c * a.out_stride, y);
      }
    }
  }
  norm_async_wait<0>(); // nothing left in flight when the block ends
}

// The staged kernel body: the layout the copies need (NORM_VECTOR holding) and S = 2, or the
// host's bug: trap.
template <typename T, typename W, bool FUSED>
NORM_DEV void channel_staged_entry(const NormArgs& a) {
  __shared__ __attribute__((aligned(16))) char red[CHANNEL_RED_BYTES];
  __shared__ int flag[1024 / NORM_WARP];
  if (!(a.flags & NORM_VECTOR) || !channel_vector_holds<T, FUSED>(a)) __builtin_trap();
  if (((a.flags >> NORM_STAGES_SHIFT) & NORM_STAGES_MASK) != 2) __builtin_trap();
  channel_staged<T, W, FUSED>(a, red, flag);
}
#endif

} // namespace rn
