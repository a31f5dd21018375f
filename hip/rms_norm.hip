// RMSNorm and fused residual-add + RMSNorm, written once for NVIDIA (PTX) and AMD (HSACO).
//
//   rms_norm:            out = x * rsqrt(mean(x^2) + eps) * w
//   fused_add_rms_norm:  s = x + residual (f32); sum_out = round(s); out = norm(s) * w
//
// Numerics (docs/numerics.md): sums of squares in f32 (f64 for f64 input); the fused op
// normalises the unrounded f32 sum; outputs rounded to nearest even; optional rounding of x * scale to the input
// dtype before the weight (NORM_ROUND_BEFORE_WEIGHT); optional 1 + w (NORM_OFFSET_ONE). A row
// whose f32 sum of squares overflows, or whose mean + eps falls below 1e-30, is rescued: with
// m = max |v|, the sum of (v / m)^2 in f32 and the scale in f64 (see rescue_scale), so huge and
// tiny rows normalise as on the CPU path (which uses f64 sums). NaN reaches only its own row.
//
// Two variants per exported name (four where copies are asynchronous), each one launch over all
// rows, with the geometry the host decided (src/gpu/geometry.rs) in NormArgs:
//   {op}_{dtype}[_wf32]       a block takes `rows_per_block` consecutive rows, one at a time:
//                             a row of up to 2 chunks a thread stays in registers (x and the
//                             residual are read once); the weight is loaded once per block; the
//                             plain op loads the next row before reducing this one. Longer rows
//                             are read twice (the second read mostly hits L2).
//   {op}_{dtype}[_wf32]_staged (NVIDIA sm_80+) one or two rows a block, copied into shared
//                             memory asynchronously (hip/norm_staged.h), the next row's copies
//                             issued before this row is reduced; any length shared memory holds.
//   {op}_{dtype}[_wf32]_rows  teams of g lanes (a power of two <= warp size) one row each,
//                             blockDim / g rows at a time, `rows_per_block` rows in all, reduced
//                             with shuffles only: small hidden (per-head q/k norm, 1..512 bf16).
//   {op}_{dtype}[_wf32]_rows_staged (NVIDIA sm_80+) the same teams, each team's rows staged in
//                             shared memory (hip/norm_staged.h).
//   {op}_{dtype}[_wf32][_rows]_quant, [_rows]_staged_quant: the Block, Rows, Staged and
//                             RowsStaged kernels writing fp8 e4m3 or i8 with a scale per row
//                             (hip/quant.h).
//   {op}_{dtype}[_wf32]_var   the mean of squares over each row's first var_size elements
//                             (NormConfig::with_variance_size): rows as {op}_{dtype}, in
//                             registers or read twice (norm_regs.h, norm_loop.h with VAR);
//                             kept apart so that the option costs the other kernels no register
//                             or instruction.
//   {op}_{dtype}[_wf32]_chan  a norm over another dimension than the last (NormConfig::with_dim),
//                             the tensor read in place as outer x channels x inner
//                             (hip/norm_channel.h).
//   {op}_{dtype}[_wf32]_chan_staged (NVIDIA sm_80+) the same, each block's tile copied whole
//                             into shared memory first (hip/norm_channel_staged.h).
// A chunk is 16 bytes (8 bf16/f16, 4 f32, 2 f64) when the host set NORM_VECTOR (every row start
// and the weight 16-byte aligned), one element otherwise; a row's last hidden % 8 elements are
// a scalar tail.

#include "portable.h"
#include "norm_args.h"
#include "norm_channel.h"
#include "norm_channel_staged.h"
#include "norm_loop.h"
#include "norm_regs.h"
#include "norm_staged.h"
#include "norm_rope.h"

