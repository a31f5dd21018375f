// q/k RMSNorm + rotary embedding, written straight into the attention layout
// (rms_norm_rope_{dtype}; the host side is src/gpu/rope_plan.rs and crate::rope_op).
//
// A row is one position (t, b, l) of q or k: heads * D values. Its values are read once into
// registers as units: a unit is the two chunks a rotation pairs (rope_i: 2*VEC consecutive
// values, VEC pairs; rope: VEC values at offset o of a head and VEC at o + D/2). A team of
// lanes_per_head lanes (a power of two within a warp) takes heads team, team + teams, ... of the
// row, each lane units lane, lane + lanes_per_head, ... of each; a thread holds at most
// RopeSlots units. The norm's sum of squares is reduced across the team by shuffles (a norm per
// head), or, for a norm over the row, across its teams through shared memory (one row a block).
// Each value is then normalised (an f32 norm that overflows or underflows redone with an f64
// sum), multiplied by the weight (in the compute type), rounded to T as the unfused path stores
// it, rotated in the compute type with that position's cos/sin, rounded once and stored at its
// place in the output layout.
#pragma once

#include "row.h"
#include "team.h"
#include "rope_args.h"

namespace rn {

// Units a thread holds: 4 for 16-byte chunks (128 bytes of bf16), 8 for single values.
template <int VEC> struct RopeSlots {
  static constexpr int value = VEC == 1 ? 8 : 2;
};

// A row's teams reducing one norm over the whole row (one row a block): shuffles within each
// team, then the teams' sums through shared memory in team order (the same bits in every
// thread). Threads past the row's teams join the barriers only.
struct RowTeams {
  int lane, lph, team, teams;
  float* red;   // [ROPE_MAX_TEAMS]: the f32 sum
  double* redd; // [ROPE_MAX_TEAMS]: an f64 sum (the f64 kernel's, or the rescue's)
  template <typename A, typename Op> NORM_DEV A reduce(A v, int slot, Op op) const {
    for (int m = lph / 2; m >= 1; m >>= 1) v = op(v, norm_shfl_xor(v, m));
    if (teams == 1) return v;
    A* r;
    if constexpr (same_type<A, double>::value) r = redd; else r = red;
    (void)slot;
    if (lane == 0 && team < teams) r[team] = v;
    norm_barrier();
    A s = r[0];
    for (int i = 1; i < teams; ++i) s = op(s, r[i]);
    return s;
  }
  template <typename A> NORM_DEV A sum(A v, int slot) const {
    return reduce(v, slot, [](A x, A y) { return norm_add(x, y); });
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

// VEC values of the compute type A (the cos or sin of VEC consecutive pairs).
template <typename A, int VEC> NORM_DEV void load_angles(const A* p, A* v) {
  unpack_weight<A, VEC, A>(load_chunk<A, VEC>(p), true, false, v);
}

// One thread's place in a launch (the host's plan, src/gpu/rope_plan.rs), the same for every row
// it takes: its row within the block (`local`), team and lane; slot s holds head
// team + (s / UPL) * teams, unit lane + (s % UPL) * lph of it.
template <int VEC, int UPL> struct RopeGeom {
  static constexpr int S = RopeSlots<VEC>::value, HPT = S / UPL;
  bool per_head, half, rb, off1, clamp;
  int lph, teams, heads, d, uph, hpt, tid, local, team, lane;
  long long out_h;

  NORM_DEV explicit RopeGeom(const RopeArgs& a) {
    per_head = (a.flags & ROPE_PER_HEAD) != 0;
    half = (a.flags & ROPE_HALF_SPLIT) != 0;
    rb = (a.flags & ROPE_ROUND_BEFORE_WEIGHT) != 0;
    off1 = (a.flags & ROPE_OFFSET_ONE) != 0;
    clamp = (a.flags & ROPE_CLAMP_NORM) != 0;
    lph = (int)a.lanes_per_head;
    teams = (int)a.teams;
    heads = (int)a.heads;
    d = (int)a.head_dim;
    out_h = a.out_h;
    // Uniform sizes kept in per-lane registers on AMD (its scalar registers overflowed).
    norm_to_lanes(lph);
    norm_to_lanes(teams);
    norm_to_lanes(heads);
    norm_to_lanes(d);
    norm_to_lanes(out_h);
    uph = d / (2 * VEC);
    hpt = (heads + teams - 1) / teams; // <= HPT (the host's rule)
    const int tpr = teams * lph;
    tid = (int)norm_tid();
    local = tid / tpr;
    team = tid % tpr / lph;
    lane = tid % lph;
  }
  NORM_DEV int head_of(int s) const { return team + s / UPL * teams; }
  NORM_DEV int unit_of(int s) const { return lane + s % UPL * lph; }
  // Whether slot s is a unit of the row (the row itself valid).
  NORM_DEV bool holds(int s) const { return team < teams && head_of(s) < heads && unit_of(s) < uph; }
  // Where slot s's two chunks start in the row.
  NORM_DEV void starts(int s, int* e0, int* e1) const {
    const int h = head_of(s), u = unit_of(s);
    *e0 = h * d + (half ? u * VEC : 2 * u * VEC);
    *e1 = *e0 + (half ? d / 2 : VEC);
  }
};

// Row `row` of the launch (rows (t, b, l) in that order over the tensors): its operands. A row
// past the end (valid false) points at row 0.
template <typename T> struct RopeRow {
  using A = typename Tr<T>::A;
  const T* __restrict__ x;
  const A* __restrict__ w; // weights come in the compute type (the host converts them)
  T* __restrict__ out;
  const A* __restrict__ cs; // this position's cos, sin: [head_dim / 2]
  const A* __restrict__ sn;
  long long row;
  bool valid;

  NORM_DEV RopeRow(const RopeArgs& a, long long r, bool ok) {
    valid = ok;
    row = ok ? r : 0;
    const long long plane = a.batch * a.seq;
    const int t = (int)(row / plane);
    const long long bl = row - t * plane, b = bl / a.seq, l = bl % a.seq;
    // Tensor t's operands by arithmetic, neither indexed nor selected: ptxas turned both into a
    // copy of the argument's arrays on the stack.
    auto pick = [&](norm_u64 v0, norm_u64 v1) __attribute__((always_inline)) {
      return v0 + (norm_u64)t * (v1 - v0);
    };
    const long long xb = (long long)pick((norm_u64)a.x_b[0], (norm_u64)a.x_b[1]);
    const long long xl = (long long)pick((norm_u64)a.x_l[0], (norm_u64)a.x_l[1]);
    x = (const T*)pick((norm_u64)a.x[0], (norm_u64)a.x[1]) + b * xb + l * xl;
    w = (const A*)pick((norm_u64)a.w[0], (norm_u64)a.w[1]);
    out = (T*)a.out + t * a.out_t + b * a.out_b + l * a.out_l;
    cs = (const A*)a.cos + l * (a.head_dim / 2);
    sn = (const A*)a.sin + l * (a.head_dim / 2);
  }
};

// The norm + rotation of one row whose units this thread holds in c0/c1 (chunks of the held
// slots; the others unused): sums of squares, the scale of each slot's norm (per head across the
// team, or the row's across its teams: one row a block), then each unit normalised, weighed,
// rounded, rotated with the row's cos/sin (r.cs, r.sn: global or shared memory) and stored.
// Every thread of the block calls it (the row reduction's barriers).
template <typename T, int VEC, int UPL>
NORM_DEV void rope_row(const RopeArgs& a, const RopeGeom<VEC, UPL>& g, const RopeRow<T>& r,
                       const Chunk<T, VEC>* c0, const Chunk<T, VEC>* c1, float* red,
                       double* redd) {
  using A = typename Tr<T>::A;
  constexpr int S = RopeGeom<VEC, UPL>::S, HPT = RopeGeom<VEC, UPL>::HPT;
  auto held = [&](int s) __attribute__((always_inline)) { return r.valid && g.holds(s); };
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
  if (g.per_head) {
    const GroupTeam gt{g.lane, g.lph};
#pragma unroll
    for (int j = 0; j < HPT; ++j) {
      if (j < g.hpt) { // uniform: every lane of the block takes the same heads count
        A ss = (A)0;
#pragma unroll
        for (int s = 0; s < S; ++s)
          if (s / UPL == j) ss += sq[s];
        ss = gt.sum(ss, 0);
        const bool mine = r.valid && g.team < g.teams && g.team + j * g.teams < g.heads;
        const A sc = rope_scale<A>(ss, g.d, a.eps, g.clamp, mine, gt, [&](auto f) __attribute__((always_inline)) {
#pragma unroll
          for (int s = 0; s < S; ++s)
            if (s / UPL == j && held(s)) each_in(s, f);
        });
#pragma unroll
        for (int s = 0; s < S; ++s)
          if (s / UPL == j) scale[s] = sc;
      }
    }
  } else {
    // One row a block (the host's rule): threads past its teams have tid / lph >= teams.
    if (a.rows_per_block != 1) __builtin_trap();
    const RowTeams rt{g.lane, g.lph, g.tid / g.lph, g.teams, red, redd};
    A ss = (A)0;
#pragma unroll
    for (int s = 0; s < S; ++s) ss += sq[s];
    ss = rt.sum(ss, 0);
    // Every thread of the block, padding included, holds the row's sum and so decides the
    // rescue alike: the rescue's barriers are met by all.
    const A sc = rope_scale<A>(ss, (long long)g.heads * g.d, a.eps, g.clamp, true, rt, [&](auto f) __attribute__((always_inline)) {
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
    g.starts(s, &e0, &e1);
    const int h = g.head_of(s), u = g.unit_of(s);
    const int wofs = g.per_head ? h * g.d : 0; // the weight index is e - wofs
    A v[2 * VEC], wv[2 * VEC], c[VEC], sv[VEC];
    unpack_chunk<T, VEC, A>(c0[s], v);
    unpack_chunk<T, VEC, A>(c1[s], v + VEC);
    load_weight<A, VEC, A>(r.w ? r.w + (e0 - wofs) : nullptr, g.off1, wv);
    load_weight<A, VEC, A>(r.w ? r.w + (e1 - wofs) : nullptr, g.off1, wv + VEC);
    load_angles<A, VEC>(r.cs + u * VEC, c);
    load_angles<A, VEC>(r.sn + u * VEC, sv);
#pragma unroll
    for (int i = 0; i < 2 * VEC; ++i) {
      A n = v[i] * scale[s];
      if (g.rb) n = Tr<T>::round(n);
      v[i] = Tr<T>::round(n * wv[i]);
    }
    A o[2 * VEC];
#pragma unroll
    for (int p = 0; p < VEC; ++p) {
      // Pair p of the unit: its two values' places in v (and o).
      const int ia = g.half ? p : 2 * p, ib = g.half ? p + VEC : 2 * p + 1;
      o[ia] = v[ia] * c[p] - v[ib] * sv[p];
      o[ib] = v[ia] * sv[p] + v[ib] * c[p];
    }
    store_chunk<T, VEC>(r.out + h * g.out_h + (e0 - h * g.d), o);
    store_chunk<T, VEC>(r.out + h * g.out_h + (e1 - h * g.d), o + VEC);
  }
}

// The register kernels: a block takes rows_per_block rows of one tensor side by side, each
// thread's units read straight into registers.
template <typename T, int VEC, int UPL>
NORM_DEV void rope_rows(const RopeArgs& a, float* red, double* redd) {
  constexpr int S = RopeGeom<VEC, UPL>::S;
  const RopeGeom<VEC, UPL> g(a);
  // Blocks take rows of one tensor: t is uniform across the block.
  const long long plane = a.batch * a.seq;
  const long long per_t = (plane + a.rows_per_block - 1) / a.rows_per_block; // blocks a tensor
  const long long t = (long long)norm_bid() / per_t;
  const long long bl = ((long long)norm_bid() - t * per_t) * a.rows_per_block + g.local;
  const RopeRow<T> r(a, t * plane + bl, g.local < (int)a.rows_per_block && bl < plane);
  Chunk<T, VEC> c0[S], c1[S];
#pragma unroll
  for (int s = 0; s < S; ++s) {
    if (r.valid && g.holds(s)) {
      int e0, e1;
      g.starts(s, &e0, &e1);
      c0[s] = load_chunk<T, VEC>(r.x + e0);
      c1[s] = load_chunk<T, VEC>(r.x + e1);
    }
  }
  rope_row<T, VEC, UPL>(a, g, r, c0, c1, red, redd);
}

#if NORM_ASYNC
// The staged kernels (16-byte chunks; where copies are asynchronous): a block takes `share`
// groups of rows_per_block rows in turn (rows over the tensors in order), ROPE_STAGES row
// buffers a row of the group in dynamic shared memory, the copies of the next ROPE_STAGES - 1
// groups in flight while one is normalised and written, so the bytes in flight cost shared
// memory, not registers. A stage holds each row's values ([rows_per_block][heads * head_dim] of
// T, each lane copying the chunks it later reads) and its position's cos and sin
// ([rows_per_block][2][head_dim / 2] of the compute type, copied by the row's team 0, read by
// all its teams). One barrier a group, after its copies have landed: it makes the angles
// visible to every thread and frees the buffer of the group before, which the copies issued
// next refill. The host sizes the shared memory (src/gpu/rope_plan.rs).
template <typename T>
NORM_DEV void rope_staged(const RopeArgs& a, float* red, double* redd) {
  using A = typename Tr<T>::A;
  constexpr int VEC = Tr<T>::V, S = RopeGeom<VEC, 1>::S, ST = ROPE_STAGES;
  const RopeGeom<VEC, 1> g(a);
  const int rpb = (int)a.rows_per_block;
  const long long row_elems = (long long)g.heads * g.d, rows = (long long)a.tensors * a.batch * a.seq;
  T* xbuf = (T*)norm_dyn_smem();                  // [ST][rpb][row_elems]
  A* abuf = (A*)(xbuf + (long long)ST * rpb * row_elems); // [ST][rpb][2][d / 2]
  const bool mine = g.local < rpb;
  auto row_of = [&](long long i) __attribute__((always_inline)) {
    return ((long long)norm_bid() * a.share + i) * rpb + g.local;
  };
  auto valid_at = [&](long long i) __attribute__((always_inline)) {
    return mine && i < a.share && row_of(i) < rows;
  };
  auto xs = [&](long long i) __attribute__((always_inline)) {
    return xbuf + ((i % ST) * rpb + g.local) * row_elems;
  };
  auto angles = [&](long long i) __attribute__((always_inline)) {
    return abuf + ((i % ST) * rpb + g.local) * g.d;
  };
  // Group i's copies: this lane's chunks of its row, and (team 0) the row's angles; one commit.
  auto issue = [&](long long i) __attribute__((always_inline)) {
    if (valid_at(i)) {
      const RopeRow<T> r(a, row_of(i), true);
      T* dst = xs(i);
#pragma unroll
      for (int s = 0; s < S; ++s) {
        if (g.holds(s)) {
          int e0, e1;
          g.starts(s, &e0, &e1);
          norm_async_copy16(dst + e0, r.x + e0);
          norm_async_copy16(dst + e1, r.x + e1);
        }
      }
      if (g.team == 0 && g.lane < g.uph) {
        constexpr int W16 = VEC * (int)sizeof(A) / 16; // 16-byte words of VEC angles
        A* ad = angles(i);
#pragma unroll
        for (int k = 0; k < W16; ++k) {
          const int e = g.lane * VEC + k * (16 / (int)sizeof(A));
          norm_async_copy16(ad + e, r.cs + e);
          norm_async_copy16(ad + g.d / 2 + e, r.sn + e);
        }
      }
    }
    norm_async_commit();
  };
  for (int i = 0; i < ST - 1; ++i) issue(i);
#pragma unroll 1
  for (long long i = 0; i < a.share; ++i) {
    norm_async_wait<ST - 2>(); // group i landed (this thread's copies)
    norm_barrier();            // everyone's: the angles; and group i - 1's buffers are free
    issue(i + ST - 1);
    RopeRow<T> r(a, row_of(i), valid_at(i));
    const T* x = xs(i);
    r.cs = angles(i);
    r.sn = r.cs + g.d / 2;
    Chunk<T, VEC> c0[S], c1[S];
#pragma unroll
    for (int s = 0; s < S; ++s) {
      if (r.valid && g.holds(s)) {
        int e0, e1;
        g.starts(s, &e0, &e1);
        c0[s] = load_chunk<T, VEC>(x + e0);
        c1[s] = load_chunk<T, VEC>(x + e1);
      }
    }
    rope_row<T, VEC, 1>(a, g, r, c0, c1, red, redd);
  }
  norm_async_wait<0>(); // nothing left in flight when the block ends
}
#endif

// The two plans the host makes (src/gpu/rope_plan.rs): 16-byte chunks, one unit a lane per head
// (lanes_per_head covering a head), or single values, four units a lane per head. One body a
// kernel: two bodies in one kernel overflowed the scalar registers of gfx90a.
template <typename T, int VEC, int UPL> NORM_DEV void rope_entry(const RopeArgs& a) {
  __shared__ float red[ROPE_MAX_TEAMS];
  __shared__ double redd[ROPE_MAX_TEAMS];
  if (a.units_per_lane != UPL || (VEC > 1 && !rope_vector_holds<T>(a))) __builtin_trap();
  rope_rows<T, VEC, UPL>(a, red, redd);
}

#if NORM_ASYNC
template <typename T> NORM_DEV void rope_staged_entry(const RopeArgs& a) {
  __shared__ float red[ROPE_MAX_TEAMS];
  __shared__ double redd[ROPE_MAX_TEAMS];
  if (a.units_per_lane != 1 || !rope_vector_holds<T>(a)) __builtin_trap();
  rope_staged<T>(a, red, redd);
}
#endif

} // namespace rn

#define ROPE_KERNELS(TAG, T)                                                                       \
  extern "C" __global__ NORM_LAUNCH_BOUNDS_ROPE void rms_norm_rope_##TAG(RopeArgs a) {             \
    rn::rope_entry<T, rn::Tr<T>::V, 1>(a);                                                         \
  }                                                                                                \
  extern "C" __global__ NORM_LAUNCH_BOUNDS_ROPE void rms_norm_rope_##TAG##_scalar(RopeArgs a) {    \
    rn::rope_entry<T, 1, 4>(a);                                                                    \
  }                                                                                                \
  ROPE_STAGED_KERNEL(TAG, T)

// Where copies are asynchronous (NORM_ASYNC): rms_norm_rope_{dtype}_staged as well.
#if NORM_ASYNC
#define ROPE_STAGED_KERNEL(TAG, T)                                                                 \
  extern "C" __global__ NORM_LAUNCH_BOUNDS_ROPE void rms_norm_rope_##TAG##_staged(RopeArgs a) {    \
    rn::rope_staged_entry<T>(a);                                                                   \
  }
#else
#define ROPE_STAGED_KERNEL(TAG, T)
#endif
