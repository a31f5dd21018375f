// q/k RMSNorm + rotary embedding, written straight into the attention layout
// (rms_norm_rope_{dtype}; the host side is src/gpu/rope_plan.rs and crate::rope_op).
//
// A row is one position (t, b, l) of q or k: heads * D values. Its values are read once into
// registers as units: a unit is the two chunks a rotation pairs (VEC values at offset o of a
// head and VEC at o + D/2: with rope, pair i of the chunks' values; with rope_i and chunks,
// the pairs (2i, 2i + 1) inside each chunk; with rope_i and single values, two adjacent values).
// A team of lanes_per_head lanes (a power of two within a warp) takes heads team, team + teams,
// ... of the row, each lane units lane, lane + lanes_per_head, ... of each; a thread holds at
// most RopeSlots units. A block takes rows_per_block rows side by side; a thread loads its
// values, weights' addresses aside, and its position's cos/sin before the norm's reduction, so
// that one wait covers both. The norm's sum of squares is reduced across the team by shuffles
// (a norm per head), or, for a norm over the row, across the block's warps through shared
// memory (one row a block). Each value is then normalised (an f32 norm that overflows or
// underflows redone with an f64 sum), multiplied by the weight (in the compute type; with
// weights of T, a pair of rounded values times a pair of weights in one packed multiply where
// the target has it: the same bits), rounded to T as the unfused path stores it, rotated in
// the compute type with that position's cos/sin, rounded once and stored at its place in the
// output layout.
#pragma once

#include "row.h"
#include "team.h"
#include "rope_args.h"