namespace rn {

// Whether the operands satisfy what NORM_VECTOR promises: every row start and the weight 16-byte
// aligned, every stride a whole number of chunks, a row at least one chunk. The host decides
// (src/gpu/geometry.rs, the same rule); the kernel takes the vector path only when this holds
// too, so a wrong promise cannot make it fault, and the compiler, which sees these facts,
// addresses the rows better (measured on the H200: 95 us against 116 us at 32760x1536 bf16).
template <typename T, typename W, bool FUSED>
NORM_DEV bool vector_holds(const NormArgs& a) {
  constexpr long long V = Tr<T>::V;
  norm_u64 addr = (norm_u64)a.x | (norm_u64)a.out | (norm_u64)a.weight;
  long long strides = a.x_stride | a.out_stride;
  if constexpr (FUSED) {
    addr |= (norm_u64)a.residual | (norm_u64)a.sum_out;
    strides |= a.res_stride | a.sum_stride;
  }
  return (a.flags & NORM_VECTOR) && (addr & 15u) == 0 && (strides % V) == 0 && a.hidden >= V;
}

// The host's choice of chunks per lane: 1 or 2 in registers, or 0 for the two-read loop. The
// team covers the block's `share` rows `first + it * step` (see norm_regs). A plan whose lanes
// could not hold the row would lose elements in registers, so it takes the loop instead (the
// host never plans one: src/gpu/geometry.rs tests that). VAR: the _var kernels (norm_regs).
template <typename T, typename W, int VEC, bool FUSED, typename Team, bool QUANT = false,
          bool VAR = false>
NORM_DEV void dispatch_k(const NormArgs& a, long long first, int local0, int step, int share,
                         const Team& team) {
  const long long n = a.hidden / VEC;
  const int k = (long long)a.chunks_per_lane * team.size >= n ? (int)a.chunks_per_lane : 0;
  // AMD's fused quantised kernels take the loop (rows read three times, the later reads mostly
  // from L2): their register paths spilled scalar registers (clang 19: 2 to 7 on gfx90a, 2 on
  // gfx1201).
  constexpr bool LOOP_ONLY = NORM_AMD && QUANT && FUSED;
  switch (LOOP_ONLY ? 0 : k) {
  case 1: norm_regs<T, W, VEC, FUSED, 1, Team, QUANT, VAR>(a, first, local0, step, share, team); break;
  case 2: norm_regs<T, W, VEC, FUSED, 2, Team, QUANT, VAR>(a, first, local0, step, share, team); break;
  default:
#pragma unroll 1
    for (int it = 0; it < (share + step - 1) / step; ++it) {
      const long long row = first + (long long)it * step;
      norm_loop<T, W, VEC, FUSED, Team, VAR, QUANT>(
          a, row, local0 + it * step < share && row < a.rows, it & 1, team);
    }
    break;
  }
}

// The rows of one-row-per-block kernels: `rows_per_block` consecutive rows a block.
struct BlockRows {
  long long first;
  int share;
};
NORM_DEV BlockRows block_rows(const NormArgs& a) {
  const int rpb = a.rows_per_block > 0 ? (int)a.rows_per_block : 1;
  return {(long long)norm_bid() * rpb, rpb};
}

// One row at a time per block, in registers or read twice (QUANT: the _quant kernels).
template <typename T, typename W, bool FUSED, bool QUANT = false>
NORM_DEV void large_entry(const NormArgs& a) {
  __shared__ __attribute__((aligned(16))) float red[4 * (1024 / NORM_WARP)];
  __shared__ double redd[2 * (1024 / NORM_WARP)];
  const BlockRows b = block_rows(a);
  if (b.first >= a.rows) return; // the whole block: no barrier is skipped by part of it
  const BlockTeam team{(int)norm_tid(), (int)norm_ntid(), red, redd};
  if (vector_holds<T, W, FUSED>(a)) {
    dispatch_k<T, W, Tr<T>::V, FUSED, BlockTeam, QUANT>(a, b.first, 0, 1, b.share, team);
  } else {
    dispatch_k<T, W, 1, FUSED, BlockTeam, QUANT>(a, b.first, 0, 1, b.share, team);
  }
}

// As large_entry, with the mean of squares over each row's first var_size elements: in
// registers where the row fits (the squares past var_size counted as 0), else the two-read loop.
template <typename T, typename W, bool FUSED>
NORM_DEV void var_entry(const NormArgs& a) {
  __shared__ __attribute__((aligned(16))) float red[4 * (1024 / NORM_WARP)];
  __shared__ double redd[2 * (1024 / NORM_WARP)];
  const BlockRows b = block_rows(a);
  if (b.first >= a.rows) return;
  const BlockTeam team{(int)norm_tid(), (int)norm_ntid(), red, redd};
  if (vector_holds<T, W, FUSED>(a)) {
    dispatch_k<T, W, Tr<T>::V, FUSED, BlockTeam, false, true>(a, b.first, 0, 1, b.share, team);
  } else {
    dispatch_k<T, W, 1, FUSED, BlockTeam, false, true>(a, b.first, 0, 1, b.share, team);
  }
}

#if NORM_ASYNC
// What a staged launch promises (src/gpu/geometry.rs): the layout the copies need (NORM_VECTOR
// holding, hidden a whole number of chunks) and S = 2, the one ring the host plans (the next
// row's copies issued before this row is reduced). Anything else is the host's bug: fail it
// loudly.
template <typename T, typename W, bool FUSED>
NORM_DEV void staged_launch_or_trap(const NormArgs& a) {
  if (!vector_holds<T, W, FUSED>(a) || a.hidden % Tr<T>::V != 0) __builtin_trap();
  if (((a.flags >> NORM_STAGES_SHIFT) & NORM_STAGES_MASK) != 2) __builtin_trap();
}

// One or two rows a block, staged in shared memory (hip/norm_staged.h): a kernel of its own, so
// that its few registers, not the register loop's, set how many blocks (and so how many bytes in
// flight) a multiprocessor holds.
template <typename T, typename W, bool FUSED, bool QUANT = false>
NORM_DEV void staged_entry(const NormArgs& a) {
  __shared__ __attribute__((aligned(16))) float red[4 * (1024 / NORM_WARP)];
  __shared__ double redd[2 * (1024 / NORM_WARP)];
  const BlockRows b = block_rows(a);
  if (b.first >= a.rows) return;
  staged_launch_or_trap<T, W, FUSED>(a);
  const BlockTeam team{(int)norm_tid(), (int)norm_ntid(), red, redd};
  norm_staged<T, W, FUSED, 2, BlockTeam, QUANT>(a, b.first, 0, 1, b.share, team);
}

// Teams of g = lanes_per_row lanes, one row each, blockDim / g rows at a time (as rows_entry),
// each team's rows staged in shared memory: its next row's copies issued before this row is
// reduced.
template <typename T, typename W, bool FUSED, bool QUANT = false>
NORM_DEV void rows_staged_entry(const NormArgs& a) {
  const int rpb = a.rows_per_block > 0 ? (int)a.rows_per_block : 1;
  const long long base = (long long)norm_bid() * rpb;
  if (base >= a.rows) return; // the whole block
  staged_launch_or_trap<T, W, FUSED>(a);
  const int tid = (int)norm_tid();
  const int g = a.lanes_per_row > 0 ? (int)a.lanes_per_row : 1;
  const int local0 = tid / g;
  const GroupTeam team{tid & (g - 1), g};
  norm_staged<T, W, FUSED, 2, GroupTeam, QUANT>(a, base + local0, local0, (int)norm_ntid() / g,
                                                rpb, team);
}
#endif

// Teams of g = lanes_per_row lanes (a power of two <= warp size), one row each, blockDim / g
// rows at a time, `rows_per_block` rows in all; coverage of the block's rows is exact for any g.
template <typename T, typename W, bool FUSED, bool QUANT = false>
NORM_DEV void rows_entry(const NormArgs& a) {
  const int nt = (int)norm_ntid();
  const int rpb = a.rows_per_block > 0 ? (int)a.rows_per_block : 1;
  const int tid = (int)norm_tid();
  const bool vec = vector_holds<T, W, FUSED>(a);
  const int g = a.lanes_per_row > 0 ? (int)a.lanes_per_row : 1;
  const int conc = nt / g;
  const long long base = (long long)norm_bid() * rpb;
  const int local0 = tid / g;
  const GroupTeam team{tid & (g - 1), g};
  if (vec) {
    dispatch_k<T, W, Tr<T>::V, FUSED, GroupTeam, QUANT>(a, base + local0, local0, conc, rpb, team);
  } else {
    dispatch_k<T, W, 1, FUSED, GroupTeam, QUANT>(a, base + local0, local0, conc, rpb, team);
  }
}

} // namespace rn

