// The one kernel parameter of every exported kernel, passed by value.
// Mirrors `NormArgs` in src/gpu/abi.rs field for field; both sides assert the size.
// The launch geometry (NORM_VECTOR, rows_per_block, lanes_per_row, chunks_per_lane) is decided
// by the host (src/gpu/geometry.rs) and followed here, never re-derived.
#pragma once

// Bits of NormArgs::flags.
#define NORM_OFFSET_ONE 1u          // y = n * (1 + w)  (Gemma)
#define NORM_ROUND_BEFORE_WEIGHT 2u // n rounded to the input dtype before the weight multiply
#define NORM_VECTOR 4u              // every row start, stride and the weight allow 16-byte chunks
#define NORM_CLAMP_NORM 8u          // scale = sqrt(n) / max(sqrt(ss), eps) (EpsMode::ClampNorm)
#define NORM_QUANT_I8 16u           // _quant kernels: the values are i8 (else fp8 e4m3)
#define NORM_QUANT_STATIC 32u       // _quant kernels: every row's scale is quant_scale
// Bits 8..10: S, the row buffers of the staged loop (hip/norm_staged.h; 0: not staged; the
// staged kernels take S = 2). The host sets it only with NORM_VECTOR, hidden a whole number of
// chunks, and min(S, rows_per_block) row buffers (two per row for the fused op) of dynamic shared
// memory at launch.
#define NORM_STAGES_SHIFT 8u
#define NORM_STAGES_MASK 7u

struct NormArgs {
  void* out;                 // [rows, hidden] of T, row stride out_stride
  void* sum_out;             // fused only: [rows, hidden] of T, x + residual rounded to T
  const void* x;             // [rows, hidden] of T, row stride x_stride
  const void* residual;      // fused only: [rows, hidden] of T, row stride res_stride
  const void* weight;        // [hidden] of W, or null for no weight
  long long out_stride;      // elements between row starts
  long long sum_stride;
  long long x_stride;
  long long res_stride;
  long long rows;
  long long hidden;
  double eps;
  unsigned int flags;           // NORM_* bits
  unsigned int rows_per_block;  // rows one block handles in all; 0 means 1
  unsigned int lanes_per_row;   // _rows kernels: lanes of a team (a power of two <= warp size)
  unsigned int chunks_per_lane; // chunks a lane holds in registers (1 or 2); 0: two-read loop
  long long var_size;           // _var and _chan kernels: the mean of squares over a row's first
                                // var_size elements (1..hidden); the other kernels use hidden
  // _chan kernels only (hip/norm_channel.h): rows are outer indices and hidden the channels; the
  // *_stride fields above are channel strides.
  long long inner;     // positions per outer index
  long long x_outer;   // elements between outer indices, per operand
  long long res_outer;
  long long out_outer;
  long long sum_outer;
  long long x_inner;   // elements between positions of the inputs (the outputs': 1)
  long long res_inner;
  // _quant kernels only (hip/quant.h): `out` holds the values' bytes (out_stride in bytes).
  void* scales;          // [rows] f32, one scale per row, written
  float quant_scale;     // with NORM_QUANT_STATIC: every row's scale
  unsigned int reserved; // 0
};

static_assert(sizeof(NormArgs) == 192, "NormArgs must match src/gpu/abi.rs");