namespace rn {

// Units a thread holds: 2 for 16-byte chunks (64 bytes of bf16), 8 for single values.
template <int VEC> struct RopeSlots {
  static constexpr int value = VEC == 1 ? 8 : 2;
};

// A norm over the whole row (one row a block): shuffles across each warp (padding lanes hold
// zeros), then the warps' sums through shared memory in warp order (the same bits in every
// thread). The f32 sum and the f64 rescue's sum have a slot each.
constexpr int ROPE_MAX_WARPS = 1024 / NORM_WARP;
struct RowTeams {
  int tid, warps;
  float* red;   // [ROPE_MAX_WARPS], 16-byte aligned
  double* redd; // [ROPE_MAX_WARPS]
  template <typename A, typename Op> NORM_DEV A reduce(A v, Op op) const {
#pragma unroll
    for (int m = NORM_WARP / 2; m >= 1; m >>= 1) v = op(v, norm_shfl_xor(v, m));
    if (warps == 1) return v;
    A* r;
    if constexpr (same_type<A, double>::value) r = redd; else r = red;
    if ((tid & (NORM_WARP - 1)) == 0) r[tid / NORM_WARP] = v;
    norm_barrier();
    return fold_partials(r, warps, op);
  }
  template <typename A> NORM_DEV A sum(A v, int) const {
    return reduce(v, [](A x, A y) { return norm_add(x, y); });
  }
  // One row a block: every thread's flag is its row's, already uniform.
  NORM_DEV bool any(bool p) const { return p; }
};

// The scale of a norm of `n` elements with team-reduced sum of squares `ss` (under_root and
// f32_scale of row.h: the row kernels' arithmetic). An f32 norm whose sum overflowed or whose
// mean + eps fell below 1e-30 is redone with an f64 sum of this lane's values (`each_value(f)`
// calls f once per value), reduced across the team: rare, so one f64 reduction costs less code
// (and fewer AMD scalar registers) than the row kernels' max-then-sum rescue.
template <typename A, typename Team, typename Each>
NORM_DEV A rope_scale(A ss, long long n, double eps, bool clamp, bool valid, const Team& team,
                      Each each_value) {
  if constexpr (same_type<A, double>::value) {
    return norm_rsqrt(under_root(ss / (double)n, eps, clamp));
  } else {
    bool rescue;
    const float scale = f32_scale(ss, n, (float)eps, clamp, &rescue);
    rescue = rescue && valid;
    if (!team.any(rescue)) return scale;
    double q = 0.0;
    if (rescue) each_value([&](float v) __attribute__((always_inline)) { q += (double)v * v; });
    q = team.sum(q, 0);
    return rescue ? (float)norm_rsqrt(under_root(q / (double)n, eps, clamp)) : scale;
  }
}

// Whether the operands allow what ROPE_VECTOR promises (the host's rule, src/gpu/rope_plan.rs):
// 16-byte aligned bases, strides in whole chunks, whole units a head. A broken promise takes the
// single-value path rather than faulting.
template <typename T> NORM_DEV bool rope_vector_holds(const RopeArgs& a) {
  constexpr long long V = Tr<T>::V;
  norm_u64 addr = (norm_u64)a.out | (norm_u64)a.cos | (norm_u64)a.sin | (norm_u64)a.x[0] |
                  (norm_u64)a.w[0];
  long long strides = a.out_t | a.out_b | a.out_l | a.out_h | a.x_b[0] | a.x_l[0];
  if (a.tensors == 2) {
    addr |= (norm_u64)a.x[1] | (norm_u64)a.w[1];
    strides |= a.x_b[1] | a.x_l[1];
  }
  return (a.flags & ROPE_VECTOR) && (addr & 15u) == 0 && strides % V == 0 &&
         a.head_dim % (2 * V) == 0;
}

// p, promised to the compiler to be aligned to BYTES (the host's plan guarantees it: aligned
// bases, strides and offsets in whole chunks).
template <int BYTES, typename P> NORM_DEV P* aligned(P* p) {
  return (P*)__builtin_assume_aligned(p, BYTES);
}

// N consecutive values of the compute type A at p (cos or sin), aligned to their size when
// that is 16 or 8 bytes, read as one vector of words (read as a struct or as floats, they were
// split into single loads); else one by one.
template <typename A, int N> NORM_DEV void load_angles(const A* __restrict__ p, A* v) {
  constexpr int BYTES = N * (int)sizeof(A);
  if constexpr (BYTES == 16 || BYTES == 8) {
    typedef norm_u32 Vec __attribute__((vector_size(BYTES)));
    struct Vals { A x[N]; };
    const Vals u = __builtin_bit_cast(Vals, *reinterpret_cast<const Vec*>(aligned<BYTES>(p)));
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] = u.x[i];
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] = p[i];
  }
}

// N angles from index i of table p (cos or sin) in the compute type A: a table of A, or with
// `tt` (ROPE_TABLES_IN_T, 16-bit T only) of T, widened (exactly), read as one vector of half
// the bytes.
template <typename T, typename A, int N>
NORM_DEV void load_angles_of(const void* __restrict__ p, long long i, bool tt, A* v) {
  if constexpr (sizeof(T) == 2) {
    if (tt) {
      T t[N];
      load_angles<T, N>((const T*)p + i, t);
#pragma unroll
      for (int j = 0; j < N; ++j) v[j] = Tr<T>::get(&t[j]);
      return;
    }
  }
  load_angles<A, N>((const A*)p + i, v);
}

// A chunk of VEC values of T at p, one 16-byte store of a vector of words (stored as a struct,
// its words were split into 8- and 4-byte stores).
template <typename T, int VEC, typename A> NORM_DEV void store_unit(T* __restrict__ p, const A* v) {
  if constexpr (VEC == 1) {
    store_chunk<T, 1>(p, v);
  } else {
    typedef norm_u32 Words __attribute__((vector_size(16)));
    const v16 c = Tr<T>::pack(v);
    const Words w = {c.w[0], c.w[1], c.w[2], c.w[3]};
    *reinterpret_cast<Words*>(aligned<16>(p)) = w;
  }
}