#define NORM_KERNELS(TAG, T, W, FUSED_BOUNDS)                                                      \
  extern "C" __global__ NORM_LAUNCH_BOUNDS void rms_norm_##TAG(NormArgs a) {                       \
    rn::large_entry<T, W, false>(a);                                                               \
  }                                                                                                \
  extern "C" __global__ NORM_LAUNCH_BOUNDS_ROWS void rms_norm_##TAG##_rows(NormArgs a) {           \
    rn::rows_entry<T, W, false>(a);                                                                \
  }                                                                                                \
  extern "C" __global__ FUSED_BOUNDS void fused_add_rms_norm_##TAG(NormArgs a) {                   \
    rn::large_entry<T, W, true>(a);                                                                \
  }                                                                                                \
  extern "C" __global__ NORM_LAUNCH_BOUNDS_ROWS void fused_add_rms_norm_##TAG##_rows(NormArgs a) { \
    rn::rows_entry<T, W, true>(a);                                                                 \
  }                                                                                                \
  extern "C" __global__ FUSED_BOUNDS void rms_norm_##TAG##_var(NormArgs a) {                       \
    rn::var_entry<T, W, false>(a);                                                                 \
  }                                                                                                \
  extern "C" __global__ FUSED_BOUNDS void fused_add_rms_norm_##TAG##_var(NormArgs a) {             \
    rn::var_entry<T, W, true>(a);                                                                  \
  }                                                                                                \
  extern "C" __global__ NORM_LAUNCH_BOUNDS_CHAN void rms_norm_##TAG##_chan(NormArgs a) {           \
    rn::channel_entry<T, W, false>(a);                                                             \
  }                                                                                                \
  extern "C" __global__ NORM_LAUNCH_BOUNDS_CHAN void fused_add_rms_norm_##TAG##_chan(NormArgs a) { \
    rn::channel_entry<T, W, true>(a);                                                              \
  }

