// The one kernel parameter of the q/k norm + rotary embedding kernels (rms_norm_rope_{dtype},
// hip/norm_rope.h), passed by value. Mirrors `RopeArgs` in src/gpu/abi.rs field for field; both
// sides assert the size. The geometry (ROPE_VECTOR, rows_per_block, lanes_per_head, teams,
// units_per_lane) is decided by the host (src/gpu/rope_plan.rs) and followed here.
#pragma once

// Bits of RopeArgs::flags.
#define ROPE_VECTOR 1u              // every address and stride allows 16-byte chunks
#define ROPE_HALF_SPLIT 2u          // pairs (i, i + D/2) (rope); else (2i, 2i + 1) (rope_i)
#define ROPE_PER_HEAD 4u            // a norm per head (weight [D]); else per row (weight [H*D])
#define ROPE_ROUND_BEFORE_WEIGHT 8u // x * scale rounded to T before the weight
#define ROPE_OFFSET_ONE 16u         // y = n * (1 + w)
#define ROPE_CLAMP_NORM 32u         // scale = sqrt(n) / max(sqrt(ss), eps) (eps = eps^2 / n)
#define ROPE_WEIGHT_IN_T 64u        // weights of the input type (the _wt kernels); else of the
                                    // compute type
#define ROPE_TABLES_IN_T 128u       // cos/sin of the input type (bf16/f16 input only); else of
                                    // the compute type

struct RopeArgs {
  void* out;          // element (t, b, l, h, e) at t*out_t + b*out_b + l*out_l + h*out_h + e
  const void* x[2];   // q, k: element (b, l, c) at b*x_b[t] + l*x_l[t] + c, c < heads*head_dim
  const void* w[2];   // their weights, of the compute type or with ROPE_WEIGHT_IN_T of the
                      // input's ([heads*head_dim], or [head_dim] with ROPE_PER_HEAD), or null
  const void* cos;    // [seq][head_dim / 2] of the compute type (f32; f64 for f64), or with
                      // ROPE_TABLES_IN_T of the input's
  const void* sin;
  long long x_b[2];
  long long x_l[2];
  long long out_t;
  long long out_b;
  long long out_l;
  long long out_h;
  long long batch;
  long long seq;
  double eps;                  // with ROPE_CLAMP_NORM: eps^2 / n
  unsigned int flags;          // ROPE_* bits
  unsigned int heads;
  unsigned int head_dim;       // even
  unsigned int tensors;        // 1 or 2: rows are (t, b, l) for t < tensors
  unsigned int rows_per_block; // rows a block handles, side by side (1 without ROPE_PER_HEAD)
  unsigned int lanes_per_head; // a power of two <= warp size
  unsigned int teams;          // teams of lanes_per_head lanes a row; a team takes heads
                               // team, team + teams, ...
  unsigned int units_per_lane; // units (pairs of chunks) a lane holds per head: 1 (_scalar: 4)
  long long reserved[2];       // 0: the size of NormArgs (one argument buffer serves both)
};

static_assert(sizeof(RopeArgs) == 192, "RopeArgs must match src/gpu/abi.rs");