// A unit's 2*VEC values rotated in place with angles c, sv: the pairs (i, i + VEC) with angle i
// (rope), or the pairs (2i, 2i + 1) with angle i (rope_i: with chunks, the first chunk's pairs
// take angles 0..VEC/2-1 and the second's VEC/2..VEC-1; with single values the unit's one pair).
template <typename A, int VEC, bool SPLIT>
NORM_DEV void rotate(A* v, const A* c, const A* sv) {
  A o[2 * VEC];
  if constexpr (SPLIT) {
#pragma unroll
    for (int p = 0; p < VEC; ++p) {
      o[p] = v[p] * c[p] - v[p + VEC] * sv[p];
      o[p + VEC] = v[p] * sv[p] + v[p + VEC] * c[p];
    }
  } else {
#pragma unroll
    for (int p = 0; p < VEC; ++p) {
      o[2 * p] = v[2 * p] * c[p] - v[2 * p + 1] * sv[p];
      o[2 * p + 1] = v[2 * p] * sv[p] + v[2 * p + 1] * c[p];
    }
  }
#pragma unroll
  for (int i = 0; i < 2 * VEC; ++i) v[i] = o[i];
}

// WT: the weights are of T (bf16/f16 input, the rounding before the weight, plain weights: the
// host's rule, src/rope_op.rs); else of the compute type A (the host converts them).
template <typename T, int VEC, int UPL, bool WT>
NORM_DEV void rope_rows(const RopeArgs& a, float* red, double* redd) {
  using A = typename Tr<T>::A;
  using W = typename pick_type<WT, T, A>::type;
  constexpr int S = RopeSlots<VEC>::value;
  const bool per_head = (a.flags & ROPE_PER_HEAD) != 0;
  const bool half = (a.flags & ROPE_HALF_SPLIT) != 0;
  const bool rb = (a.flags & ROPE_ROUND_BEFORE_WEIGHT) != 0;
  const bool off1 = (a.flags & ROPE_OFFSET_ONE) != 0;
  const bool clamp = (a.flags & ROPE_CLAMP_NORM) != 0;
  // Chunks pair a unit's two halves of a head for either style (rope_i's pairs lie inside each
  // chunk); single values pair (i, i + D/2) or, for rope_i, two adjacent values.
  const bool far = VEC > 1 || half;
  int lph = (int)a.lanes_per_head, teams = (int)a.teams;
  constexpr int upl = UPL, HPT = S / UPL;
  int heads = (int)a.heads, d = (int)a.head_dim;
  long long out_h = a.out_h;
  // Uniform sizes kept in per-lane registers on AMD (its scalar registers overflowed).
  norm_to_lanes(lph);
  norm_to_lanes(teams);
  norm_to_lanes(heads);
  norm_to_lanes(d);
  norm_to_lanes(out_h);
  const int uph = d / (2 * VEC);
  const int hpt = (heads + teams - 1) / teams; // <= HPT (the host's rule)
  const int tid = (int)norm_tid();
  // lanes_per_head is a power of two: the lane and the team's rank by mask and shift.
  const int lane = tid & (lph - 1), q = tid >> __builtin_ctz((unsigned)lph);
  // One row a block (every norm over the row) needs no division.
  const int local = a.rows_per_block == 1 ? 0 : q / teams, team = q - local * teams;
  // Block i takes rows of tensor i % tensors (tensors is 1 or 2): q's and k's blocks of a
  // position side by side, sharing its cos/sin; t is uniform across the block. No 64-bit
  // division for one batch (the divisions were about a tenth of a thread's instructions by the
  // SASS at Wan 14B; without them the kernel took 13% less time on the H200).
  const int t = (int)(norm_bid() & (a.tensors - 1));
  const long long plane = a.batch * a.seq;
  const long long bl = (long long)(norm_bid() >> (a.tensors - 1)) * a.rows_per_block + local;
  const bool valid = local < (int)a.rows_per_block && bl < plane;
  const bool one = a.batch == 1;
  const long long b = !valid || one ? 0 : bl / a.seq, l = !valid ? 0 : one ? bl : bl % a.seq;
  // Tensor t's operands by arithmetic, neither indexed nor selected: ptxas turned both into a
  // copy of the argument's arrays on the stack.
  auto pick = [&](norm_u64 v0, norm_u64 v1) __attribute__((always_inline)) {
    return v0 + (norm_u64)t * (v1 - v0);
  };
  const long long xb = (long long)pick((norm_u64)a.x_b[0], (norm_u64)a.x_b[1]);
  const long long xl = (long long)pick((norm_u64)a.x_l[0], (norm_u64)a.x_l[1]);
  const T* __restrict__ x = (const T*)pick((norm_u64)a.x[0], (norm_u64)a.x[1]) + b * xb + l * xl;
  const W* __restrict__ w = (const W*)pick((norm_u64)a.w[0], (norm_u64)a.w[1]);
  T* __restrict__ out = (T*)a.out + t * a.out_t + b * a.out_b + l * a.out_l;
  // This position's table rows start at element l * (d / 2), of A or (tt) of T.
  const bool tt = (a.flags & ROPE_TABLES_IN_T) != 0;
  const long long t0 = l * (d / 2);

  // Slot s: head team + (s / upl) * teams, unit lane + (s % upl) * lph of it; its two chunks
  // start at e0 and e1 of the row.
  auto head_of = [&](int s) __attribute__((always_inline)) { return team + s / upl * teams; };
  auto unit_of = [&](int s) __attribute__((always_inline)) { return lane + s % upl * lph; };
  auto held = [&](int s) __attribute__((always_inline)) {
    return valid && team < teams && head_of(s) < heads && unit_of(s) < uph;
  };
  auto starts = [&](int s, int* e0, int* e1) __attribute__((always_inline)) {
    const int h = head_of(s), u = unit_of(s);
    *e0 = h * d + (far ? u * VEC : 2 * u);
    *e1 = *e0 + (far ? d / 2 : 1);
  };

  Chunk<T, VEC> c0[S], c1[S];
#pragma unroll
  for (int s = 0; s < S; ++s) {
    if (held(s)) {
      int e0, e1;
      starts(s, &e0, &e1);
      c0[s] = load_chunk<T, VEC>(aligned<VEC * sizeof(T)>(x + e0));
      c1[s] = load_chunk<T, VEC>(aligned<VEC * sizeof(T)>(x + e1));
    }
  }
  // This position's angles for each unit of the thread (the same unit in each of its heads
  // with chunks), loaded with the values so that the reduction's wait covers them.
  constexpr int U = VEC > 1 ? 1 : UPL;
  A c[U][VEC], sv[U][VEC];
#pragma unroll
  for (int k = 0; k < U; ++k) {
    const int u = lane + k * lph;
    if (valid && u < uph) {
      if constexpr (VEC > 1) {
        // Two halves of VEC / 2 angles: consecutive (rope), or for the unit's chunk in each
        // half of the head (rope_i), one branch-free path for both.
        const int a0 = half ? u * VEC : u * (VEC / 2);
        const int a1 = half ? a0 + VEC / 2 : d / 4 + a0;
        load_angles_of<T, A, VEC / 2>(a.cos, t0 + a0, tt, c[k]);
        load_angles_of<T, A, VEC / 2>(a.cos, t0 + a1, tt, c[k] + VEC / 2);
        load_angles_of<T, A, VEC / 2>(a.sin, t0 + a0, tt, sv[k]);
        load_angles_of<T, A, VEC / 2>(a.sin, t0 + a1, tt, sv[k] + VEC / 2);
      } else {
        load_angles_of<T, A, 1>(a.cos, t0 + u, tt, c[k]);
        load_angles_of<T, A, 1>(a.sin, t0 + u, tt, sv[k]);
      }
    }
  }
  // This slot's values, as floats, through f (the rescue's walks).
  auto each_in = [&](int s, auto f) __attribute__((always_inline)) {
    A v[VEC];
    unpack_chunk<T, VEC, A>(c0[s], v);
#pragma unroll
    for (int i = 0; i < VEC; ++i) f((float)v[i]);
    unpack_chunk<T, VEC, A>(c1[s], v);
#pragma unroll
    for (int i = 0; i < VEC; ++i) f((float)v[i]);
  };
  A sq[S];
#pragma unroll
  for (int s = 0; s < S; ++s) {
    sq[s] = (A)0;
    if (held(s)) {
      A v[VEC];
      unpack_chunk<T, VEC, A>(c0[s], v);
#pragma unroll
      for (int i = 0; i < VEC; ++i) sq[s] += v[i] * v[i];
      unpack_chunk<T, VEC, A>(c1[s], v);
#pragma unroll
      for (int i = 0; i < VEC; ++i) sq[s] += v[i] * v[i];
    }
  }

  // The scale of each slot's norm: per head (a team's j-th head), or the row's.
  A scale[S];
  if (per_head) {
    const GroupTeam g{lane, lph};
#pragma unroll
    for (int j = 0; j < HPT; ++j) {
      if (j < hpt) { // uniform: every lane of the block takes the same heads count
        A ss = (A)0;
#pragma unroll
        for (int s = 0; s < S; ++s)
          if (s / upl == j) ss += sq[s];
        ss = g.sum(ss, 0);
        const bool mine = valid && team < teams && team + j * teams < heads;
        const A sc = rope_scale<A>(ss, d, a.eps, clamp, mine, g, [&](auto f) __attribute__((always_inline)) {
#pragma unroll
          for (int s = 0; s < S; ++s)
            if (s / upl == j && held(s)) each_in(s, f);
        });
#pragma unroll
        for (int s = 0; s < S; ++s)
          if (s / upl == j) scale[s] = sc;
      }
    }
  } else {
    // One row a block (the host's rule): the block's warps share it.
    if (a.rows_per_block != 1) __builtin_trap();
    const RowTeams rt{tid, (int)(norm_ntid() / NORM_WARP), red, redd};
    A ss = (A)0;
#pragma unroll
    for (int s = 0; s < S; ++s) ss += sq[s];
    ss = rt.sum(ss, 0);
    // Every thread of the block, padding included, holds the row's sum and so decides the
    // rescue alike: the rescue's barriers are met by all.
    const A sc = rope_scale<A>(ss, (long long)heads * d, a.eps, clamp, true, rt, [&](auto f) __attribute__((always_inline)) {
#pragma unroll
      for (int s = 0; s < S; ++s)
        if (held(s)) each_in(s, f);
    });
#pragma unroll
    for (int s = 0; s < S; ++s) scale[s] = sc;
  }

  // Normalise, weigh, round, rotate, store.
#pragma unroll
  for (int s = 0; s < S; ++s) {
    if (!held(s)) continue;
    int e0, e1;
    starts(s, &e0, &e1);
    const int h = head_of(s), k = VEC > 1 ? 0 : s % upl;
    const int wofs = per_head ? h * d : 0; // the weight index is e - wofs
    A v[2 * VEC];
    unpack_chunk<T, VEC, A>(c0[s], v);
    unpack_chunk<T, VEC, A>(c1[s], v + VEC);
    if constexpr (WT && VEC > 1) {
      // Weights of T (always given: rope_entry), raw: each pair of values rounded, times its
      // pair of weights, rounded (a weight's chunks are laid out as x's).
      const Chunk<T, VEC> wc[2] = {load_chunk<T, VEC>(aligned<16>(w + (e0 - wofs))),
                                   load_chunk<T, VEC>(aligned<16>(w + (e1 - wofs)))};
#pragma unroll
      for (int i = 0; i < 2 * VEC; i += 2) {
        A n0 = v[i] * scale[s], n1 = v[i + 1] * scale[s];
        Tr<T>::round_mul2(n0, n1, wc[i / VEC].raw[0].w[(i % VEC) / 2]);
        v[i] = n0;
        v[i + 1] = n1;
      }
    } else {
      A wv[2 * VEC];
      load_weight<W, VEC, A>(w ? aligned<VEC * sizeof(W)>(w + (e0 - wofs)) : nullptr, off1, wv);
      load_weight<W, VEC, A>(w ? aligned<VEC * sizeof(W)>(w + (e1 - wofs)) : nullptr, off1, wv + VEC);
#pragma unroll
      for (int i = 0; i < 2 * VEC; i += 2) {
        A n0 = v[i] * scale[s], n1 = v[i + 1] * scale[s];
        if (rb) Tr<T>::round2(n0, n1);
        v[i] = n0 * wv[i];
        v[i + 1] = n1 * wv[i + 1];
        Tr<T>::round2(v[i], v[i + 1]);
      }
    }
    if (half) rotate<A, VEC, true>(v, c[k], sv[k]);
    else rotate<A, VEC, false>(v, c[k], sv[k]);
    store_unit<T, VEC>(out + h * out_h + (e0 - h * d), v);
    store_unit<T, VEC>(out + h * out_h + (e1 - h * d), v + VEC);
  }
}