// Quantised outputs (hip/quant.h): {op}_{TAG}_quant and {op}_{TAG}_rows_quant, the Block and
// Rows kernels writing fp8 e4m3 or i8 (NORM_QUANT_I8) with a scale per row.
#define NORM_QUANT_KERNELS(TAG, T, W)                                                              \
  extern "C" __global__ NORM_LAUNCH_BOUNDS_QUANT void rms_norm_##TAG##_quant(NormArgs a) {         \
    rn::large_entry<T, W, false, true>(a);                                                         \
  }                                                                                                \
  extern "C" __global__ NORM_LAUNCH_BOUNDS_ROWS_QUANT void rms_norm_##TAG##_rows_quant(            \
      NormArgs a) {                                                                                \
    rn::rows_entry<T, W, false, true>(a);                                                          \
  }                                                                                                \
  extern "C" __global__ NORM_LAUNCH_BOUNDS_QUANT void fused_add_rms_norm_##TAG##_quant(            \
      NormArgs a) {                                                                                \
    rn::large_entry<T, W, true, true>(a);                                                          \
  }                                                                                                \
  extern "C" __global__ NORM_LAUNCH_BOUNDS_ROWS_QUANT void fused_add_rms_norm_##TAG##_rows_quant(  \
      NormArgs a) {                                                                                \
    rn::rows_entry<T, W, true, true>(a);                                                           \
  }

