// The one kernel parameter of every exported kernel, passed by value.
// Mirrors `NormArgs` in src/gpu/abi.rs field for field; both sides assert the size.
#pragma once

// Bits of NormArgs::flags.
#define NORM_OFFSET_ONE 1u          // y = n * (1 + w)  (Gemma)
#define NORM_ROUND_BEFORE_WEIGHT 2u // n rounded to the input dtype before the weight multiply

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
  unsigned int flags;        // NORM_* bits
  unsigned int rows_per_block; // rows one block handles in all (src/launch.rs Plan); 0 means 1
};

static_assert(sizeof(NormArgs) == 104, "NormArgs must match src/gpu/abi.rs");