// The two plans the host makes (src/gpu/rope_plan.rs): 16-byte chunks, one unit a lane per head
// (lanes_per_head covering a head), or single values, four units a lane per head; WT: weights
// of T (ROPE_WEIGHT_IN_T), which the host passes only with the rounding before the weight, plain
// weights and a weight for every tensor. One body a kernel: two bodies in one kernel overflowed
// the scalar registers of gfx90a.
template <typename T, int VEC, int UPL, bool WT> NORM_DEV void rope_entry(const RopeArgs& a) {
  __shared__ __attribute__((aligned(16))) float red[ROPE_MAX_WARPS];
  __shared__ double redd[ROPE_MAX_WARPS];
  if (a.units_per_lane != UPL || (VEC > 1 && !rope_vector_holds<T>(a))) __builtin_trap();
  const bool wt = (a.flags & ROPE_WEIGHT_IN_T) != 0;
  if (wt != WT) __builtin_trap();
  if (WT && ((a.flags & (ROPE_ROUND_BEFORE_WEIGHT | ROPE_OFFSET_ONE)) != ROPE_ROUND_BEFORE_WEIGHT ||
             !a.w[0] || (a.tensors == 2 && !a.w[1])))
    __builtin_trap();
  rope_rows<T, VEC, UPL, WT>(a, red, redd);
}

} // namespace rn

// BOUNDS: the chunk kernel's launch bounds (NORM_LAUNCH_BOUNDS_ROPE[_64], hip/portable.h);
// WT: weights of T (rms_norm_rope_{dtype}_wt[_scalar], the 16-bit types).
#define ROPE_KERNELS_W(TAG, T, BOUNDS, WT)                                                         \
  extern "C" __global__ BOUNDS void rms_norm_rope_##TAG(RopeArgs a) {                              \
    rn::rope_entry<T, rn::Tr<T>::V, 1, WT>(a);                                                     \
  }                                                                                                \
  extern "C" __global__ NORM_LAUNCH_BOUNDS_ROPE void rms_norm_rope_##TAG##_scalar(RopeArgs a) {    \
    rn::rope_entry<T, 1, 4, WT>(a);                                                                \
  }
#define ROPE_KERNELS(TAG, T, BOUNDS) ROPE_KERNELS_W(TAG, T, BOUNDS, false)
#define ROPE_WT_KERNELS(TAG, T, BOUNDS) ROPE_KERNELS_W(TAG##_wt, T, BOUNDS, true)