// Where copies are asynchronous (NORM_ASYNC): {op}_{TAG}_staged as well.
#if NORM_ASYNC
#define NORM_STAGED_KERNELS(TAG, T, W)                                                             \
  extern "C" __global__ NORM_LAUNCH_BOUNDS_STAGED void rms_norm_##TAG##_staged(NormArgs a) {       \
    rn::staged_entry<T, W, false>(a);                                                              \
  }                                                                                                \
  extern "C" __global__ NORM_LAUNCH_BOUNDS_STAGED void fused_add_rms_norm_##TAG##_staged(NormArgs a) { \
    rn::staged_entry<T, W, true>(a);                                                               \
  }                                                                                                \
  extern "C" __global__ NORM_LAUNCH_BOUNDS_STAGED void rms_norm_##TAG##_rows_staged(NormArgs a) {  \
    rn::rows_staged_entry<T, W, false>(a);                                                         \
  }                                                                                                \
  extern "C" __global__ NORM_LAUNCH_BOUNDS_STAGED void fused_add_rms_norm_##TAG##_rows_staged(     \
      NormArgs a) {                                                                                \
    rn::rows_staged_entry<T, W, true>(a);                                                          \
  }                                                                                                \
  extern "C" __global__ NORM_LAUNCH_BOUNDS_CHAN_STAGED void rms_norm_##TAG##_chan_staged(NormArgs a) {\
    rn::channel_staged_entry<T, W, false>(a);                                                      \
  }                                                                                                \
  extern "C" __global__ NORM_LAUNCH_BOUNDS_CHAN_STAGED void fused_add_rms_norm_##TAG##_chan_staged(   \
      NormArgs a) {                                                                                \
    rn::channel_staged_entry<T, W, true>(a);                                                       \
  }                                                                                                \
  extern "C" __global__ NORM_LAUNCH_BOUNDS_STAGED void rms_norm_##TAG##_staged_quant(NormArgs a) { \
    rn::staged_entry<T, W, false, true>(a);                                                        \
  }                                                                                                \
  extern "C" __global__ NORM_LAUNCH_BOUNDS_STAGED void fused_add_rms_norm_##TAG##_staged_quant(    \
      NormArgs a) {                                                                                \
    rn::staged_entry<T, W, true, true>(a);                                                         \
  }                                                                                                \
  extern "C" __global__ NORM_LAUNCH_BOUNDS_STAGED void rms_norm_##TAG##_rows_staged_quant(         \
      NormArgs a) {                                                                                \
    rn::rows_staged_entry<T, W, false, true>(a);                                                   \
  }                                                                                                \
  extern "C" __global__ NORM_LAUNCH_BOUNDS_STAGED void fused_add_rms_norm_##TAG##_rows_staged_quant( \
      NormArgs a) {                                                                                \
    rn::rows_staged_entry<T, W, true, true>(a);                                                    \
  }
#else
#define NORM_STAGED_KERNELS(TAG, T, W)
#endif

NORM_KERNELS(f32, float, float, NORM_LAUNCH_BOUNDS)
NORM_STAGED_KERNELS(f32, float, float)
NORM_QUANT_KERNELS(f32, float, float)
NORM_KERNELS(f64, double, double, NORM_LAUNCH_BOUNDS)
NORM_STAGED_KERNELS(f64, double, double)
NORM_QUANT_KERNELS(f64, double, double)
NORM_KERNELS(f16, norm_f16, norm_f16, NORM_LAUNCH_BOUNDS)
NORM_STAGED_KERNELS(f16, norm_f16, norm_f16)
NORM_QUANT_KERNELS(f16, norm_f16, norm_f16)
NORM_KERNELS(f16_wf32, norm_f16, float, NORM_LAUNCH_BOUNDS_WIDE)
NORM_STAGED_KERNELS(f16_wf32, norm_f16, float)
NORM_QUANT_KERNELS(f16_wf32, norm_f16, float)
NORM_KERNELS(bf16, norm_bf16, norm_bf16, NORM_LAUNCH_BOUNDS)
NORM_STAGED_KERNELS(bf16, norm_bf16, norm_bf16)
NORM_QUANT_KERNELS(bf16, norm_bf16, norm_bf16)
NORM_KERNELS(bf16_wf32, norm_bf16, float, NORM_LAUNCH_BOUNDS_WIDE)
NORM_STAGED_KERNELS(bf16_wf32, norm_bf16, float)
NORM_QUANT_KERNELS(bf16_wf32, norm_bf16, float)

// q/k RMSNorm + rotary embedding into attention layout (hip/norm_rope.h): rms_norm_rope_{dtype}
// (16-byte chunks) and rms_norm_rope_{dtype}_scalar; for the 16-bit types also with weights of
// the input type, rms_norm_rope_{dtype}_wt[_scalar].
ROPE_KERNELS(f32, float, NORM_LAUNCH_BOUNDS_ROPE_64)
ROPE_KERNELS(f64, double, NORM_LAUNCH_BOUNDS_ROPE_64)
ROPE_KERNELS(f16, norm_f16, NORM_LAUNCH_BOUNDS_ROPE)
ROPE_KERNELS(bf16, norm_bf16, NORM_LAUNCH_BOUNDS_ROPE_64)
ROPE_WT_KERNELS(f16, norm_f16, NORM_LAUNCH_BOUNDS_ROPE_64)
ROPE_WT_KERNELS(bf16, norm_bf16, NORM_LAUNCH_BOUNDS_ROPE_64)
